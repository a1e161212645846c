// The real tsflannel binary on a node netns, checked verb by verb against
// what the CNI spec asks of it (STATUS, CHECK, GC, DEL) where a runtime
// would otherwise act on a wrong answer: a node reported ready on which
// every ADD fails, a CHECK that passes a broken attachment, a cleanup that
// cannot finish.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { CNI_REF_DIR, haveRefPlugins, refPlugin } from '../helpers/reference.js';
import { callPlugin, type CniCall } from '../helpers/plugin.js';
import { requireOrSkip } from '../helpers/require.js';

describe.skipIf(requireOrSkip('plugin verbs', { root: isRoot }))('tsflannel verbs against the CNI spec', () => {
  let node = '';
  let dir = '';
  let subnetFile = '';
  let dataDir = '';
  const netName = `tsfvb${process.pid}`;
  const conf = (extra: Record<string, unknown> = {}) => ({
    cniVersion: '1.1.0', name: netName, type: 'tsflannel', subnetFile, dataDir, agentSocket: '', ...extra,
  });
  const call = (c: Omit<CniCall, 'nodeNs'>) => callPlugin({ nodeNs: node, ...c });
  const add = (id: string, pod: string, stdin: object = conf()) =>
    call({ command: 'ADD', containerId: id, netns: nsPath(pod), ifname: 'eth0', stdin });
  const status = (stdin: object = conf()) => call({ command: 'STATUS', stdin });
  /** The lease files (addresses) host-local IPAM keeps for a container ID. */
  const leasesOf = (id: string) => readdirSync(join(dataDir, netName))
    .filter((f) => /^[\d.]+$|:/.test(f) && readFileSync(join(dataDir, netName, f), 'utf8').split('\r\n')[0] === id);

  beforeAll(() => {
    node = addNetns('vbnode');
    dir = mkdtempSync(join(tmpdir(), 'tsf-verbs-'));
    subnetFile = join(dir, 'subnet.env');
    dataDir = join(dir, 'networks');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('STATUS fails with ADD\'s 7 when ipam.ranges lie outside the node subnet, where every ADD fails', async () => {
    const bad = conf({ ipam: { ranges: [[{ subnet: '10.244.9.0/24' }]] } });
    const adding = await add('vb-range', addNetns('vbrange'), bad);
    expect(adding.json?.code).toBe(7);
    const out = await status(bad);
    expect(out.code, out.stdout).toBe(1);
    expect(out.json).toEqual(adding.json);
    expect(String(out.json?.msg)).toContain('10.244.9.0/24 is outside the node subnet 10.244.1.0/24');
  });

  it('STATUS reports 50 when "bridge" names a link that is not a bridge, where every ADD fails', async () => {
    execFileSync('ip', ['-n', node, 'link', 'add', 'vbveth0', 'type', 'veth', 'peer', 'name', 'vbveth1']);
    const bad = conf({ bridge: 'vbveth0' });
    const adding = await add('vb-br', addNetns('vbbr'), bad);
    expect(adding.json?.code).toBe(7);
    const out = await status(bad);
    expect(out.json?.code, out.stdout).toBe(50);
    expect(String(out.json?.msg)).toContain('vbveth0');
    // No bridge yet under another name is fine: ADD makes it.
    expect((await status(conf({ bridge: 'vbnew0' }))).code).toBe(0);
  });

  it('STATUS fails with ADD\'s 7 when ipam.routes name a family the node has no subnet for, where every ADD fails', async () => {
    const bad = conf({ ipam: { routes: [{ dst: 'fd00:99::/64' }] } });
    const adding = await add('vb-route', addNetns('vbroute'), bad);
    expect(adding.json?.code).toBe(7);
    const out = await status(bad);
    expect(out.json, out.stdout).toEqual(adding.json);
    expect(String(out.json?.msg)).toContain('fd00:99::/64');
  });

  it('CHECK fails while the pod cannot be reached: its host veth down, or the bridge down', async () => {
    const pod = addNetns('vbchk');
    const added = await add('vb-chk', pod);
    expect(added.code, added.stdout + added.stderr).toBe(0);
    const prevResult = added.json;
    const hostVeth = (prevResult?.interfaces as { name: string }[])[1]!.name;
    const check = () => call({ command: 'CHECK', containerId: 'vb-chk', netns: nsPath(pod), ifname: 'eth0', stdin: conf({ prevResult }) });
    const ping = () => spawnSync('ip', ['netns', 'exec', pod, 'ping', '-c1', '-W1', '10.244.1.1']).status;
    expect((await check()).code).toBe(0);
    expect(ping()).toBe(0);
    for (const dev of [hostVeth, 'cni0']) {
      execFileSync('ip', ['-n', node, 'link', 'set', dev, 'down']);
      try {
        expect(ping(), `${dev} down`).not.toBe(0);
        const out = await check();
        expect(out.code, `${dev} down: ${out.stdout}`).toBe(1);
        expect(String(out.json?.msg)).toContain(`${dev} is down`);
      } finally {
        execFileSync('ip', ['-n', node, 'link', 'set', dev, 'up']);
      }
    }
    expect((await check()).code).toBe(0);
    expect((await call({ command: 'DEL', containerId: 'vb-chk', netns: nsPath(pod), ifname: 'eth0', stdin: conf() })).code).toBe(0);
  });

  describe.skipIf(requireOrSkip('CHECK after sbr', { [`the reference sbr plugin in ${CNI_REF_DIR}`]: haveRefPlugins('sbr') }))('chained before the reference sbr', () => {
    it('CHECK tolerates the reference sbr plugin chained after it moving the pod routes to its own table, and still names a missing one', async () => {
      const pod = addNetns('vbsbr');
      // Debian's sbr speaks up to 1.0.0.
      const v10 = conf({ cniVersion: '1.0.0' });
      const added = await add('vb-sbr', pod, v10);
      expect(added.code, added.stdout + added.stderr).toBe(0);
      const sbrConf = { cniVersion: '1.0.0', name: netName, type: 'sbr', prevResult: added.json };
      const sbr = await call({ command: 'ADD', containerId: 'vb-sbr', netns: nsPath(pod), ifname: 'eth0', stdin: sbrConf, bin: refPlugin('sbr') });
      expect(sbr.code, sbr.stdout + sbr.stderr).toBe(0);
      // sbr moved the routes out of the main table (the result it passes on lists them unchanged).
      expect(inNs(pod, 'ip', ['route', 'show', 'table', 'main'])).not.toContain('10.244.0.0/16');
      expect(inNs(pod, 'ip', ['route', 'show', 'table', 'all'])).toMatch(/10\.244\.0\.0\/16 via 10\.244\.1\.1 dev eth0 table \d+/);
      const prevResult = sbr.json;
      const check = () => call({ command: 'CHECK', containerId: 'vb-sbr', netns: nsPath(pod), ifname: 'eth0', stdin: { ...v10, prevResult } });
      const ok = await check();
      expect(ok.code, ok.stdout).toBe(0);
      const table = /10\.244\.0\.0\/16 via 10\.244\.1\.1 dev eth0 table (\d+)/.exec(inNs(pod, 'ip', ['route', 'show', 'table', 'all']))![1]!;
      execFileSync('ip', ['-n', pod, 'route', 'del', '10.244.0.0/16', 'via', '10.244.1.1', 'table', table]);
      const bad = await check();
      expect(bad.code).toBe(1);
      expect(String(bad.json?.msg)).toContain('route 10.244.0.0/16 via 10.244.1.1 missing');
      expect((await call({ command: 'DEL', containerId: 'vb-sbr', netns: nsPath(pod), ifname: 'eth0', stdin: sbrConf, bin: refPlugin('sbr') })).code).toBe(0);
      expect((await call({ command: 'DEL', containerId: 'vb-sbr', netns: nsPath(pod), ifname: 'eth0', stdin: v10 })).code).toBe(0);
    });
  });

  it('DEL and GC still clean up after ipam.ranges was edited into ranges no ADD accepts (they need no ranges)', async () => {
    const pod = addNetns('vbedit');
    const added = await add('vb-edit', pod);
    expect(added.code, added.stdout + added.stderr).toBe(0);
    const leased = () => readdirSync(join(dataDir, netName)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    expect(leased()).toHaveLength(1);
    const edited = conf({ ipam: { ranges: [[{ subnet: '10.244.1.0/24', rangeStart: '10.245.0.1' }]] } });
    expect((await add('vb-edit2', addNetns('vbedit2'), edited)).json?.code).toBe(7);
    const out = await call({ command: 'DEL', containerId: 'vb-edit', netns: nsPath(pod), ifname: 'eth0', stdin: edited });
    expect(out.code, out.stdout).toBe(0);
    expect(leased()).toEqual([]);
    expect(ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname)).toEqual(['lo']);
    // GC of a stale attachment under the same edited config.
    expect((await add('vb-edit3', addNetns('vbedit3'))).code).toBe(0);
    expect(leased()).toHaveLength(1);
    const gc = await call({ command: 'GC', stdin: { ...edited, 'cni.dev/valid-attachments': [] } });
    expect(gc.code, gc.stdout).toBe(0);
    expect(leased()).toEqual([]);
  });

  it('two attachments whose derived host veth names collide: the second ADD and its DEL leave the first pod attached', async () => {
    // hostVethName keeps 32 bits of a digest: these two container IDs share "vethf179b43f" for eth0.
    const [first, second] = ['col6777', 'col70256'];
    const podA = addNetns('vbcola');
    const podB = addNetns('vbcolb');
    const a = await add(first, podA);
    expect(a.code, a.stdout + a.stderr).toBe(0);
    const hostVeth = (a.json?.interfaces as { name: string }[])[1]!.name;
    expect(hostVeth).toBe('vethf179b43f');
    const reaches = () => spawnSync('ip', ['netns', 'exec', podA, 'ping', '-c1', '-W2', '10.244.1.1']).status === 0;
    expect(reaches()).toBe(true);
    const b = await add(second, podB);
    expect(b.code, b.stdout).toBe(1);
    expect(String(b.json?.msg)).toContain(hostVeth);
    // The refused ADD leased nothing, so its retry is still another pod's collision, not a leftover of its own.
    const retryB = await add(second, podB);
    expect(retryB.code, retryB.stdout).toBe(1);
    expect(leasesOf(second)).toEqual([]);
    // The runtime follows a failed ADD with a DEL.
    const delB = await call({ command: 'DEL', containerId: second, netns: nsPath(podB), ifname: 'eth0', stdin: conf() });
    expect(delB.code, delB.stdout).toBe(0);
    // containerd's second DEL (RemovePodSandbox) comes without a netns.
    const againB = await call({ command: 'DEL', containerId: second, netns: '', ifname: 'eth0', stdin: conf() });
    expect(againB.code, againB.stdout).toBe(0);
    expect(ipJson<{ ifname: string }[]>(podA, ['link', 'show']).map((l) => l.ifname)).toContain('eth0');
    expect(reaches()).toBe(true);
    const check = await call({ command: 'CHECK', containerId: first, netns: nsPath(podA), ifname: 'eth0', stdin: conf({ prevResult: a.json }) });
    expect(check.code, check.stdout).toBe(0);
    expect((await call({ command: 'DEL', containerId: first, netns: nsPath(podA), ifname: 'eth0', stdin: conf() })).code).toBe(0);
    expect(ipJson<{ ifname: string }[]>(node, ['link', 'show']).map((l) => l.ifname)).not.toContain(hostVeth);
  });

  it('ADD retried with the same container ID into a new netns while the old one is still pinned moves the attachment there, keeping its one lease', async () => {
    const [podA, podB] = [addNetns('vbrea'), addNetns('vbreb')];
    const first = await add('vb-re', podA);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const hostVeth = (first.json?.interfaces as { name: string }[])[1]!.name;
    const address = (first.json?.ips as { address: string }[])[0]!.address;
    const again = await add('vb-re', podB);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect((again.json?.interfaces as { name: string }[])[1]!.name).toBe(hostVeth);
    expect(leasesOf('vb-re')).toHaveLength(1);
    // The old pair went with its leftover host end; the new one's peer is eth0 in B, carrying the lease.
    expect(ipJson<{ ifname: string }[]>(podA, ['link', 'show']).map((l) => l.ifname)).toEqual(['lo']);
    expect(inNs(podB, 'ip', ['-o', 'addr', 'show', 'dev', 'eth0'])).toContain(address);
    const peer = ipJson<{ ifname: string; link_index?: number }[]>(podB, ['link', 'show', 'eth0'])[0]!;
    const host = ipJson<{ ifindex: number; master?: string }[]>(node, ['link', 'show', hostVeth])[0]!;
    expect(peer.link_index).toBe(host.ifindex);
    expect(host.master).toBe('cni0');
    expect(spawnSync('ip', ['netns', 'exec', podB, 'ping', '-c1', '-W2', '10.244.1.1']).status).toBe(0);
    expect((await call({ command: 'DEL', containerId: 'vb-re', netns: nsPath(podB), ifname: 'eth0', stdin: conf() })).code).toBe(0);
    expect(leasesOf('vb-re')).toEqual([]);
    expect(ipJson<{ ifname: string }[]>(node, ['link', 'show']).map((l) => l.ifname)).not.toContain(hostVeth);
  });

  it('GC of a stale attachment whose derived host veth name a live one shares keeps the live pod attached', async () => {
    const [live, stale] = ['col6777', 'col70256'];
    const pod = addNetns('vbgccol');
    const a = await add(live, pod);
    expect(a.code, a.stdout + a.stderr).toBe(0);
    // The stale attachment's netns (and so its veth) is gone; only its lease is left.
    writeFileSync(join(dataDir, netName, '10.244.1.200'), `${stale}\r\neth0`, { mode: 0o600 });
    const gc = await call({ command: 'GC', stdin: conf({ 'cni.dev/valid-attachments': [{ containerID: live, ifname: 'eth0' }] }) });
    expect(gc.code, gc.stdout).toBe(0);
    expect(readdirSync(join(dataDir, netName))).not.toContain('10.244.1.200');
    expect(ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname)).toContain('eth0');
    expect(spawnSync('ip', ['netns', 'exec', pod, 'ping', '-c1', '-W2', '10.244.1.1']).status).toBe(0);
    expect((await call({ command: 'DEL', containerId: live, netns: nsPath(pod), ifname: 'eth0', stdin: conf() })).code).toBe(0);
  });

  it('DEL removes the host veth and the lease when the pod interface was renamed inside its netns', async () => {
    const pod = addNetns('vbren');
    const added = await add('vb-ren', pod);
    expect(added.code, added.stdout + added.stderr).toBe(0);
    const hostVeth = (added.json?.interfaces as { name: string }[])[1]!.name;
    const leased = () => leasesOf('vb-ren');
    expect(leased()).toHaveLength(1);
    execFileSync('ip', ['-n', pod, 'link', 'set', 'eth0', 'down']);
    execFileSync('ip', ['-n', pod, 'link', 'set', 'eth0', 'name', 'foo']);
    const out = await call({ command: 'DEL', containerId: 'vb-ren', netns: nsPath(pod), ifname: 'eth0', stdin: conf() });
    expect(out.code, out.stdout).toBe(0);
    expect(leased()).toEqual([]);
    // Left on cni0, it would still answer for an address IPAM now hands to the next pod.
    expect(ipJson<{ ifname: string }[]>(node, ['link', 'show']).map((l) => l.ifname)).not.toContain(hostVeth);
    expect(ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname)).toEqual(['lo']);
  });

  it('STATUS on an invalid subnet file says what is wrong with it, not that it was never written', async () => {
    const badFile = join(dir, 'bad.env');
    writeFileSync(badFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.99.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    const out = await status(conf({ subnetFile: badFile }));
    expect(out.json?.code, out.stdout).toBe(50);
    expect(String(out.json?.msg)).toContain('is not inside FLANNEL_NETWORK');
    expect(String(out.json?.details ?? '')).not.toContain('has not written');
    const missing = await status(conf({ subnetFile: join(dir, 'none.env') }));
    expect(missing.json?.code).toBe(50);
    expect(String(missing.json?.details)).toContain('tsflanneld');
  });
});
