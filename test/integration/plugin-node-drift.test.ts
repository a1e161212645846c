// The node side changed by hand between two ADDs: cni0 deleted (and so
// recreated with another ifindex), its gateway addresses removed, set down
// or to another MTU, IP forwarding turned off. An ADD reads the bridge, its
// addresses and the forwarding sysctls in one shim call (pod.inspect) and
// takes the node-side steps only when something differs, so each of these
// must be seen and put right by the next ADD, on the standalone plugin and
// on the agent-served path (a resident process, where a cache would hide
// them). Dual-stack, so both families' gateways and forwarding are covered.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { callPlugin, DUAL_ENV, type CniOutcome } from '../helpers/plugin.js';
import { forwarderBuilt, startCniAgent, STANDALONE, VIA_AGENT, type CniPath, type RunningAgent } from '../helpers/cni-agent.js';

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  master?: string;
  operstate: string;
  flags: string[];
}

const suites: CniPath[] = [STANDALONE, VIA_AGENT];
const needs = { root: isRoot, 'the forwarder (scripts/build-forward.sh)': forwarderBuilt };

describe.skipIf(requireOrSkip('plugin node drift', needs)).each(suites)('an ADD after the node side was changed by hand: $name', (path) => {
  let node = '';
  let dir = '';
  let agent: RunningAgent | undefined;
  const netName = `tsfdrift${process.pid}`;
  const conf = () => ({
    cniVersion: '1.1.0',
    name: netName,
    type: 'tsflannel',
    subnetFile: join(dir, 'subnet.env'),
    dataDir: join(dir, 'networks'),
    agentSocket: join(dir, 'run', 'cni.sock'),
  });
  const add = (id: string, podNs: string): Promise<CniOutcome> =>
    callPlugin({ nodeNs: node, bin: path.bin, extraEnv: path.env, command: 'ADD', containerId: id, netns: nsPath(podNs), ifname: 'eth0', stdin: conf() });
  const link = (ns: string, dev: string) => ipJson<IpLink[]>(ns, ['link', 'show', 'dev', dev])[0]!;
  const cni0Addrs = () => inNs(node, 'ip', ['-o', 'addr', 'show', 'dev', 'cni0', 'scope', 'global']);
  const sysctl = (key: string) => inNs(node, 'sysctl', ['-n', key]).trim();
  const hostVethOf = (podNs: string) => {
    // The pod end's peer index (eth0@ifN) names the host end in the node.
    const peer = ipJson<{ link_index: number }[]>(podNs, ['link', 'show', 'dev', 'eth0'])[0]!.link_index;
    return ipJson<IpLink[]>(node, ['link', 'show', 'type', 'veth']).find((l) => l.ifindex === peer)!;
  };
  const reachesGateways = (podNs: string) => {
    expect(inNs(podNs, 'ping', ['-c1', '-W2', '10.244.1.1'])).toContain('1 received');
    expect(inNs(podNs, 'ping', ['-6', '-c1', '-W2', 'fd00:10:244:1::1'])).toContain('1 received');
  };
  const ok = (out: CniOutcome) => expect(out.code, out.stdout + out.stderr).toBe(0);

  beforeAll(async () => {
    node = addNetns(path.agent ? 'drag' : 'drst');
    inNs(node, 'ip', ['link', 'set', 'lo', 'up']);
    dir = mkdtempSync(join(tmpdir(), 'tsf-drift-'));
    writeFileSync(join(dir, 'subnet.env'), DUAL_ENV);
    if (path.agent) agent = await startCniAgent({ socket: conf().agentSocket, nodeNs: node });
  }, 60_000);
  afterAll(async () => {
    await agent?.stop();
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('cni0 deleted between two ADDs: the next ADD makes a new cni0 with both gateways, and a retried ADD of the first pod joins it', async () => {
    const a = addNetns('dra');
    ok(await add('drift-a', a));
    const old = link(node, 'cni0');
    inNs(node, 'ip', ['link', 'delete', 'cni0']);
    const b = addNetns('drb');
    ok(await add('drift-b', b));
    const now = link(node, 'cni0');
    expect(now.ifindex).not.toBe(old.ifindex);
    expect(now.mtu).toBe(1450);
    expect(cni0Addrs()).toContain('10.244.1.1/24');
    expect(cni0Addrs()).toContain('fd00:10:244:1::1/64');
    expect(hostVethOf(b).master).toBe('cni0');
    reachesGateways(b);
    // Pod a's host end lost its master with the old bridge: its retried ADD
    // does not take the attachment as whole, and rebuilds it on the new cni0
    // with the address its lease holds.
    const again = await add('drift-a', a);
    ok(again);
    expect((again.json!.ips as { address: string }[]).map((ip) => ip.address)).toEqual(['10.244.1.2/24', 'fd00:10:244:1::2/64']);
    expect(hostVethOf(a).master).toBe('cni0');
    reachesGateways(a);
  });

  it('cni0 stripped of its gateways, set down and to another MTU: the next ADD puts each back', async () => {
    inNs(node, 'ip', ['addr', 'del', '10.244.1.1/24', 'dev', 'cni0']);
    inNs(node, 'ip', ['addr', 'del', 'fd00:10:244:1::1/64', 'dev', 'cni0']);
    expect(cni0Addrs()).toBe('');
    const c = addNetns('drc');
    ok(await add('drift-c', c));
    expect(cni0Addrs()).toContain('10.244.1.1/24');
    expect(cni0Addrs()).toContain('fd00:10:244:1::1/64');
    reachesGateways(c);

    inNs(node, 'ip', ['link', 'set', 'cni0', 'down', 'mtu', '1400']);
    const d = addNetns('drd');
    ok(await add('drift-d', d));
    const br = link(node, 'cni0');
    expect(br.flags).toContain('UP');
    expect(br.mtu).toBe(1450);
    reachesGateways(d);
  });

  it('IPv4 and IPv6 forwarding turned off between two ADDs: the next ADD turns both on again', async () => {
    inNs(node, 'sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
    inNs(node, 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=0']);
    const e = addNetns('dre');
    ok(await add('drift-e', e));
    expect(sysctl('net.ipv4.ip_forward')).toBe('1');
    expect(sysctl('net.ipv6.conf.all.forwarding')).toBe('1');
    reachesGateways(e);
  });
});
