// The real tsflannel binary on a node netns, checked verb by verb against
// what the CNI spec asks of it (STATUS, CHECK, GC, DEL) where a runtime
// would otherwise act on a wrong answer: a node reported ready on which
// every ADD fails, a CHECK that passes a broken attachment, a cleanup that
// cannot finish.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, isRoot, nsPath } from '../helpers/netns.js';
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
