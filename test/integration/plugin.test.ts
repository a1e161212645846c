// The real tsflannel binary on a node netns: ADD/CHECK/DEL/GC/STATUS as a
// runtime calls them, checked against the kernel and the IPAM store. The
// same assertions run on each path a call can take: the standalone plugin,
// the forwarder with the node's agent serving, and the forwarder with the
// agent stopped (fallback to the standalone).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { callPlugin, type CniCall } from '../helpers/plugin.js';
import { forwarderBuilt, startCniAgent, STANDALONE, VIA_AGENT, VIA_FALLBACK, type CniPath, type RunningAgent } from '../helpers/cni-agent.js';

interface IpLink { ifname: string; mtu: number; master?: string; linkinfo?: { info_kind: string; info_slave_data?: { hairpin?: boolean } } }

const paths: CniPath[] = [STANDALONE, VIA_AGENT, VIA_FALLBACK];

describe.skipIf(requireOrSkip('plugin', { root: isRoot, 'the forwarder (scripts/build-forward.sh)': forwarderBuilt })).each(paths)('tsflannel plugin on a node netns: $name', (path) => {
  let node = '';
  let dir = '';
  let subnetFile = '';
  let dataDir = '';
  let agentSocket = '';
  let agent: RunningAgent | undefined;
  const netName = `tsfnet${process.pid}`;
  const conf = (extra: Record<string, unknown> = {}, cniVersion = '1.1.0') => ({
    cniVersion, name: netName, type: 'tsflannel', subnetFile, dataDir, agentSocket, ...extra,
  });
  const pods: string[] = [];
  const pod = (label: string): string => {
    const name = addNetns(label);
    pods.push(name);
    return name;
  };
  const call = (c: Omit<CniCall, 'nodeNs'>) => callPlugin({ nodeNs: node, bin: path.bin, ...c, extraEnv: { ...path.env, ...c.extraEnv } });
  const add = (id: string, podNs: string, stdin: object = conf()) =>
    call({ command: 'ADD', containerId: id, netns: nsPath(podNs), ifname: 'eth0', stdin });
  const del = (id: string, netns: string, stdin: object = conf()) =>
    call({ command: 'DEL', containerId: id, netns, ifname: 'eth0', stdin });
  const leases = () => readdirSync(join(dataDir, netName)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  const veths = () => ipJson<IpLink[]>(node, ['-d', 'link', 'show', 'type', 'veth']).map((l) => l.ifname);

  beforeAll(async () => {
    node = addNetns('pnode');
    dir = mkdtempSync(join(tmpdir(), 'tsf-plugin-'));
    subnetFile = join(dir, 'subnet.env');
    dataDir = join(dir, 'networks');
    // With no agent started, nothing listens here: the forwarder falls back.
    agentSocket = join(dir, 'run', 'cni.sock');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    if (path.agent) agent = await startCniAgent({ socket: agentSocket, nodeNs: node });
  }, 60_000);
  afterAll(async () => {
    await agent?.stop();
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`takes the path it names (${path.name})`, async () => {
    const out = await call({ command: 'STATUS', stdin: conf() });
    expect(out.code, out.stdout + out.stderr).toBe(0);
    const fellBack = out.stderr.includes(`tsflannel: agent at ${agentSocket} unavailable`);
    expect(fellBack).toBe(path === VIA_FALLBACK);
    if (agent) expect(agent.child.exitCode).toBeNull();
  });

  it('answers VERSION the way podman asks, without touching the node', async () => {
    const out = await call({ command: 'VERSION', netns: 'dummy', ifname: 'dummy', path: 'dummy', stdin: '{"cniVersion":"1.0.0"}' });
    expect(out.code).toBe(0);
    expect(out.json?.supportedVersions).toEqual(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    expect(inNs(node, 'ip', ['-o', 'link'])).not.toContain('cni0');
  });

  it('reports STATUS 50 before the agent wrote the subnet file, 0 after, without needing cni0', async () => {
    const missing = await call({ command: 'STATUS', stdin: conf({ subnetFile: join(dir, 'none.env') }) });
    expect(missing.code).not.toBe(0);
    expect(missing.json?.code).toBe(50);
    const ready = await call({ command: 'STATUS', stdin: conf() });
    expect(ready.stdout).toBe('');
    expect(ready.code).toBe(0);
  });

  it('fails ADD with code 5 and a hint when the subnet file is missing', async () => {
    const p = pod('nofile');
    const out = await add('nofile', p, conf({ subnetFile: join(dir, 'none.env') }));
    expect(out.code).not.toBe(0);
    expect(out.json?.code).toBe(5);
    expect(String(out.json?.msg)).toContain('none.env');
  });

  it('ADD attaches two pods that reach each other and the gateway', async () => {
    const a = pod('a');
    const b = pod('b');
    const ra = await add('ctr-a', a, conf({}, '1.0.0'));
    expect(ra.code, ra.stdout + ra.stderr).toBe(0);
    const rb = await add('ctr-b', b);
    expect(rb.code, rb.stdout + rb.stderr).toBe(0);
    const ipA = (ra.json?.ips as { address: string }[])[0].address;
    const ipB = (rb.json?.ips as { address: string }[])[0].address;
    expect(ipA).toBe('10.244.1.2/24');
    expect(ipB).toBe('10.244.1.3/24');
    expect(ra.json).toMatchObject({
      cniVersion: '1.0.0',
      ips: [{ address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 2 }],
      routes: expect.arrayContaining([{ dst: '10.244.0.0/16', gw: '10.244.1.1' }, { dst: '0.0.0.0/0', gw: '10.244.1.1' }]),
    });
    const ifaces = ra.json?.interfaces as { name: string; sandbox?: string }[];
    expect(ifaces[0].name).toBe('cni0');
    expect(ifaces[1].name).toMatch(/^veth[0-9a-f]{8}$/);
    expect(ifaces[2]).toMatchObject({ name: 'eth0', sandbox: nsPath(a) });

    const [br] = ipJson<IpLink[]>(node, ['-d', 'link', 'show', 'cni0']);
    expect(br.mtu).toBe(1450);
    expect(inNs(node, 'ip', ['-4', 'addr', 'show', 'cni0'])).toContain('inet 10.244.1.1/24');
    const [hostVeth] = ipJson<IpLink[]>(node, ['-d', 'link', 'show', ifaces[1].name]);
    expect(hostVeth.master).toBe('cni0');
    expect(hostVeth.linkinfo?.info_slave_data?.hairpin).toBe(true);
    expect(inNs(a, 'ip', ['-4', 'addr', 'show', 'eth0'])).toContain('inet 10.244.1.2/24');
    expect(inNs(a, 'ip', ['route'])).toContain('default via 10.244.1.1 dev eth0');
    expect(inNs(node, 'cat', ['/proc/sys/net/ipv4/ip_forward']).trim()).toBe('1');

    expect(inNs(a, 'ping', ['-c1', '-W2', '10.244.1.3'])).toContain('1 received');
    expect(inNs(b, 'ping', ['-c1', '-W2', '10.244.1.2'])).toContain('1 received');
    expect(inNs(a, 'ping', ['-c1', '-W2', '10.244.1.1'])).toContain('1 received');
    expect(readFileSync(join(dataDir, netName, '10.244.1.2'), 'utf8')).toBe('ctr-a\r\neth0');
  });

  it('CHECK passes on a healthy pod and names what drifted', async () => {
    const a = pods.find((p) => p.endsWith('-a'))!;
    const added = await add('ctr-a', a); // a retried ADD returns the same lease
    expect((added.json?.ips as { address: string }[])[0].address).toBe('10.244.1.2/24');
    const prevResult = added.json;
    const ok = await call({ command: 'CHECK', containerId: 'ctr-a', netns: nsPath(a), ifname: 'eth0', stdin: conf({ prevResult }) });
    expect(ok.code, ok.stdout).toBe(0);
    execFileSync('ip', ['-n', a, 'addr', 'del', '10.244.1.2/24', 'dev', 'eth0']);
    const bad = await call({ command: 'CHECK', containerId: 'ctr-a', netns: nsPath(a), ifname: 'eth0', stdin: conf({ prevResult }) });
    expect(bad.code).not.toBe(0);
    expect(String(bad.json?.msg)).toContain('10.244.1.2/24');
  });

  it('a retried ADD leaves one lease and one veth', async () => {
    expect(leases().sort()).toEqual(['10.244.1.2', '10.244.1.3']);
    expect(veths()).toHaveLength(2);
  });

  it('DEL removes veth and lease, and succeeds again without a netns', async () => {
    const a = pods.find((p) => p.endsWith('-a'))!;
    const b = pods.find((p) => p.endsWith('-b'))!;
    for (const [id, p] of [['ctr-a', a], ['ctr-b', b]]) {
      const out = await del(id, nsPath(p));
      expect(out.code, out.stdout + out.stderr).toBe(0);
      expect(out.stdout).toBe('');
      const again = await del(id, '');
      expect(again.code, again.stdout).toBe(0);
    }
    expect(leases()).toEqual([]);
    expect(veths()).toEqual([]);
    expect(inNs(a, 'ip', ['-o', 'link'])).not.toContain('eth0');
  });

  it('a failed ADD undoes its lease and veth', async () => {
    const p = pod('clash');
    execFileSync('ip', ['-n', p, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']);
    const out = await add('ctr-clash', p);
    expect(out.code).not.toBe(0);
    expect(String(out.json?.msg)).toContain('eth0');
    expect(leases()).toEqual([]);
    expect(veths()).toEqual([]);
  });

  it('rejects a CNI_NETNS that is not a network namespace', async () => {
    const out = await call({ command: 'ADD', containerId: 'ctr-x', netns: subnetFile, ifname: 'eth0', stdin: conf() });
    expect(out.json?.code).toBe(4);
    expect(leases()).toEqual([]);
  });

  it('prints results in every supported cniVersion', async () => {
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      const p = pod(`v${v.replace(/\./g, '')}`);
      const out = await add(`ctr-${v}`, p, conf({}, v));
      expect(out.code, out.stdout + out.stderr).toBe(0);
      expect(out.json?.cniVersion).toBe(v);
      const ip = (out.json?.ips as Record<string, unknown>[])[0];
      if (v.startsWith('0.')) expect(ip.version).toBe('4');
      else expect(ip.version).toBeUndefined();
      expect((await del(`ctr-${v}`, nsPath(p), conf({}, v))).code).toBe(0);
    }
    expect(leases()).toEqual([]);
  });

  it('GC releases leases and veths of attachments the runtime no longer knows', async () => {
    const ids = ['gc1', 'gc2', 'gc3'];
    for (const id of ids) expect((await add(id, pod(id))).code).toBe(0);
    expect(leases()).toHaveLength(3);
    const out = await call({
      command: 'GC',
      stdin: conf({ 'cni.dev/valid-attachments': [{ containerID: 'gc2', ifname: 'eth0' }] }),
    });
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(leases()).toHaveLength(1);
    expect(readFileSync(join(dataDir, netName, leases()[0]), 'utf8')).toBe('gc2\r\neth0');
    expect(veths()).toHaveLength(1);
    expect((await del('gc2', '')).code).toBe(0);
    expect(veths()).toEqual([]);
  });

  it('logs to the configured log file, never to stdout', async () => {
    const p = pod('logged');
    const logFile = join(dir, 'plugin.log');
    const out = await add('ctr-log', p, conf({ logLevel: 'info', logFile }));
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(() => JSON.parse(out.stdout)).not.toThrow();
    const line = readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('pod attached'));
    const ip = (out.json?.ips as { address: string }[])[0].address;
    expect(JSON.parse(line!)).toMatchObject({ containerId: 'ctr-log', ip, cmd: 'ADD' });
    expect(out.stderr).toContain('pod attached');
    expect((await del('ctr-log', nsPath(p))).code).toBe(0);
  });

  it('gives 100 concurrent ADDs 100 distinct IPs, and 100 DELs leave the node as it was', async () => {
    const before = { links: veths(), leases: leases() };
    const ids = Array.from({ length: 100 }, (_, i) => `par${i}`);
    const nss = ids.map((id) => pod(id));
    const results = await Promise.all(ids.map((id, i) => add(id, nss[i])));
    const failures = results.filter((r) => r.code !== 0).map((r) => r.stdout + r.stderr.slice(0, 500));
    expect(failures).toEqual([]);
    const ips = results.map((r) => (r.json?.ips as { address: string }[])[0].address);
    expect(new Set(ips).size).toBe(100);
    expect(leases()).toHaveLength(100);
    expect(veths()).toHaveLength(100);
    const dels = await Promise.all(ids.map((id, i) => del(id, nsPath(nss[i]))));
    expect(dels.filter((r) => r.code !== 0)).toEqual([]);
    expect({ links: veths(), leases: leases() }).toEqual(before);
  }, 240_000); // 100 Node start-ups per round on the standalone paths, on a shared machine
});
