// flannel's nftables traffic manager inside a node netns (never the root
// namespace): the table flanneld writes, one atomic transaction, the same
// masquerade decisions as the iptables rules proven with real traffic,
// hand-made changes repaired, and a mode switch that leaves nothing behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { IptablesTrafficManager } from '../../src/daemon/traffic/iptables.js';
import { cleanUpOtherMode, createTrafficManager, NftablesTrafficManager, type TrafficRules } from '../../src/daemon/traffic/index.js';
import { cleanupAll, inNs, isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { buildMasqTopology, seenSource, type MasqTopology } from '../helpers/masq-topology.js';

const NETWORK = '10.244.0.0/16';
const OWN = '10.244.1.0/24';
const RULES: TrafficRules = { network: NETWORK, subnet: OWN, ipMasq: true, forwardRules: true, randomFully: true };
const haveNft = existsSync('/usr/sbin/nft') || existsSync('/sbin/nft');





type Json = Record<string, unknown>;

/** `nft -j list table ip flannel-ipv4`, reduced to chains and rule expressions (no handles). */
function tableJson(ns: string): { chains: Json[]; rules: Record<string, unknown[]> } | null {
  const res = spawnSync('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'table', 'ip', 'flannel-ipv4'], { encoding: 'utf8' });
  if (res.status !== 0) return null;
  const items = (JSON.parse(res.stdout) as { nftables: Json[] }).nftables;
  const chains: Json[] = [];
  const rules: Record<string, unknown[]> = {};
  for (const item of items) {
    if (item.chain) {
      const { handle: _h, ...chain } = item.chain as Json;
      chains.push(chain);
    }
    if (item.rule) {
      const r = item.rule as { chain: string; expr: unknown[] };
      (rules[r.chain] ??= []).push(r.expr);
    }
  }
  return { chains, rules };
}

// nft's JSON for one match: `ip saddr|daddr (==|!=) a.b.c.d/n`
const cidrMatch = (field: 'saddr' | 'daddr', op: '==' | '!=', cidr: string) => {
  const [addr, len] = cidr.split('/');
  return { match: { op, left: { payload: { protocol: 'ip', field } }, right: { prefix: { addr, len: Number(len) } } } };
};
const masq = { masquerade: { flags: 'fully-random' } };
const ret = { return: null };

/** What flannel's nftables manager writes for Network 10.244.0.0/16 and lease 10.244.1.0/24 (e2e/rules.go), see the two noted differences. */
const FLANNEL_TABLE = {
  chains: [
    { family: 'ip', table: 'flannel-ipv4', name: 'postrtg', type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' },
    { family: 'ip', table: 'flannel-ipv4', name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' },
  ],
  rules: {
    postrtg: [
      // flanneld: `meta mark 0x00004000 return` (exact); we match under the mask like iptables' --mark 0x4000/0x4000
      [{ match: { op: '==', left: { '&': [{ meta: { key: 'mark' } }, 16384] }, right: 16384 } }, ret],
      [cidrMatch('saddr', '==', OWN), cidrMatch('daddr', '==', NETWORK), ret],
      [cidrMatch('saddr', '==', NETWORK), cidrMatch('daddr', '==', OWN), ret],
      // flanneld: `ip saddr != <subnet> ip daddr <network> return`; we keep iptables' `! -s <network> -d <subnet> RETURN`
      [cidrMatch('saddr', '!=', NETWORK), cidrMatch('daddr', '==', OWN), ret],
      [cidrMatch('saddr', '==', NETWORK), cidrMatch('daddr', '!=', '224.0.0.0/4'), masq],
      [cidrMatch('saddr', '!=', NETWORK), cidrMatch('daddr', '==', NETWORK), masq],
    ],
    forward: [
      [cidrMatch('saddr', '==', NETWORK), { accept: null }],
      [cidrMatch('daddr', '==', NETWORK), { accept: null }],
    ],
  },
};

function iptablesFlannelLines(ns: string): string[] {
  return ['nat', 'filter'].flatMap((t) =>
    inNs(ns, 'iptables', ['-t', t, '-S']).split('\n').filter((l) => l.includes('FLANNEL') || l.includes('flanneld')),
  );
}

describe.skipIf(requireOrSkip('nftables', { root: isRoot, nft: haveNft }))('nftables traffic manager in a node netns', () => {
  let node = '';
  let pod = '';
  let outside = '';
  let topo: MasqTopology | undefined;
  const nft = (rules: TrafficRules = RULES) => new NftablesTrafficManager(rules, { netns: node });

  beforeAll(async () => {
    topo = await buildMasqTopology('nft');
    ({ node, pod, outside } = topo);
  });
  afterAll(() => {
    topo?.stop();
    cleanupAll();
  });

  it('without rules, traffic leaves with pod addresses (nothing masquerades)', () => {
    expect(seenSource(pod, '192.168.99.2')).toBe('10.244.1.2');
  });

  it('writes flannel\'s table ip flannel-ipv4: postrtg (nat, srcnat) and forward (filter) chains with its rules, in one nft -f', async () => {
    const m = nft();
    expect(m.script().match(/^(add|delete) table/gm)).toEqual(['add table', 'delete table', 'add table']);
    expect((await m.ensure()).length).toBeGreaterThan(0);
    expect(tableJson(node)).toEqual(FLANNEL_TABLE);
    const text = inNs(node, 'nft', ['list', 'table', 'ip', 'flannel-ipv4']);
    expect(text).toContain('comment "chain to manage traffic masquerading by flannel"');
    expect(text).toContain('type nat hook postrouting priority srcnat; policy accept;');
    expect(text).toContain('type filter hook forward priority filter; policy accept;');
    expect(await m.check()).toEqual([]);
    expect(await m.ensure()).toEqual([]); // idempotent: nothing rewritten
  });

  it('takes the same masquerade decisions as the iptables rules (real TCP, source seen by the server)', () => {
    expect(seenSource(pod, '192.168.99.2')).toBe('192.168.99.1'); // pod → outside: the node's address
    expect(seenSource(pod, '10.244.2.2')).toBe('10.244.1.2'); // pod → pod on another node: unchanged
    expect(seenSource(outside, '10.244.1.2')).toBe('192.168.99.2'); // outside → our pod: client kept
    expect(seenSource(outside, '10.244.2.2')).toBe('10.244.2.1'); // outside → a remote pod: masqueraded
  });

  it('a rule deleted by hand and a rule added by hand are both seen by check() and undone by the resync\'s ensure()', async () => {
    const m = nft();
    await m.ensure();
    const listing = inNs(node, 'nft', ['-a', 'list', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
    const handle = /ip saddr 10\.244\.0\.0\/16 ip daddr != 224\.0\.0\.0\/4 masquerade fully-random # handle (\d+)/.exec(listing)?.[1];
    expect(handle).toBeDefined();
    inNs(node, 'nft', ['delete', 'rule', 'ip', 'flannel-ipv4', 'postrtg', 'handle', handle!]);
    inNs(node, 'nft', ['add', 'rule', 'ip', 'flannel-ipv4', 'forward', 'ip', 'saddr', '10.9.9.0/24', 'accept']);
    expect(seenSource(pod, '192.168.99.2')).toBe('10.244.1.2'); // the masquerade is gone
    expect(await m.check()).toEqual([
      'missing: ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random',
      'unexpected: ip saddr 10.9.9.0/24 accept',
    ]);
    expect(await m.ensure()).toHaveLength(2);
    expect(tableJson(node)).toEqual(FLANNEL_TABLE);
    expect(seenSource(pod, '192.168.99.2')).toBe('192.168.99.1');

    inNs(node, 'nft', ['delete', 'table', 'ip', 'flannel-ipv4']);
    expect(await m.check()).toEqual(['table ip flannel-ipv4 is missing']);
    expect(await m.ensure()).toEqual(['table ip flannel-ipv4 is missing']);
    expect(tableJson(node)).toEqual(FLANNEL_TABLE);
  });

  it('a new subnet replaces the old rules atomically; without --ip-masq only the forward chain exists; fully-random can be disabled', async () => {
    await nft({ ...RULES, subnet: '10.244.5.0/24' }).ensure();
    const text = inNs(node, 'nft', ['list', 'table', 'ip', 'flannel-ipv4']);
    expect(text).not.toContain('10.244.1.0/24');
    expect(text.match(/10\.244\.5\.0\/24/g)).toHaveLength(3);
    await nft({ ...RULES, ipMasq: false }).ensure();
    expect(tableJson(node)!.chains.map((c) => c.name)).toEqual(['forward']);
    await nft({ ...RULES, randomFully: false }).ensure();
    const plain = inNs(node, 'nft', ['list', 'chain', 'ip', 'flannel-ipv4', 'postrtg']);
    expect(plain).toContain('masquerade');
    expect(plain).not.toContain('fully-random');
  });

  it('with --ip-masq and --iptables-forward-rules both off, the table an earlier run wrote is deleted (nothing masquerades)', async () => {
    await nft().ensure();
    expect(seenSource(pod, '192.168.99.2')).toBe('192.168.99.1');
    const off = nft({ ...RULES, ipMasq: false, forwardRules: false });
    expect((await off.ensure()).length).toBe(1);
    expect(tableJson(node)).toBeNull();
    expect(seenSource(pod, '192.168.99.2')).toBe('10.244.1.2');
    expect(await off.check()).toEqual([]);
    expect(await off.ensure()).toEqual([]);
    inNs(node, 'nft', ['add', 'table', 'ip', 'flannel-ipv4']);
    expect(await off.check()).toEqual(['table ip flannel-ipv4 exists, but neither --ip-masq nor --iptables-forward-rules is on']);
  });

  it('switching to nftables removes the iptables chains and jumps; switching back removes both nftables tables', async () => {
    await new IptablesTrafficManager(RULES, { netns: node }).ensure();
    expect(iptablesFlannelLines(node).length).toBe(12);
    // a dual-stack flanneld's IPv6 leftovers
    inNs(node, 'ip6tables', ['-t', 'nat', '-N', 'FLANNEL-POSTRTG']);
    inNs(node, 'ip6tables', ['-t', 'nat', '-A', 'FLANNEL-POSTRTG', '-s', 'fd00:10:244::/56', '-j', 'RETURN']);
    inNs(node, 'ip6tables', ['-t', 'nat', '-A', 'POSTROUTING', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG']);
    // what the agent does at start in nftables mode
    expect(await cleanUpOtherMode('nftables', { netns: node })).toBe(true);
    expect(iptablesFlannelLines(node)).toEqual([]);
    expect(inNs(node, 'ip6tables', ['-t', 'nat', '-S'])).not.toContain('FLANNEL');
    await createTrafficManager('nftables', RULES, { netns: node }).ensure();

    // flanneld's IPv6 table too, as a leftover of a dual-stack flanneld
    inNs(node, 'nft', ['add', 'table', 'ip6', 'flannel-ipv6']);
    expect(await cleanUpOtherMode('iptables', { netns: node })).toBe(true);
    expect(inNs(node, 'nft', ['list', 'tables'])).not.toMatch(/flannel/);
    await createTrafficManager('iptables', RULES, { netns: node }).ensure();
    expect(iptablesFlannelLines(node).length).toBe(12);
    expect(await cleanUpOtherMode('iptables', { netns: node })).toBe(false); // nothing of nftables left to remove

    await createTrafficManager('iptables', RULES, { netns: node }).cleanUp();
    expect(iptablesFlannelLines(node)).toEqual([]);
    expect(await cleanUpOtherMode('nftables', { netns: node })).toBe(false);
  });
});
