// The traffic rules of a dual-stack node, inside node namespaces: one rule
// set per family, IPv6 through ip6tables (FLANNEL-FWD, FLANNEL-POSTRTG) or
// nftables (`ip6 flannel-ipv6`), with ff00::/8 never masqueraded; the same
// masquerade decisions as IPv4 proven with real IPv6 connections; hand-made
// damage repaired; clean-up removing both families; the IPv6 blackhole.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { cleanUpFamily, cleanUpOtherMode, createTrafficManager, type TrafficManager, type TrafficRules } from '../../src/daemon/traffic/index.js';
import { addNetns, cleanupAll, inNs, isRoot } from '../helpers/netns.js';
import { ensureBlackholeRoute } from '../../src/daemon/traffic/blackhole.js';
import { requireOrSkip } from '../helpers/require.js';
import { AGENT_BIN } from '../helpers/cni-agent.js';
import { buildMasqTopology, seenSource, type MasqTopology } from '../helpers/masq-topology.js';

const V4: TrafficRules = { network: '10.244.0.0/16', subnet: '10.244.1.0/24', ipMasq: true, forwardRules: true, randomFully: true };
const V6: TrafficRules = { network: 'fd00:10:244::/56', subnet: 'fd00:10:244:1::/64', ipMasq: true, forwardRules: true, randomFully: true };
const haveNft = existsSync('/usr/sbin/nft') || existsSync('/sbin/nft');
const haveIp6tables = spawnSync('ip6tables', ['--version']).status === 0;

/** Both families' decisions: pod → outside masqueraded, pod → pod kept, outside → our pod kept, outside → remote pod masqueraded. */
function decisions(t: MasqTopology): Record<string, string | null> {
  return {
    'pod → outside (v6)': seenSource(t.pod, 'fd00:99::2'),
    'pod → remote pod (v6)': seenSource(t.pod, 'fd00:10:244:2::2'),
    'outside → our pod (v6)': seenSource(t.outside, 'fd00:10:244:1::2'),
    'outside → remote pod (v6)': seenSource(t.outside, 'fd00:10:244:2::2'),
    'pod → outside (v4)': seenSource(t.pod, '192.168.99.2'),
    'pod → remote pod (v4)': seenSource(t.pod, '10.244.2.2'),
  };
}

const EXPECTED = {
  'pod → outside (v6)': 'fd00:99::1',
  'pod → remote pod (v6)': 'fd00:10:244:1::2',
  'outside → our pod (v6)': 'fd00:99::2',
  'outside → remote pod (v6)': 'fd00:10:244:2::1',
  'pod → outside (v4)': '192.168.99.1',
  'pod → remote pod (v4)': '10.244.1.2',
};

function ip6tablesRules(ns: string, table: string): string[] {
  return inNs(ns, 'ip6tables', ['-t', table, '-S']).split('\n').filter((l) => l.includes('FLANNEL') || l.includes('flanneld'));
}

describe.skipIf(requireOrSkip('IPv6 traffic rules (iptables mode)', { root: isRoot, ip6tables: haveIp6tables }))('dual-stack iptables rules in a node netns', () => {
  let t: MasqTopology | undefined;
  let managers: TrafficManager[] = [];

  beforeAll(async () => {
    t = await buildMasqTopology('t6i', { ipv6: true });
    // Docker-style DROP policy in both families: forwarding only through FLANNEL-FWD
    inNs(t.node, 'iptables', ['-P', 'FORWARD', 'DROP']);
    inNs(t.node, 'ip6tables', ['-P', 'FORWARD', 'DROP']);
  });
  afterAll(() => {
    t?.stop();
    cleanupAll();
  });

  it('forwards no IPv6 before the rules exist', () => {
    expect(seenSource(t!.pod, 'fd00:99::2')).toBeNull();
  });

  it('installs flannel\'s rule set through ip6tables, with ff00::/8 as the multicast exception', async () => {
    managers = [V4, V6].map((r) => createTrafficManager('iptables', r, { netns: t!.node }));
    for (const m of managers) expect((await m.ensure()).length).toBeGreaterThan(0);
    expect(ip6tablesRules(t!.node, 'nat')).toEqual([
      '-N FLANNEL-POSTRTG',
      '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
      '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s fd00:10:244:1::/64 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244:1::/64 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
      '-A FLANNEL-POSTRTG ! -s fd00:10:244::/56 -d fd00:10:244::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    ]);
    expect(ip6tablesRules(t!.node, 'filter')).toEqual([
      '-N FLANNEL-FWD',
      '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      '-A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT',
      '-A FLANNEL-FWD -d fd00:10:244::/56 -m comment --comment "flanneld forward" -j ACCEPT',
    ]);
    // the IPv4 rules are untouched by the IPv6 set, and the other way round
    expect(inNs(t!.node, 'iptables', ['-t', 'nat', '-S', 'FLANNEL-POSTRTG'])).toContain('-s 10.244.0.0/16 ! -d 224.0.0.0/4');
  });

  it('takes the same masquerade decisions for IPv6 as for IPv4', () => {
    expect(decisions(t!)).toEqual(EXPECTED);
  });

  it('puts back an IPv6 rule deleted by hand, and only reports that one', async () => {
    inNs(t!.node, 'ip6tables', ['-t', 'nat', '-D', 'FLANNEL-POSTRTG', '-s', 'fd00:10:244::/56', '!', '-d', 'ff00::/8', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'MASQUERADE', '--random-fully']);
    expect(seenSource(t!.pod, 'fd00:99::2')).toBe('fd00:10:244:1::2'); // leaks the pod address now
    expect(await managers[1]!.check()).toEqual(['-t nat -A FLANNEL-POSTRTG -s fd00:10:244::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully']);
    expect(await managers[0]!.ensure()).toEqual([]);
    expect((await managers[1]!.ensure()).length).toBe(1);
    expect(decisions(t!)).toEqual(EXPECTED);
  });

  it('a new IPv6 subnet (an agent restarted with another lease) replaces the old subnet\'s rules through ip6tables-restore', async () => {
    const moved = createTrafficManager('iptables', { ...V6, subnet: 'fd00:10:244:5::/64' }, { netns: t!.node });
    expect((await moved.ensure()).length).toBe(6);
    const nat = ip6tablesRules(t!.node, 'nat');
    expect(nat.filter((l) => l.includes('fd00:10:244:1::/64'))).toEqual([]);
    expect(nat.filter((l) => l.includes('fd00:10:244:5::/64'))).toHaveLength(3);
    expect(nat.filter((l) => l.startsWith('-A FLANNEL-POSTRTG'))).toHaveLength(6);
    expect(await moved.ensure()).toEqual([]);
    expect((await managers[1]!.ensure()).length).toBe(6); // and back
    expect(decisions(t!)).toEqual(EXPECTED);
  });

  it('cleanUp removes the chains of both families', async () => {
    for (const m of managers) await m.cleanUp();
    expect(ip6tablesRules(t!.node, 'nat')).toEqual([]);
    expect(ip6tablesRules(t!.node, 'filter')).toEqual([]);
    expect(inNs(t!.node, 'iptables', ['-t', 'nat', '-S']).includes('FLANNEL')).toBe(false);
  });

  it('a node that left dual-stack: its IPv6 chains and jumps go, the IPv4 rules stay and keep working', async () => {
    for (const m of managers) await m.ensure();
    expect(await cleanUpFamily('iptables', 6, { netns: t!.node })).toBe(true);
    expect(ip6tablesRules(t!.node, 'nat')).toEqual([]);
    expect(ip6tablesRules(t!.node, 'filter')).toEqual([]);
    expect(await managers[0]!.check()).toEqual([]);
    expect(seenSource(t!.pod, '192.168.99.2')).toBe('192.168.99.1');
    expect(seenSource(t!.pod, 'fd00:99::2')).toBeNull(); // IPv6 FORWARD policy DROP, no FLANNEL-FWD any more
    expect(await cleanUpFamily('iptables', 6, { netns: t!.node })).toBe(false);
  });

  it('tsflanneld --cleanup (uninstall) removes the ip6tables chains and jumps too, not only the iptables ones', async () => {
    for (const m of managers) await m.ensure();
    expect(ip6tablesRules(t!.node, 'nat')).toHaveLength(8);
    const out = spawnSync('ip', ['netns', 'exec', t!.node, process.execPath, AGENT_BIN, '--cleanup', '--log-level', 'warn'], { encoding: 'utf8', timeout: 60_000 });
    expect(out.status, out.stderr).toBe(0);
    expect(inNs(t!.node, 'iptables', ['-t', 'nat', '-S']).includes('FLANNEL')).toBe(false);
    expect(inNs(t!.node, 'iptables', ['-S']).includes('FLANNEL')).toBe(false);
    expect(ip6tablesRules(t!.node, 'nat')).toEqual([]);
    expect(ip6tablesRules(t!.node, 'filter')).toEqual([]);
    expect(seenSource(t!.pod, 'fd00:99::2')).toBeNull(); // FORWARD policy DROP: nothing accepts pod traffic any more
  });
});

describe.skipIf(requireOrSkip('IPv6 traffic rules (nftables mode)', { root: isRoot, nft: haveNft }))('dual-stack nftables rules in a node netns', () => {
  let t: MasqTopology | undefined;
  let managers: TrafficManager[] = [];
  const listing = (family: string, table: string): string[] => {
    const res = spawnSync('ip', ['netns', 'exec', t!.node, 'nft', 'list', 'table', family, table], { encoding: 'utf8' });
    return res.status === 0 ? res.stdout.split('\n').map((l) => l.trim()).filter(Boolean) : [];
  };

  beforeAll(async () => {
    t = await buildMasqTopology('t6n', { ipv6: true });
  });
  afterAll(() => {
    t?.stop();
    cleanupAll();
  });

  it('writes table ip6 flannel-ipv6 next to ip flannel-ipv4', async () => {
    managers = [V4, V6].map((r) => createTrafficManager('nftables', r, { netns: t!.node }));
    for (const m of managers) expect((await m.ensure()).length).toBeGreaterThan(0);
    const rules = listing('ip6', 'flannel-ipv6').filter((l) => /^(meta|ip6) /.test(l));
    expect(rules).toEqual([
      'meta mark & 0x00004000 == 0x00004000 return',
      'ip6 saddr fd00:10:244:1::/64 ip6 daddr fd00:10:244::/56 return',
      'ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return',
      'ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:1::/64 return',
      'ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random',
      'ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random',
      'ip6 saddr fd00:10:244::/56 accept',
      'ip6 daddr fd00:10:244::/56 accept',
    ]);
    expect(listing('ip6', 'flannel-ipv6')).toContain('comment "rules for flannel-ipv6"');
    expect(listing('ip', 'flannel-ipv4').some((l) => l.includes('10.244.0.0/16'))).toBe(true);
    expect(await managers[1]!.ensure()).toEqual([]);
  });

  it('takes the same masquerade decisions for IPv6 as for IPv4', () => {
    expect(decisions(t!)).toEqual(EXPECTED);
  });

  it('repairs a flushed IPv6 chain without touching the IPv4 table', async () => {
    inNs(t!.node, 'nft', ['flush', 'chain', 'ip6', 'flannel-ipv6', 'postrtg']);
    expect(seenSource(t!.pod, 'fd00:99::2')).toBe('fd00:10:244:1::2');
    expect(await managers[0]!.check()).toEqual([]);
    expect((await managers[1]!.check()).length).toBe(6);
    expect(await managers[0]!.ensure()).toEqual([]);
    expect((await managers[1]!.ensure()).length).toBe(6);
    expect(decisions(t!)).toEqual(EXPECTED);
  });

  it('a node that left dual-stack: table ip6 flannel-ipv6 goes, ip flannel-ipv4 stays', async () => {
    expect(listing('ip6', 'flannel-ipv6').length).toBeGreaterThan(0);
    expect(await cleanUpFamily('nftables', 6, { netns: t!.node })).toBe(true);
    expect(listing('ip6', 'flannel-ipv6')).toEqual([]);
    expect(await managers[0]!.check()).toEqual([]);
    expect(await cleanUpFamily('nftables', 6, { netns: t!.node })).toBe(false);
    expect((await managers[1]!.ensure()).length).toBeGreaterThan(0); // back for the next test
  });

  it('a switch back to iptables removes both tables', async () => {
    expect(await cleanUpOtherMode('iptables', { netns: t!.node })).toBe(true);
    expect(listing('ip6', 'flannel-ipv6')).toEqual([]);
    expect(listing('ip', 'flannel-ipv4')).toEqual([]);
  });
});

describe.skipIf(requireOrSkip('IPv6 blackhole route', { root: isRoot }))('--ip-blackhole-route for the IPv6 subnet', () => {
  let ns = '';
  const ip = (args: string[]) => execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });

  beforeAll(() => {
    ns = addNetns('bh6');
    ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    ip(['addr', 'add', 'fd00:220::2/64', 'dev', 'eth0', 'nodad']);
    ip(['link', 'set', 'eth0', 'up']);
    ip(['link', 'set', 'eth0p', 'up']);
    ip(['-6', 'route', 'add', 'default', 'via', 'fd00:220::1']);
  });
  afterAll(() => cleanupAll());

  it('adds an IPv6 blackhole once: a pod address without a pod no longer follows the default route', () => {
    expect(ip(['-6', 'route', 'get', 'fd00:10:244:3::7'])).toContain('via fd00:220::1');
    expect(ensureBlackholeRoute('fd00:10:244:3::/64', ns)).toBe(true);
    expect(ip(['-6', 'route', 'show', 'type', 'blackhole'])).toContain('blackhole fd00:10:244:3::/64');
    expect(spawnSync('ip', ['-n', ns, '-6', 'route', 'get', 'fd00:10:244:3::7'], { encoding: 'utf8' }).stdout).not.toContain('via fd00:220::1');
    expect(ensureBlackholeRoute('fd00:10:244:3::/64', ns)).toBe(false); // idempotent
  });

  it('stays behind cni0\'s own route to the subnet (metric 256 beats the blackhole\'s 1024)', () => {
    ip(['link', 'add', 'cni0', 'type', 'bridge']);
    ip(['addr', 'add', 'fd00:10:244:4::1/64', 'dev', 'cni0', 'nodad']);
    ip(['link', 'set', 'cni0', 'up']);
    ensureBlackholeRoute('fd00:10:244:4::/64', ns);
    expect(ip(['-6', 'route', 'get', 'fd00:10:244:4::7'])).toContain('dev cni0');
  });
});
