// The real tsflannel binary on a node netns when the agent rewrites the
// subnet file under existing pods: a raised FLANNEL_MTU, and a new
// FLANNEL_SUBNET (the node's lease or podCIDR changed).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { callPlugin } from '../helpers/plugin.js';
import { requireOrSkip } from '../helpers/require.js';

interface IpLink { ifname: string; mtu: number }

describe.skipIf(requireOrSkip('plugin-day2', { root: isRoot }))('tsflannel plugin when the node subnet file changes', () => {
  let node = '';
  let dir = '';
  let subnetFile = '';
  let dataDir = '';
  const netName = `tsfd2net${process.pid}`;
  const conf = () => ({ cniVersion: '1.0.0', name: netName, type: 'tsflannel', subnetFile, dataDir });
  const writeEnv = (subnet: string, mtu: number) =>
    writeFileSync(subnetFile, `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${subnet}\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=true\n`);
  const cni = (command: 'ADD' | 'DEL', id: string, podNs: string) =>
    callPlugin({ nodeNs: node, command, containerId: id, netns: nsPath(podNs), ifname: 'eth0', stdin: conf() });
  const mtu = (ns: string, dev: string) => ipJson<IpLink[]>(ns, ['link', 'show', dev])[0]!.mtu;
  const leases = () => readdirSync(join(dataDir, netName)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)).sort();
  const podNs = new Map<string, string>();
  const leasedIpOf = (id: string) =>
    readdirSync(join(dataDir, netName)).find((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f) && readFileSync(join(dataDir, netName, f), 'utf8').startsWith(`${id}\r\n`))!;
  const bridgeAddrs = () => inNs(node, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'cni0']);

  beforeAll(() => {
    node = addNetns('d2node');
    dir = mkdtempSync(join(tmpdir(), 'tsf-plugin-d2-'));
    subnetFile = join(dir, 'subnet.env');
    dataDir = join(dir, 'networks');
    writeEnv('10.244.1.1/24', 1450);
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('raises cni0 to a raised FLANNEL_MTU at the next ADD; the earlier pod keeps its MTU and still reaches the new one', async () => {
    const p1 = addNetns('d2p1');
    podNs.set('old', p1);
    expect((await cni('ADD', 'old', p1)).code).toBe(0);
    expect(mtu(node, 'cni0')).toBe(1450);
    writeEnv('10.244.1.1/24', 8950);
    const p2 = addNetns('d2p2');
    podNs.set('new', p2);
    const out = await cni('ADD', 'new', p2);
    expect(out.code, out.stdout).toBe(0);
    expect(mtu(node, 'cni0')).toBe(8950);
    expect(mtu(p2, 'eth0')).toBe(8950);
    expect(mtu(p1, 'eth0')).toBe(1450);
    const ip2 = (out.json!.ips as { address: string }[])[0]!.address.split('/')[0]!;
    expect(inNs(p1, 'ping', ['-c1', '-W2', ip2])).toContain('1 received');
    // Full-size frames of the new MTU cross the bridge between the node and the new pod.
    expect(inNs(node, 'ping', ['-c1', '-W2', '-M', 'do', '-s', String(8950 - 28), ip2])).toContain('1 received');
    // The old pod is routed to at its own MTU: too large a packet gets "fragmentation
    // needed" (here a local error) instead of vanishing at the bridge port.
    const ip1 = leasedIpOf('old');
    expect(inNs(node, 'ip', ['route', 'show', `${ip1}/32`])).toContain('mtu 1450');
    expect(inNs(node, 'ip', ['route', 'show', `${ip2}/32`])).toBe('');
    const big = spawnSync('ip', ['netns', 'exec', node, 'ping', '-c1', '-W1', '-M', 'do', '-s', '2000', ip1], { encoding: 'utf8' });
    expect(big.stdout + big.stderr).toMatch(/mtu ?= ?1450/);
    expect(inNs(node, 'ping', ['-c1', '-W2', '-M', 'do', '-s', String(1450 - 28), ip1])).toContain('1 received');
  });

  it('a new FLANNEL_SUBNET: ADD names the pods of the old subnet and changes nothing, then moves cni0 once they are deleted', async () => {
    writeEnv('10.244.7.1/24', 8950);
    const before = leases();
    const p3 = addNetns('d2p3');
    const refused = await cni('ADD', 'refused', p3);
    expect(refused.code).not.toBe(0);
    const msg = String(refused.json?.msg);
    expect(msg).toContain('10.244.7.1/24');
    expect(msg).toContain('10.244.1.1/24');
    expect(msg).toContain('container old');
    expect(msg).toContain('container new');
    expect(String(refused.json?.details)).toContain('delete those pods');
    expect(leases()).toEqual(before);
    expect(bridgeAddrs()).toContain('10.244.1.1/24');

    const ip1 = leasedIpOf('old');
    for (const [id, ns] of podNs) expect((await cni('DEL', id, ns)).code).toBe(0);
    // The old pod's MTU route went with it.
    expect(inNs(node, 'ip', ['route', 'show', `${ip1}/32`])).toBe('');
    const out = await cni('ADD', 'moved', p3);
    expect(out.code, out.stdout).toBe(0);
    expect((out.json!.ips as { address: string }[])[0]!.address).toMatch(/^10\.244\.7\.\d+\/24$/);
    expect(bridgeAddrs()).toContain('10.244.7.1/24');
    expect(bridgeAddrs()).not.toContain('10.244.1.1/24');
    expect(inNs(p3, 'ping', ['-c1', '-W2', '10.244.7.1'])).toContain('1 received');
  });
});
