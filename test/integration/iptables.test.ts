// flannel's iptables rules installed inside a node netns (never the root
// namespace): exact rule text, idempotence, repair in order, removal, and
// real traffic showing what is masqueraded and what keeps its source.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { IptablesManager, IptablesTrafficManager, ruleText, type IptablesRunner } from '../../src/daemon/traffic/iptables.js';
import { cleanupAll, inNs, isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { buildMasqTopology, seenSource, type MasqTopology } from '../helpers/masq-topology.js';

const NETWORK = '10.244.0.0/16';
const OWN = '10.244.1.0/24';





/** iptables -S output of our chains and jumps, for exact comparison. */
function flannelLines(ns: string, table: 'nat' | 'filter'): string[] {
  return inNs(ns, 'iptables', ['-t', table, '-S']).split('\n').filter((l) => l.includes('FLANNEL') || l.includes('flanneld'));
}

describe.skipIf(requireOrSkip('iptables', { root: isRoot }))('iptables rules in a node netns', () => {
  let node = '';
  let pod = '';
  let outside = '';
  let topo: MasqTopology | undefined;

  // the production runner (execFile, no shell) pointed into the node netns
  const manager = (subnet = OWN) =>
    new IptablesManager({ network: NETWORK, subnet, ipMasq: true, binary: ['ip', 'netns', 'exec', node, 'iptables'] });

  beforeAll(async () => {
    topo = await buildMasqTopology('ipt');
    ({ node, pod, outside } = topo);
    // Docker-style DROP policy, so forwarding works only through FLANNEL-FWD
    inNs(node, 'iptables', ['-P', 'FORWARD', 'DROP']);
  });
  afterAll(() => {
    topo?.stop();
    cleanupAll();
  });

  it('forwards nothing before the rules exist', () => {
    expect(seenSource(pod, '192.168.99.2')).toBeNull();
  });

  it('installs flannel\'s exact rule set', async () => {
    const installed = await manager().ensure();
    expect(installed).toHaveLength(10);
    expect(flannelLines(node, 'nat')).toEqual([
      '-N FLANNEL-POSTRTG',
      '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
      '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    ]);
    expect(flannelLines(node, 'filter')).toEqual([
      '-N FLANNEL-FWD',
      '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      '-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    ]);
  });

  it('masquerades pods leaving the network and keeps sources inside it', () => {
    expect(seenSource(pod, '192.168.99.2')).toBe('192.168.99.1'); // pod → outside: the node's address
    expect(seenSource(pod, '10.244.2.2')).toBe('10.244.1.2'); // pod → pod on another node: unchanged
    expect(seenSource(outside, '10.244.1.2')).toBe('192.168.99.2'); // outside → our pod: client kept
    expect(seenSource(outside, '10.244.2.2')).toBe('10.244.2.1'); // outside → a remote pod: masqueraded
  });

  it('adds nothing on a second ensure, and waits for the xtables lock on every call', async () => {
    const before = [...flannelLines(node, 'nat'), ...flannelLines(node, 'filter')];
    const calls: string[][] = [];
    const recording: IptablesRunner = async (args) => {
      calls.push(args);
      const res = spawnSync('ip', ['netns', 'exec', node, 'iptables', ...args], { encoding: 'utf8' });
      return { code: res.status ?? -1, stdout: res.stdout, stderr: res.stderr };
    };
    const m = new IptablesManager({ network: NETWORK, subnet: OWN, ipMasq: true, runner: recording });
    expect(await m.ensure()).toEqual([]);
    expect(calls.filter((a) => a.includes('-A') || a.includes('-I') || a.includes('-N'))).toEqual([]);
    for (const args of calls.filter((a) => a[0] !== '--version')) expect(args.slice(0, 2)).toEqual(['-w', '5']);
    expect(await manager().listMissing()).toEqual([]);
    expect([...flannelLines(node, 'nat'), ...flannelLines(node, 'filter')]).toEqual(before);
  });

  it('names rules deleted by hand and puts them back in their place', async () => {
    const before = [...flannelLines(node, 'nat'), ...flannelLines(node, 'filter')];
    inNs(node, 'iptables', ['-t', 'nat', '-D', 'FLANNEL-POSTRTG', '-s', OWN, '-d', NETWORK, '-m', 'comment', '--comment', 'flanneld masq', '-j', 'RETURN']);
    inNs(node, 'iptables', ['-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
    const m = manager();
    expect((await m.listMissing()).map(ruleText)).toEqual([
      '-t filter -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-t nat -A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
    ]);
    expect(seenSource(pod, '192.168.99.2')).toBeNull(); // forwarding is blocked without the jump
    expect((await m.ensure()).map(ruleText)).toHaveLength(2);
    expect([...flannelLines(node, 'nat'), ...flannelLines(node, 'filter')]).toEqual(before);
    expect(seenSource(pod, '10.244.2.2')).toBe('10.244.1.2');
  });

  it('puts a RETURN moved behind the MASQUERADEs (deleted and appended again by hand) back in its place: pod to pod keeps its source', async () => {
    await manager().ensure();
    const before = flannelLines(node, 'nat');
    const ownToNet = ['-s', OWN, '-d', NETWORK, '-m', 'comment', '--comment', 'flanneld masq', '-j', 'RETURN'];
    inNs(node, 'iptables', ['-t', 'nat', '-D', 'FLANNEL-POSTRTG', ...ownToNet]);
    inNs(node, 'iptables', ['-t', 'nat', '-A', 'FLANNEL-POSTRTG', ...ownToNet]);
    expect(seenSource(pod, '10.244.2.2')).toBe('10.244.2.1'); // masqueraded now: the RETURN comes too late
    expect((await manager().ensure()).length).toBeGreaterThan(0);
    expect(flannelLines(node, 'nat')).toEqual(before);
    expect(seenSource(pod, '10.244.2.2')).toBe('10.244.1.2');
    expect(await manager().ensure()).toEqual([]);
  });

  it('rebuilds its chain when rules of a previous subnet are left in it', async () => {
    expect((await manager('10.244.5.0/24').ensure()).length).toBeGreaterThan(0);
    const nat = flannelLines(node, 'nat');
    expect(nat.filter((l) => l.includes('10.244.1.0/24'))).toEqual([]);
    expect(nat.filter((l) => l.includes('10.244.5.0/24'))).toHaveLength(3);
    expect(nat.filter((l) => l.startsWith('-A FLANNEL-POSTRTG'))).toHaveLength(6);
    expect((await manager().ensure()).length).toBe(6); // and back
    expect(flannelLines(node, 'nat').filter((l) => l.includes('10.244.5.0/24'))).toEqual([]);
  });

  it('a rebuild (a previous subnet\'s rules in the chain) never leaves the chain without its MASQUERADE between two iptables calls', async () => {
    await manager().ensure();
    const masqPresent = () => {
      const res = spawnSync('ip', ['netns', 'exec', node, 'iptables', '-t', 'nat', '-S', 'FLANNEL-POSTRTG'], { encoding: 'utf8' });
      return res.status !== 0 || res.stdout.includes('-s 10.244.0.0/16 ! -d 224.0.0.0/4');
    };
    let gaps = 0;
    let calls = 0;
    // the production runners, each call followed by a look at the kernel
    const observed = (tool: string): IptablesRunner => async (args, input) => {
      const res = spawnSync('ip', ['netns', 'exec', node, tool, ...args], { encoding: 'utf8', input: input ?? '' });
      calls++;
      if (!masqPresent()) gaps++;
      return { code: res.status ?? -1, stdout: res.stdout, stderr: res.stderr };
    };
    const m = new IptablesManager({ network: NETWORK, subnet: '10.244.5.0/24', ipMasq: true, runner: observed('iptables'), restoreRunner: observed('iptables-restore') });
    expect((await m.ensure()).length).toBeGreaterThan(0);
    expect(flannelLines(node, 'nat').filter((l) => l.includes('10.244.5.0/24'))).toHaveLength(3);
    expect(flannelLines(node, 'nat').filter((l) => l.startsWith('-A FLANNEL-POSTRTG'))).toHaveLength(6);
    expect(calls).toBeGreaterThan(0);
    expect(gaps).toBe(0);
    expect((await manager().ensure()).length).toBe(6); // and back
  });

  it('remove() leaves no FLANNEL chains or jumps, and may run twice', async () => {
    await manager().remove();
    expect(flannelLines(node, 'nat')).toEqual([]);
    expect(flannelLines(node, 'filter')).toEqual([]);
    await manager().remove();
    expect((await manager().listMissing()).length).toBe(10);
    expect(seenSource(pod, '192.168.99.2')).toBeNull();
  });

  it('through the traffic-manager seam: --ip-masq-fully-random-disable drops --random-fully, cleanUp() removes everything', async () => {
    const m = new IptablesTrafficManager({ network: NETWORK, subnet: OWN, ipMasq: true, forwardRules: true, randomFully: false }, { netns: node });
    expect(await m.ensure()).toHaveLength(10);
    const masq = flannelLines(node, 'nat').filter((l) => l.includes('MASQUERADE'));
    expect(masq).toHaveLength(2);
    for (const l of masq) expect(l).toMatch(/-j MASQUERADE$/);
    expect(await m.check()).toEqual([]);
    expect(seenSource(pod, '192.168.99.2')).toBe('192.168.99.1');
    await m.cleanUp();
    expect([...flannelLines(node, 'nat'), ...flannelLines(node, 'filter')]).toEqual([]);
  });

  it('a restart without --ip-masq removes the FLANNEL-POSTRTG an earlier run left: pods leave with their own address again', async () => {
    const on = { network: NETWORK, subnet: OWN, ipMasq: true, forwardRules: true, randomFully: true };
    await new IptablesTrafficManager(on, { netns: node }).ensure();
    expect(seenSource(pod, '192.168.99.2')).toBe('192.168.99.1');
    const off = new IptablesTrafficManager({ ...on, ipMasq: false }, { netns: node });
    await off.ensure();
    expect(flannelLines(node, 'nat')).toEqual([]);
    expect(flannelLines(node, 'filter')).toHaveLength(4);
    expect(seenSource(pod, '192.168.99.2')).toBe('10.244.1.2');
    expect(await off.check()).toEqual([]);
    expect(await off.ensure()).toEqual([]);
  });

  it('with --ip-masq and --iptables-forward-rules both off, an earlier run\'s chains and jumps are removed too', async () => {
    const on = { network: NETWORK, subnet: OWN, ipMasq: true, forwardRules: true, randomFully: true };
    await new IptablesTrafficManager(on, { netns: node }).ensure();
    expect(seenSource(pod, '192.168.99.2')).toBe('192.168.99.1');
    await new IptablesTrafficManager({ ...on, ipMasq: false, forwardRules: false }, { netns: node }).ensure();
    expect([...flannelLines(node, 'nat'), ...flannelLines(node, 'filter')]).toEqual([]);
    expect(seenSource(pod, '192.168.99.2')).toBeNull(); // FORWARD policy DROP, and no FLANNEL-FWD to accept
  });
});
