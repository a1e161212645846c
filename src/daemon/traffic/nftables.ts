// flannel's nftables traffic manager (pkg/trafficmngr/nftables): table
// `ip flannel-ipv4` with a `postrtg` nat chain and a `forward` filter chain,
// and for an IPv6 network the same in `ip6 flannel-ipv6` (ip6 matches,
// ff00::/8 as the multicast range that is never masqueraded).
// Each apply replaces the whole table in one `nft -f` transaction (add,
// delete, re-create), so the kernel never holds half a rule set and rules of
// a previous subnet or added by hand are gone. The check compares the
// kernel's listing with the one taken right after our own apply.
//
// Two deliberate differences from flanneld, so that both modes take the same
// masquerade decisions as the iptables rules (flannel's historical ones):
// - the kube-proxy mark is matched under its mask (`meta mark & 0x4000 ==
//   0x4000`, like `-m mark --mark 0x4000/0x4000`); flanneld matches the
//   whole mark exactly (a TODO in its code);
// - the fourth rule is `ip saddr != <network> ip daddr <subnet> return`
//   (outside → local pod keeps the client address, flannel #734), as in
//   iptables; flanneld writes `ip saddr != <subnet> ip daddr <network>
//   return`, which makes its last rule (outside → remote pod masquerade)
//   unreachable, so NodePort traffic to a remote pod is not SNATed there.
import type { Logger } from 'pino';
import { canonicalCidr, parseCidr, type Family } from '../../net/ip.js';
import { silentLogger } from '../backend/common.js';
import { execRunner, notInstalled, toolCommand } from './exec.js';
import { TrafficError, type ToolRunner, type TrafficManager, type TrafficRules } from './types.js';

export const NFT_TABLE = 'flannel-ipv4';
export const NFT_TABLE_V6 = 'flannel-ipv6';
export const NFT_MASQ_CHAIN = 'postrtg';
export const NFT_FORWARD_CHAIN = 'forward';
/** kube-proxy marks the packets it masquerades itself */
export const NFT_KUBE_PROXY_MARK = '0x00004000';

/** The family's table: `ip flannel-ipv4` or `ip6 flannel-ipv6`. */
export function nftTable(family: Family): { family: 'ip' | 'ip6'; name: string } {
  return family === 6 ? { family: 'ip6', name: NFT_TABLE_V6 } : { family: 'ip', name: NFT_TABLE };
}

function familyOf(network: string): Family {
  return network.includes(':') ? 6 : 4;
}

/** The rules of each chain, in nft syntax and flannel's order. */
export function nftRules(rules: Pick<TrafficRules, 'network' | 'subnet' | 'ipMasq' | 'forwardRules' | 'randomFully'>): {
  postrtg: string[];
  forward: string[];
} {
  const net = rules.network;
  const own = rules.subnet;
  const v6 = familyOf(net) === 6;
  const ip = v6 ? 'ip6' : 'ip';
  const multicast = v6 ? 'ff00::/8' : '224.0.0.0/4';
  const masq = rules.randomFully ? 'masquerade fully-random' : 'masquerade';
  const postrtg = rules.ipMasq
    ? [
        // already going to be masqueraded by kube-proxy: do not NAT twice
        `meta mark & ${NFT_KUBE_PROXY_MARK} == ${NFT_KUBE_PROXY_MARK} return`,
        // pod to pod inside the overlay keeps its source
        `${ip} saddr ${own} ${ip} daddr ${net} return`,
        `${ip} saddr ${net} ${ip} daddr ${own} return`,
        // outside traffic to a local pod keeps the client address (flannel #734)
        `${ip} saddr != ${net} ${ip} daddr ${own} return`,
        // pods reaching outside the cluster network (multicast excepted)
        `${ip} saddr ${net} ${ip} daddr != ${multicast} ${masq}`,
        // anything else reaching a remote pod, so replies come back through us
        `${ip} saddr != ${net} ${ip} daddr ${net} ${masq}`,
      ]
    : [];
  const forward = rules.forwardRules ? [`${ip} saddr ${net} accept`, `${ip} daddr ${net} accept`] : [];
  return { postrtg, forward };
}

/** The one-transaction script that replaces our table with the wanted one. */
export function nftScript(rules: TrafficRules): string {
  const { postrtg, forward } = nftRules(rules);
  const table = nftTable(familyOf(rules.network));
  const t = `${table.family} ${table.name}`;
  const lines = [
    // add + delete: removes the table whether it exists or not, in the same transaction
    `add table ${t}`,
    `delete table ${t}`,
    `add table ${t} { comment "rules for ${table.name}"; }`,
  ];
  if (postrtg.length > 0) {
    lines.push(
      `add chain ${t} ${NFT_MASQ_CHAIN} { comment "chain to manage traffic masquerading by flannel"; type nat hook postrouting priority srcnat; policy accept; }`,
      ...postrtg.map((r) => `add rule ${t} ${NFT_MASQ_CHAIN} ${r}`),
    );
  }
  if (forward.length > 0) {
    lines.push(
      `add chain ${t} ${NFT_FORWARD_CHAIN} { comment "chain to accept flannel traffic"; type filter hook forward priority filter; policy accept; }`,
      ...forward.map((r) => `add rule ${t} ${NFT_FORWARD_CHAIN} ${r}`),
    );
  }
  return lines.join('\n') + '\n';
}

/** `nft list table` output, trimmed, one statement a line. */
function listingLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

/** The rule statements of a listing (not the table, chain, type, comment lines or braces). */
function ruleLines(listing: string[]): number {
  return listing.filter((l) => !/^(table |chain |type |comment |policy |\})/.test(l)).length;
}

const NO_TABLE = /No such file or directory|does not exist/i;

/**
 * Deletes flannel's nftables tables (both families, as flanneld's CleanUp
 * does, or the families given) in one transaction. A host without nft has
 * nothing to remove.
 */
export async function cleanUpNftables(run: ToolRunner, log: Logger = silentLogger, families: readonly Family[] = [4, 6]): Promise<boolean> {
  const before = await run(['list', 'tables']);
  if (before.code !== 0) {
    if (notInstalled(before)) return false;
    throw new TrafficError(`nft list tables failed (exit ${before.code}): ${before.stderr.trim()}`);
  }
  const tables = families.map((f) => nftTable(f)).map((t) => `${t.family} ${t.name}`);
  const present = tables.filter((t) => before.stdout.includes(`table ${t}\n`) || before.stdout.trimEnd().endsWith(`table ${t}`));
  if (present.length === 0) return false;
  const res = await run(['-f', '-'], present.map((t) => `delete table ${t}\n`).join(''));
  if (res.code !== 0) throw new TrafficError(`nft: deleting ${present.join(', ')} failed (exit ${res.code}): ${res.stderr.trim()}`);
  log.info({ tables: present }, 'removed flannel nftables tables');
  return true;
}

export class NftablesTrafficManager implements TrafficManager {
  readonly mode = 'nftables' as const;
  readonly family: Family;
  /** e.g. `ip flannel-ipv4`, as `nft list table` takes it */
  private readonly table: [string, string];
  private readonly rules: TrafficRules;
  private readonly run: ToolRunner;
  private readonly log: Logger;
  /** the kernel's listing right after our last apply: what check() expects */
  private expected?: string[];
  private queue: Promise<unknown> = Promise.resolve();

  constructor(rules: TrafficRules, opts: { runner?: ToolRunner; netns?: string; logger?: Logger } = {}) {
    const network = parseCidr(rules.network);
    if (!network) throw new TrafficError(`network ${JSON.stringify(rules.network)} is not a CIDR`);
    this.family = network.ip.family;
    const subnet = parseCidr(rules.subnet, this.family);
    if (!subnet) throw new TrafficError(`subnet ${JSON.stringify(rules.subnet)} is not an IPv${this.family} CIDR`);
    const table = nftTable(this.family);
    this.table = [table.family, table.name];
    this.rules = { ...rules, network: canonicalCidr(network), subnet: canonicalCidr(subnet) };
    this.run = opts.runner ?? execRunner(toolCommand('nft', opts.netns));
    this.log = (opts.logger ?? silentLogger).child({ component: 'nftables' });
  }

  /** The nft script one apply runs. */
  script(): string {
    return nftScript(this.rules);
  }

  ensure(): Promise<string[]> {
    return this.serial(async () => {
      if (this.nothingWanted()) return this.removeTable();
      const drift = this.expected ? await this.diff() : ['table not written by this agent yet'];
      if (drift.length === 0) return [];
      await this.apply();
      this.log.info({ table: this.table.join(' '), drift }, 'wrote flannel nftables table');
      return drift;
    });
  }

  check(): Promise<string[]> {
    return this.serial(async () => {
      if (this.nothingWanted()) {
        return (await this.list()) === undefined ? [] : [`table ${this.table.join(' ')} exists, but neither --ip-masq nor --iptables-forward-rules is on`];
      }
      if (!this.expected) {
        // Not applied by us yet: compare with what an apply would produce
        // only by presence; the exact text comes from the kernel after apply.
        const res = await this.run(['list', 'table', ...this.table]);
        return res.code === 0 ? [] : [`table ${this.table.join(' ')} is missing`];
      }
      return this.diff();
    });
  }

  cleanUp(): Promise<void> {
    return this.serial(async () => {
      await cleanUpNftables(this.run, this.log);
      this.expected = undefined;
    });
  }

  /** --ip-masq and --iptables-forward-rules both off: no table at all, not an empty one. */
  private nothingWanted(): boolean {
    return !this.rules.ipMasq && !this.rules.forwardRules;
  }

  /**
   * Deletes the table an earlier run wrote with a switch on: its postrtg
   * chain would go on masquerading every pod.
   */
  private async removeTable(): Promise<string[]> {
    if ((await this.list()) === undefined) return [];
    const t = this.table.join(' ');
    const res = await this.run(['-f', '-'], `add table ${t}\ndelete table ${t}\n`);
    if (res.code !== 0) throw new TrafficError(`nft: deleting table ${t} failed (exit ${res.code}): ${res.stderr.trim()}`);
    this.log.info({ table: t }, 'deleted the flannel nftables table: --ip-masq and --iptables-forward-rules are off');
    return [`removed table ${t}`];
  }

  /**
   * Writes the table and keeps the kernel's listing as what check() expects.
   * Someone may change the table between our write and our listing (a flush
   * right after a restart): a listing without every rule we wrote is never
   * taken as the baseline, or the damage would look normal from then on.
   */
  private async apply(): Promise<void> {
    const { postrtg, forward } = nftRules(this.rules);
    const wrote = postrtg.length + forward.length;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const res = await this.run(['-f', '-'], this.script());
      if (res.code !== 0) {
        if (notInstalled(res)) throw new TrafficError('nftables mode (EnableNFTables) needs the nft tool: install the nftables package');
        throw new TrafficError(`nft -f failed (exit ${res.code}): ${res.stderr.trim()}`);
      }
      const listed = await this.list();
      if (listed !== undefined && ruleLines(listed) === wrote) {
        this.expected = listed;
        return;
      }
    }
    throw new TrafficError(`table ${this.table.join(' ')} kept changing while it was written`);
  }

  private async list(): Promise<string[] | undefined> {
    const res = await this.run(['list', 'table', ...this.table]);
    if (res.code === 0) return listingLines(res.stdout);
    if (NO_TABLE.test(res.stderr)) return undefined;
    if (notInstalled(res)) {
      // with both switches off the agent must not need nft: none installed, no table
      if (this.nothingWanted()) return undefined;
      throw new TrafficError('nftables mode (EnableNFTables) needs the nft tool: install the nftables package');
    }
    throw new TrafficError(`nft list table ${this.table.join(' ')} failed (exit ${res.code}): ${res.stderr.trim()}`);
  }

  /** Lines of the expected listing that are gone, and lines that should not be there. */
  private async diff(): Promise<string[]> {
    const expected = this.expected ?? [];
    const current = await this.list();
    if (current === undefined) return [`table ${this.table.join(' ')} is missing`];
    const out: string[] = [];
    const have = new Map<string, number>();
    for (const l of current) have.set(l, (have.get(l) ?? 0) + 1);
    for (const l of expected) {
      const n = have.get(l) ?? 0;
      if (n > 0) have.set(l, n - 1);
      else out.push(`missing: ${l}`);
    }
    for (const [l, n] of have) for (let i = 0; i < n; i++) out.push(`unexpected: ${l}`);
    // same lines in another order is drift too (a RETURN after a MASQUERADE is useless)
    if (out.length === 0 && current.join('\n') !== expected.join('\n')) out.push('rules out of order');
    return out;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }
}
