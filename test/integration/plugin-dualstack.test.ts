// The real tsflannel binary on node netns with a dual-stack and an IPv6-only
// subnet file (hand-written as flanneld writes them): both families on cni0
// and in the pod, checked with `ip -6` and ping6; CHECK, DEL and GC for both
// families; requested IPs; and a store shared with the reference host-local
// in both directions, IPv6 lease names included. The pod suites run on the
// standalone plugin and on the agent-served path (one handler behind both).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { callPlugin, DUAL_ENV, isLeaseFile, PLUGIN_BIN, V6_ONLY_ENV, type CniCall, type CniOutcome } from '../helpers/plugin.js';
import { buildCnitool, runCnitool, type CnitoolOptions } from '../helpers/cnitool.js';
import { forwarderBuilt, startCniAgent, STANDALONE, VIA_AGENT, type CniPath, type RunningAgent } from '../helpers/cni-agent.js';
import { haveRefPlugins, refPlugin } from '../helpers/reference.js';

interface ResultIp {
  address: string;
  gateway?: string;
  interface?: number;
  version?: string;
}
const ipsOf = (out: CniOutcome) => (out.json?.ips ?? []) as ResultIp[];
const bare = (cidr: string) => cidr.split('/')[0]!;

/** One node netns with its subnet file, store and (on the agent path) agent. */
interface Node {
  ns: string;
  dir: string;
  subnetFile: string;
  dataDir: string;
  agentSocket: string;
  agent?: RunningAgent;
}

async function makeNode(label: string, subnetEnv: string, path: CniPath): Promise<Node> {
  const ns = addNetns(label);
  const dir = mkdtempSync(join(tmpdir(), `tsf-ds-${label}-`));
  const node: Node = { ns, dir, subnetFile: join(dir, 'subnet.env'), dataDir: join(dir, 'networks'), agentSocket: join(dir, 'run', 'cni.sock') };
  writeFileSync(node.subnetFile, subnetEnv);
  if (path.agent) node.agent = await startCniAgent({ socket: node.agentSocket, nodeNs: ns });
  return node;
}

async function dropNode(node: Node | undefined): Promise<void> {
  if (!node) return;
  await node.agent?.stop();
  rmSync(node.dir, { recursive: true, force: true });
}

const suites: CniPath[] = [STANDALONE, VIA_AGENT];
const needs = { root: isRoot, 'the forwarder (scripts/build-forward.sh)': forwarderBuilt };

describe.skipIf(requireOrSkip('dual-stack plugin', needs)).each(suites)('dual-stack pods on a node netns: $name', (path) => {
  let node: Node | undefined;
  const netName = `tsfds${process.pid}`;
  const conf = (extra: Record<string, unknown> = {}, cniVersion = '1.1.0') => ({
    cniVersion, name: netName, type: 'tsflannel', subnetFile: node!.subnetFile, dataDir: node!.dataDir, agentSocket: node!.agentSocket, ...extra,
  });
  const call = (c: Omit<CniCall, 'nodeNs'>) => callPlugin({ nodeNs: node!.ns, bin: path.bin, ...c, extraEnv: { ...path.env, ...c.extraEnv } });
  const add = (id: string, podNs: string, stdin: object = conf(), args?: string) =>
    call({ command: 'ADD', containerId: id, netns: nsPath(podNs), ifname: 'eth0', stdin, ...(args ? { args } : {}) });
  const del = (id: string, netns: string, stdin: object = conf()) => call({ command: 'DEL', containerId: id, netns, ifname: 'eth0', stdin });
  const check = (id: string, podNs: string, prevResult: unknown) =>
    call({ command: 'CHECK', containerId: id, netns: nsPath(podNs), ifname: 'eth0', stdin: conf({ prevResult }) });
  const leases = () => readdirSync(join(node!.dataDir, netName)).filter(isLeaseFile).sort();
  const veths = () => ipJson<{ ifname: string }[]>(node!.ns, ['link', 'show', 'type', 'veth']).map((l) => l.ifname);
  let a = '';
  let b = '';
  let resultA: CniOutcome | undefined;

  beforeAll(async () => {
    node = await makeNode(path.agent ? 'dsag' : 'dsst', DUAL_ENV, path);
    a = addNetns(`${path.agent ? 'ag' : 'st'}-a`);
    b = addNetns(`${path.agent ? 'ag' : 'st'}-b`);
  }, 60_000);
  afterAll(async () => {
    await dropNode(node);
    cleanupAll();
  });

  it('ADD gives a pod an IPv4 and an IPv6 address, routes of both families, both gateways on cni0, and IPv6 forwarding', async () => {
    resultA = await add('ds-a', a);
    expect(resultA.code, resultA.stdout + resultA.stderr).toBe(0);
    expect(resultA.json).toMatchObject({
      cniVersion: '1.1.0',
      ips: [
        { address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 2 },
        { address: 'fd00:10:244:1::2/64', gateway: 'fd00:10:244:1::1', interface: 2 },
      ],
      routes: [
        { dst: '10.244.0.0/16', gw: '10.244.1.1' },
        { dst: '0.0.0.0/0', gw: '10.244.1.1' },
        { dst: 'fd00:10:244::/56', gw: 'fd00:10:244:1::1' },
        { dst: '::/0', gw: 'fd00:10:244:1::1' },
      ],
    });
    // The pod's IPv6 address is usable at once: no "tentative" (DAD is off, as in the reference bridge).
    const addr6 = inNs(a, 'ip', ['-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'global']);
    expect(addr6).toContain('inet6 fd00:10:244:1::2/64 scope global');
    expect(addr6).not.toContain('tentative');
    expect(inNs(a, 'ip', ['-4', 'addr', 'show', 'dev', 'eth0'])).toContain('inet 10.244.1.2/24');
    const route6 = inNs(a, 'ip', ['-6', 'route', 'show', 'dev', 'eth0']);
    expect(route6).toMatch(/^default via fd00:10:244:1::1 /m);
    expect(route6).toMatch(/^fd00:10:244::\/56 via fd00:10:244:1::1 /m);
    expect(inNs(a, 'ip', ['-4', 'route'])).toContain('default via 10.244.1.1 dev eth0');
    const br6 = inNs(node!.ns, 'ip', ['-6', 'addr', 'show', 'dev', 'cni0', 'scope', 'global']);
    expect(br6).toContain('inet6 fd00:10:244:1::1/64 scope global');
    expect(br6).not.toContain('tentative');
    expect(inNs(node!.ns, 'ip', ['-4', 'addr', 'show', 'dev', 'cni0'])).toContain('inet 10.244.1.1/24');
    expect(inNs(node!.ns, 'cat', ['/proc/sys/net/ipv6/conf/all/forwarding']).trim()).toBe('1');
    expect(inNs(node!.ns, 'cat', ['/proc/sys/net/ipv4/ip_forward']).trim()).toBe('1');
    expect(leases()).toEqual(['10.244.1.2', 'fd00:10:244:1::2']);
    expect(readFileSync(join(node!.dataDir, netName, 'fd00:10:244:1::2'), 'utf8')).toBe('ds-a\r\neth0');
    // A down/up of the pod's link keeps its IPv6 address (keep_addr_on_down, as the reference sets).
    execFileSync('ip', ['-n', a, 'link', 'set', 'eth0', 'down']);
    execFileSync('ip', ['-n', a, 'link', 'set', 'eth0', 'up']);
    expect(inNs(a, 'ip', ['-6', 'addr', 'show', 'dev', 'eth0', 'scope', 'global'])).toContain('fd00:10:244:1::2/64');
  });

  it('pods on one node reach each other and the gateways through cni0 over IPv6 and IPv4', async () => {
    const rb = await add('ds-b', b);
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    expect(ipsOf(rb).map((i) => i.address)).toEqual(['10.244.1.3/24', 'fd00:10:244:1::3/64']);
    expect(inNs(a, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:1::3'])).toContain('1 received');
    expect(inNs(b, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:1::2'])).toContain('1 received');
    expect(inNs(a, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:1::1'])).toContain('1 received');
    expect(inNs(a, 'ping', ['-4', '-c1', '-W3', '10.244.1.3'])).toContain('1 received');
    expect(inNs(a, 'ping', ['-4', '-c1', '-W3', '10.244.1.1'])).toContain('1 received');
  });

  it('a retried ADD returns both addresses in every result version, with 0.x\'s "version" per family', async () => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      const out = await add('ds-a', a, conf({}, v));
      expect(out.code, out.stdout + out.stderr).toBe(0);
      expect(out.json?.cniVersion).toBe(v);
      const ips = ipsOf(out);
      expect(ips.map((i) => i.address)).toEqual(['10.244.1.2/24', 'fd00:10:244:1::2/64']);
      expect(ips.map((i) => i.version)).toEqual(v.startsWith('0.') ? ['4', '6'] : [undefined, undefined]);
    }
    expect(leases()).toEqual(['10.244.1.2', '10.244.1.3', 'fd00:10:244:1::2', 'fd00:10:244:1::3']);
  });

  it('CHECK passes on the dual-stack pod and names a removed IPv6 address, then a removed IPv6 default route', async () => {
    const ok = await check('ds-a', a, resultA!.json);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    execFileSync('ip', ['-n', a, '-6', 'route', 'del', 'default', 'via', 'fd00:10:244:1::1', 'dev', 'eth0']);
    const noRoute = await check('ds-a', a, resultA!.json);
    expect(noRoute.code).not.toBe(0);
    expect(String(noRoute.json?.msg)).toBe("route ::/0 via fd00:10:244:1::1 missing in eth0's netns");
    // A retried ADD puts the route back.
    expect((await add('ds-a', a)).code).toBe(0);
    expect((await check('ds-a', a, resultA!.json)).code).toBe(0);
    execFileSync('ip', ['-n', a, '-6', 'addr', 'del', 'fd00:10:244:1::2/64', 'dev', 'eth0']);
    const noAddr = await check('ds-a', a, resultA!.json);
    expect(noAddr.code).not.toBe(0);
    expect(String(noAddr.json?.msg)).toBe('failed to match addr fd00:10:244:1::2/64 on interface eth0');
  });

  it('DEL removes both leases, the veth and the pod interface; a second DEL without a netns succeeds', async () => {
    for (const [id, p] of [['ds-a', a], ['ds-b', b]] as const) {
      const out = await del(id, nsPath(p));
      expect(out.code, out.stdout + out.stderr).toBe(0);
      expect((await del(id, '')).code).toBe(0);
    }
    expect(leases()).toEqual([]);
    expect(veths()).toEqual([]);
    expect(inNs(a, 'ip', ['-o', 'link'])).not.toContain('eth0');
    expect(inNs(node!.ns, 'ip', ['-6', 'route', 'show', 'dev', 'cni0'])).not.toContain('fd00:10:244:1::2');
  });

  it('takes requested addresses from CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips, exactly', async () => {
    const viaArgs = await add('rq-1', a, conf(), 'IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.244.1.40,fd00:10:244:1::40');
    expect(viaArgs.code, viaArgs.stdout + viaArgs.stderr).toBe(0);
    expect(ipsOf(viaArgs).map((i) => i.address)).toEqual(['10.244.1.40/24', 'fd00:10:244:1::40/64']);
    expect(inNs(a, 'ip', ['-6', 'addr', 'show', 'dev', 'eth0'])).toContain('fd00:10:244:1::40/64');
    const viaConf = await add('rq-2', b, conf({ args: { cni: { ips: ['fd00:10:244:1::41'] } }, runtimeConfig: { ips: ['10.244.1.41/24'] } }));
    expect(viaConf.code, viaConf.stdout + viaConf.stderr).toBe(0);
    expect(ipsOf(viaConf).map((i) => i.address)).toEqual(['10.244.1.41/24', 'fd00:10:244:1::41/64']);
    expect(inNs(b, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:1::40'])).toContain('1 received');
    expect((await del('rq-1', nsPath(a))).code).toBe(0);
    expect((await del('rq-2', nsPath(b))).code).toBe(0);
    expect(leases()).toEqual([]);
  });

  it('fails ADD for a requested IPv6 address already leased or outside the ranges, naming it, and leaves nothing behind', async () => {
    const first = await add('rq-3', a, conf(), 'IP=fd00:10:244:1::42');
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const taken = await add('rq-4', b, conf(), 'IP=fd00:10:244:1::42');
    expect(taken.code).toBe(1);
    expect(taken.json).toMatchObject({
      code: 999,
      msg: 'failed to allocate for range 1: requested IP address fd00:10:244:1::42 is not available in range set fd00:10:244:1::1-fd00:10:244:1:ffff:ffff:ffff:ffff',
    });
    const outside = await add('rq-4', b, conf(), 'IP=fd00:10:244:2::42');
    expect(outside.json).toMatchObject({ code: 999, msg: 'failed to allocate all requested IPs: fd00:10:244:2::42' });
    const gateway = await add('rq-4', b, conf({ runtimeConfig: { ips: ['fd00:10:244:1::1'] } }));
    expect(gateway.json).toMatchObject({ code: 999, msg: "failed to allocate for range 1: requested ip fd00:10:244:1::1 is subnet's gateway" });
    // Only rq-3's two leases and veth: the failed calls undid their IPv4 lease and their veth.
    expect(leases()).toEqual(ipsOf(first).map((i) => bare(i.address)));
    expect(leases()).toContain('fd00:10:244:1::42');
    expect(veths()).toHaveLength(1);
    expect(inNs(b, 'ip', ['-o', 'link'])).not.toContain('eth0');
    expect((await del('rq-3', nsPath(a))).code).toBe(0);
  });

  it('gives 20 concurrent dual-stack ADDs 20 distinct IPv4 and 20 distinct IPv6 addresses, and 20 DELs leave nothing', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `par${i}`);
    const nss = ids.map((id) => addNetns(`${path.agent ? 'ag' : 'st'}-${id}`));
    const results = await Promise.all(ids.map((id, i) => add(id, nss[i]!)));
    expect(results.filter((r) => r.code !== 0).map((r) => r.stdout + r.stderr.slice(0, 300))).toEqual([]);
    const v4 = results.map((r) => ipsOf(r)[0]!.address);
    const v6 = results.map((r) => ipsOf(r)[1]!.address);
    expect(new Set(v4).size).toBe(20);
    expect(new Set(v6).size).toBe(20);
    expect(v6.every((a) => a.startsWith('fd00:10:244:1::'))).toBe(true);
    expect(leases()).toHaveLength(40);
    const dels = await Promise.all(ids.map((id, i) => del(id, nsPath(nss[i]!))));
    expect(dels.filter((r) => r.code !== 0)).toEqual([]);
    expect(leases()).toEqual([]);
    expect(veths()).toEqual([]);
  }, 120_000);

  it('GC releases both families\' leases of attachments the runtime no longer knows', async () => {
    for (const id of ['gc-1', 'gc-2']) expect((await add(id, id === 'gc-1' ? a : b)).code).toBe(0);
    expect(leases()).toHaveLength(4);
    const out = await call({ command: 'GC', stdin: conf({ 'cni.dev/valid-attachments': [{ containerID: 'gc-2', ifname: 'eth0' }] }) });
    expect(out.code, out.stdout + out.stderr).toBe(0);
    const kept = leases();
    expect(kept).toHaveLength(2);
    expect(kept.map((f) => readFileSync(join(node!.dataDir, netName, f), 'utf8'))).toEqual(['gc-2\r\neth0', 'gc-2\r\neth0']);
    expect(veths()).toHaveLength(1);
    expect((await del('gc-2', nsPath(b))).code).toBe(0);
  });
});

describe.skipIf(requireOrSkip('IPv6-only plugin', needs)).each(suites)('IPv6-only pods on a node netns: $name', (path) => {
  let node: Node | undefined;
  const netName = `tsf6o${process.pid}`;
  const conf = (cniVersion = '1.1.0') => ({
    cniVersion, name: netName, type: 'tsflannel', subnetFile: node!.subnetFile, dataDir: node!.dataDir, agentSocket: node!.agentSocket,
  });
  const call = (c: Omit<CniCall, 'nodeNs'>) => callPlugin({ nodeNs: node!.ns, bin: path.bin, ...c, extraEnv: { ...path.env, ...c.extraEnv } });

  beforeAll(async () => {
    node = await makeNode(path.agent ? 'v6ag' : 'v6st', V6_ONLY_ENV, path);
  }, 60_000);
  afterAll(async () => {
    await dropNode(node);
    cleanupAll();
  });

  it('ADD gives IPv6 only: one address, ::/0 and the cluster route, no IPv4 on the pod or the bridge; pods ping6 each other', async () => {
    const pods = [addNetns(`${path.agent ? 'ag' : 'st'}-6a`), addNetns(`${path.agent ? 'ag' : 'st'}-6b`)];
    const outs = [];
    for (const [i, p] of pods.entries()) {
      const out = await call({ command: 'ADD', containerId: `v6-${i}`, netns: nsPath(p), ifname: 'eth0', stdin: conf('0.4.0') });
      expect(out.code, out.stdout + out.stderr).toBe(0);
      outs.push(out);
    }
    expect(outs[0]!.json).toMatchObject({
      cniVersion: '0.4.0',
      ips: [{ version: '6', address: 'fd00:10:244:2::2/64', gateway: 'fd00:10:244:2::1', interface: 2 }],
      routes: [{ dst: 'fd00:10:244::/56', gw: 'fd00:10:244:2::1' }, { dst: '::/0', gw: 'fd00:10:244:2::1' }],
    });
    expect(ipsOf(outs[0]!)).toHaveLength(1);
    expect(inNs(pods[0]!, 'ip', ['-4', 'addr', 'show', 'dev', 'eth0']).trim()).toBe('');
    expect(inNs(pods[0]!, 'ip', ['-4', 'route']).trim()).toBe('');
    expect(inNs(node!.ns, 'ip', ['-4', 'addr', 'show', 'dev', 'cni0']).trim()).toBe('');
    expect(inNs(pods[0]!, 'ip', ['-6', 'route'])).toMatch(/^default via fd00:10:244:2::1 dev eth0/m);
    expect(inNs(pods[0]!, 'ping', ['-6', '-c1', '-W3', bare(ipsOf(outs[1]!)[0]!.address)])).toContain('1 received');
    expect(inNs(pods[1]!, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:2::1'])).toContain('1 received');

    const prevResult = outs[0]!.json;
    const ok = await call({ command: 'CHECK', containerId: 'v6-0', netns: nsPath(pods[0]!), ifname: 'eth0', stdin: { ...conf(), prevResult } });
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    const status = await call({ command: 'STATUS', stdin: conf() });
    expect(status.code, status.stdout + status.stderr).toBe(0);
    for (const [i, p] of pods.entries()) {
      expect((await call({ command: 'DEL', containerId: `v6-${i}`, netns: nsPath(p), ifname: 'eth0', stdin: conf() })).code).toBe(0);
    }
    expect(readdirSync(join(node!.dataDir, netName)).filter(isLeaseFile)).toEqual([]);
  });
});

describe.skipIf(requireOrSkip('dual-stack store shared with the reference host-local', { ...needs, 'reference host-local (/usr/lib/cni)': haveRefPlugins('host-local') }))(
  'IPv6 leases shared with the reference host-local, both ways',
  () => {
    let node: Node | undefined;
    const netName = `tsfdsref${process.pid}`;
    const pods: string[] = [];
    const conf = () => ({ cniVersion: '1.0.0', name: netName, type: 'tsflannel', subnetFile: node!.subnetFile, dataDir: node!.dataDir, agentSocket: '' });
    // The ranges our plugin derives from DUAL_ENV, as flannel's plugin hands them to host-local.
    const refConf = () => ({
      cniVersion: '1.0.0',
      name: netName,
      type: 'host-local',
      ipam: { type: 'host-local', dataDir: node!.dataDir, ranges: [[{ subnet: '10.244.1.0/24' }], [{ subnet: 'fd00:10:244:1::/64' }]] },
    });
    const ours = (c: Omit<CniCall, 'nodeNs' | 'stdin'>, stdin: object = conf()) => callPlugin({ nodeNs: node!.ns, ...c, stdin });
    const reference = (command: 'ADD' | 'DEL' | 'CHECK', id: string, args = ''): CniOutcome => {
      const r = spawnSync(refPlugin('host-local'), [], {
        input: JSON.stringify(refConf()),
        encoding: 'utf8',
        env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: '/var/run/netns/unused', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni', CNI_ARGS: args },
      });
      let json: Record<string, unknown> | undefined;
      try {
        json = r.stdout.trim() ? (JSON.parse(r.stdout) as Record<string, unknown>) : undefined;
      } catch {
        json = undefined;
      }
      return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json };
    };
    const leases = () => readdirSync(join(node!.dataDir, netName)).filter(isLeaseFile).sort();
    const pod = (label: string) => {
      const p = addNetns(label);
      pods.push(p);
      return p;
    };

    beforeAll(async () => {
      node = await makeNode('dsref', DUAL_ENV, STANDALONE);
    }, 60_000);
    afterAll(async () => {
      await dropNode(node);
      cleanupAll();
    });

    it('the reference finds (CHECK) and releases (DEL) the IPv6 lease our ADD wrote, and allocates after it', async () => {
      const p = pod('ref-a');
      const added = await ours({ command: 'ADD', containerId: 'ours-a', netns: nsPath(p), ifname: 'eth0' });
      expect(added.code, added.stdout + added.stderr).toBe(0);
      expect(leases()).toEqual(['10.244.1.2', 'fd00:10:244:1::2']);
      const checked = reference('CHECK', 'ours-a');
      expect(checked.code, checked.stdout + checked.stderr).toBe(0);
      // Round-robin continues after our last_reserved_ip.1, skipping our file.
      const theirs = reference('ADD', 'ref-b');
      expect(theirs.code, theirs.stdout + theirs.stderr).toBe(0);
      expect(ipsOf(theirs).map((i) => i.address)).toEqual(['10.244.1.3/24', 'fd00:10:244:1::3/64']);
      const released = reference('DEL', 'ours-a');
      expect(released.code, released.stdout + released.stderr).toBe(0);
      expect(leases()).toEqual(['10.244.1.3', 'fd00:10:244:1::3']);
      // Our DEL then finds no lease and still removes the veth.
      expect((await ours({ command: 'DEL', containerId: 'ours-a', netns: nsPath(p), ifname: 'eth0' })).code).toBe(0);
      expect(inNs(node!.ns, 'ip', ['-o', 'link', 'show', 'type', 'veth']).trim()).toBe('');
    });

    it('our plugin skips, and releases (DEL and GC), IPv6 leases the reference wrote', async () => {
      // ref-b holds .3 and ::3 from the test before; ours continues after them.
      const p = pod('ref-c');
      const added = await ours({ command: 'ADD', containerId: 'ours-c', netns: nsPath(p), ifname: 'eth0' });
      expect(added.code, added.stdout + added.stderr).toBe(0);
      expect(ipsOf(added).map((i) => i.address)).toEqual(['10.244.1.4/24', 'fd00:10:244:1::4/64']);
      const del = await ours({ command: 'DEL', containerId: 'ref-b', netns: '', ifname: 'eth0' });
      expect(del.code, del.stdout + del.stderr).toBe(0);
      expect(leases()).toEqual(['10.244.1.4', 'fd00:10:244:1::4']);
      expect(reference('ADD', 'ref-d').code).toBe(0);
      const gc = await ours({ command: 'GC' }, { ...conf(), cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'ours-c', ifname: 'eth0' }] });
      expect(gc.code, gc.stdout + gc.stderr).toBe(0);
      expect(leases()).toEqual(['10.244.1.4', 'fd00:10:244:1::4']);
      expect((await ours({ command: 'DEL', containerId: 'ours-c', netns: nsPath(p), ifname: 'eth0' })).code).toBe(0);
    });

    it('names IPv6 lease files byte for byte as Go does: each side sees the other\'s requested address as taken', async () => {
      // One zero group stays (":0:"), the longest run of two or more becomes "::", as net.IP.String() writes.
      const goText = 'fd00:10:244:1:0:a:0:5';
      const theirs = reference('ADD', 'ref-e', `IP=${goText}`);
      expect(theirs.code, theirs.stdout + theirs.stderr).toBe(0);
      expect(leases()).toContain(goText);
      const p = pod('ref-f');
      const clash = await ours({ command: 'ADD', containerId: 'ours-f', netns: nsPath(p), ifname: 'eth0', args: 'IP=fd00:10:244:1::a:0:5' });
      expect(clash.json).toMatchObject({ code: 999, msg: expect.stringContaining(`requested IP address ${goText} is not available`) });
      const mine = await ours({ command: 'ADD', containerId: 'ours-f', netns: nsPath(p), ifname: 'eth0', args: 'IP=fd00:10:244:1:0:0:b:6' });
      expect(mine.code, mine.stdout + mine.stderr).toBe(0);
      expect(leases()).toContain('fd00:10:244:1::b:6');
      const refused = reference('ADD', 'ref-g', 'IP=fd00:10:244:1::b:6');
      expect(refused.code).not.toBe(0);
      expect(String(refused.json?.msg)).toContain('fd00:10:244:1::b:6');
      expect((await ours({ command: 'DEL', containerId: 'ours-f', netns: nsPath(p), ifname: 'eth0' })).code).toBe(0);
      expect(reference('DEL', 'ref-e').code).toBe(0);
      expect(leases()).toEqual([]);
    });
  },
);

describe.skipIf(requireOrSkip('requested IPs through libcni', { root: isRoot }))('runtimeConfig.ips through libcni (the "ips" capability)', () => {
  let node: Node | undefined;
  let binDir = '';
  let netconfDir = '';
  let cacheDir = '';
  const withCap = `tsfcap${process.pid}`;
  const withoutCap = `tsfnocap${process.pid}`;
  const ips = ['10.244.1.77/24', 'fd00:10:244:1::77/64'];
  const opts = (netName: string, pod: string, extra: Partial<CnitoolOptions> = {}): CnitoolOptions => ({
    netconfDir, netName, netnsPath: nsPath(pod), cniPath: [binDir], cacheDir, nsExec: node!.ns, containerId: `cap-${netName}`, ...extra,
  });
  const resultIps = (json: unknown) => ((json as { ips?: ResultIp[] }).ips ?? []).map((i) => i.address);

  beforeAll(async () => {
    buildCnitool();
    node = await makeNode('dscap', DUAL_ENV, STANDALONE);
    binDir = join(node.dir, 'bin');
    netconfDir = join(node.dir, 'net.d');
    cacheDir = join(node.dir, 'cache');
    mkdirSync(binDir);
    mkdirSync(netconfDir);
    symlinkSync(PLUGIN_BIN, join(binDir, 'tsflannel'));
    const entry = { type: 'tsflannel', subnetFile: node.subnetFile, dataDir: node.dataDir, agentSocket: '' };
    writeFileSync(join(netconfDir, '10-cap.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: withCap, plugins: [{ ...entry, capabilities: { ips: true } }] }));
    writeFileSync(join(netconfDir, '20-nocap.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: withoutCap, plugins: [entry] }));
  }, 120_000);
  afterAll(async () => {
    await dropNode(node);
    cleanupAll();
  });

  it('gives the pod exactly the requested pair when the plugin entry declares the capability, and ignores it otherwise', async () => {
    const p1 = addNetns('cap-1');
    const added = await runCnitool('add', { ...opts(withCap, p1), capArgs: { ips } });
    expect(added.code, added.stdout + added.stderr).toBe(0);
    expect(resultIps(added.json)).toEqual(ips);
    expect(inNs(p1, 'ip', ['-6', 'addr', 'show', 'dev', 'eth0'])).toContain('fd00:10:244:1::77/64');
    const checked = await runCnitool('check', opts(withCap, p1));
    expect(checked.code, checked.stdout + checked.stderr).toBe(0);
    // libcni drops capability args a plugin entry does not declare: the pod gets the next free addresses.
    const p2 = addNetns('cap-2');
    const plain = await runCnitool('add', { ...opts(withoutCap, p2), capArgs: { ips } });
    expect(plain.code, plain.stdout + plain.stderr).toBe(0);
    expect(resultIps(plain.json)).toEqual(['10.244.1.2/24', 'fd00:10:244:1::2/64']);
    expect((await runCnitool('del', opts(withCap, p1))).code).toBe(0);
    expect((await runCnitool('del', opts(withoutCap, p2))).code).toBe(0);
    expect(readdirSync(node!.dataDir).flatMap((d) => readdirSync(join(node!.dataDir, d)).filter(isLeaseFile))).toEqual([]);
  });
});

describe.skipIf(requireOrSkip('dual-stack day 2', { root: isRoot }))('dual-stack node when the subnet file changes', () => {
  let node: Node | undefined;
  const netName = `tsfds2${process.pid}`;
  const pods = new Map<string, string>();
  const conf = () => ({ cniVersion: '1.1.0', name: netName, type: 'tsflannel', subnetFile: node!.subnetFile, dataDir: node!.dataDir, agentSocket: '' });
  const cni = (command: 'ADD' | 'DEL', id: string) =>
    callPlugin({ nodeNs: node!.ns, command, containerId: id, netns: nsPath(pods.get(id)!), ifname: 'eth0', stdin: conf() });
  const writeEnv = (v6Subnet: string, mtu: number) =>
    writeFileSync(node!.subnetFile, DUAL_ENV.replace('fd00:10:244:1::1/64', v6Subnet).replace('FLANNEL_MTU=1450', `FLANNEL_MTU=${mtu}`));
  const bridge6 = () => inNs(node!.ns, 'ip', ['-6', 'addr', 'show', 'dev', 'cni0', 'scope', 'global']);

  beforeAll(async () => {
    node = await makeNode('ds2', DUAL_ENV, STANDALONE);
  }, 60_000);
  afterAll(async () => {
    await dropNode(node);
    cleanupAll();
  });

  it('a raised FLANNEL_MTU gives the earlier pod a /128 route carrying its MTU ("packet too big" instead of a silent drop)', async () => {
    pods.set('old', addNetns('d2-old'));
    expect((await cni('ADD', 'old')).code).toBe(0);
    writeEnv('fd00:10:244:1::1/64', 8950);
    pods.set('new', addNetns('d2-new'));
    const out = await cni('ADD', 'new');
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(inNs(node!.ns, 'ip', ['-6', 'route', 'show', 'fd00:10:244:1::2/128'])).toMatch(/dev cni0 .*mtu 1450/);
    expect(inNs(node!.ns, 'ip', ['-6', 'route', 'show', 'fd00:10:244:1::3/128'])).toBe('');
    const big = spawnSync('ip', ['netns', 'exec', node!.ns, 'ping', '-6', '-c1', '-W1', '-M', 'do', '-s', '2000', 'fd00:10:244:1::2'], { encoding: 'utf8' });
    // ping6 words the local error "message too long, mtu: 1450".
    expect(big.stdout + big.stderr).toMatch(/mtu: 1450/);
    expect(inNs(node!.ns, 'ping', ['-6', '-c1', '-W3', '-M', 'do', '-s', String(1450 - 48), 'fd00:10:244:1::2'])).toContain('1 received');
    expect(inNs(pods.get('old')!, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:1::3'])).toContain('1 received');
  });

  it('a new FLANNEL_IPV6_SUBNET: ADD names the pods holding old IPv6 addresses, then moves only the IPv6 gateway once they are gone', async () => {
    writeEnv('fd00:10:244:9::1/64', 8950);
    pods.set('moved', addNetns('d2-moved'));
    const refused = await cni('ADD', 'moved');
    expect(refused.code).not.toBe(0);
    expect(refused.json?.code).toBe(7);
    const msg = String(refused.json?.msg);
    expect(msg).toContain('fd00:10:244:9::1/64');
    expect(msg).toContain('fd00:10:244:1::2 (container old eth0)');
    expect(msg).toContain('fd00:10:244:1::3 (container new eth0)');
    expect(bridge6()).toContain('fd00:10:244:1::1/64');
    for (const id of ['old', 'new']) expect((await cni('DEL', id)).code).toBe(0);
    expect(inNs(node!.ns, 'ip', ['-6', 'route', 'show', 'fd00:10:244:1::2/128'])).toBe('');
    const out = await cni('ADD', 'moved');
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(ipsOf(out).map((i) => i.address)).toEqual([expect.stringMatching(/^10\.244\.1\.\d+\/24$/), 'fd00:10:244:9::2/64']);
    expect(bridge6()).toContain('fd00:10:244:9::1/64');
    expect(bridge6()).not.toContain('fd00:10:244:1::1/64');
    expect(inNs(node!.ns, 'ip', ['-4', 'addr', 'show', 'dev', 'cni0'])).toContain('10.244.1.1/24');
    expect(inNs(pods.get('moved')!, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:9::1'])).toContain('1 received');
    expect((await cni('DEL', 'moved')).code).toBe(0);
  });
});

describe.skipIf(requireOrSkip('IPv4 node turning dual-stack', { root: isRoot }))('an IPv4-only node whose subnet file gains IPv6', () => {
  let node: Node | undefined;
  const netName = `tsfup${process.pid}`;
  const pods = new Map<string, string>();
  const conf = () => ({ cniVersion: '1.1.0', name: netName, type: 'tsflannel', subnetFile: node!.subnetFile, dataDir: node!.dataDir, agentSocket: '' });
  const cni = (command: 'ADD' | 'DEL', id: string) =>
    callPlugin({ nodeNs: node!.ns, command, containerId: id, netns: nsPath(pods.get(id)!), ifname: 'eth0', stdin: conf() });

  beforeAll(async () => {
    node = await makeNode('dsup', DUAL_ENV, STANDALONE);
  }, 60_000);
  afterAll(async () => {
    await dropNode(node);
    cleanupAll();
  });

  it('an IPv4 pod made before the node became dual-stack keeps its address and reaches a new dual-stack pod; its retried ADD adds IPv6', async () => {
    writeFileSync(node!.subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    pods.set('v4', addNetns('d2-v4'));
    const before = await cni('ADD', 'v4');
    expect(ipsOf(before).map((i) => i.address)).toEqual(['10.244.1.2/24']);
    writeFileSync(node!.subnetFile, DUAL_ENV);
    pods.set('ds', addNetns('d2-ds'));
    const ds = await cni('ADD', 'ds');
    expect(ipsOf(ds).map((i) => i.address)).toEqual(['10.244.1.3/24', 'fd00:10:244:1::2/64']);
    expect(inNs(pods.get('v4')!, 'ping', ['-4', '-c1', '-W3', '10.244.1.3'])).toContain('1 received');
    const again = await cni('ADD', 'v4');
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(ipsOf(again).map((i) => i.address)).toEqual(['10.244.1.2/24', 'fd00:10:244:1::3/64']);
    expect(inNs(pods.get('v4')!, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:1::2'])).toContain('1 received');
    for (const id of ['v4', 'ds']) expect((await cni('DEL', id)).code).toBe(0);
    expect(readdirSync(join(node!.dataDir, netName)).filter(isLeaseFile)).toEqual([]);
  });
});

describe.skipIf(requireOrSkip('IPv6 disabled by default', { root: isRoot }))('a node and pod whose new links start with IPv6 disabled', () => {
  let node: Node | undefined;
  const netName = `tsfnov6${process.pid}`;

  beforeAll(async () => {
    node = await makeNode('dsoff', DUAL_ENV, STANDALONE);
  }, 60_000);
  afterAll(async () => {
    await dropNode(node);
    cleanupAll();
  });

  it('enables IPv6 on cni0, the pod interface and the pod loopback, so the pod still gets and uses its IPv6 address', async () => {
    // Hosts that turn IPv6 off by default (net.ipv6.conf.default.disable_ipv6=1) make every new link, cni0 and eth0 included, start without it.
    inNs(node!.ns, 'sysctl', ['-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
    const p = addNetns('off-pod');
    inNs(p, 'sysctl', ['-qw', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.lo.disable_ipv6=1']);
    const conf = { cniVersion: '1.1.0', name: netName, type: 'tsflannel', subnetFile: node!.subnetFile, dataDir: node!.dataDir, agentSocket: '' };
    const out = await callPlugin({ nodeNs: node!.ns, command: 'ADD', containerId: 'off', netns: nsPath(p), ifname: 'eth0', stdin: conf });
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(inNs(node!.ns, 'cat', ['/proc/sys/net/ipv6/conf/cni0/disable_ipv6']).trim()).toBe('0');
    expect(inNs(p, 'cat', ['/proc/sys/net/ipv6/conf/eth0/disable_ipv6']).trim()).toBe('0');
    expect(inNs(p, 'ip', ['-6', 'addr', 'show', 'dev', 'eth0'])).toContain('fd00:10:244:1::2/64');
    expect(inNs(p, 'ping', ['-6', '-c1', '-W3', 'fd00:10:244:1::1'])).toContain('1 received');
    expect(inNs(p, 'ping', ['-6', '-c1', '-W3', '::1'])).toContain('1 received');
    expect((await callPlugin({ nodeNs: node!.ns, command: 'DEL', containerId: 'off', netns: nsPath(p), ifname: 'eth0', stdin: conf })).code).toBe(0);
  });
});
