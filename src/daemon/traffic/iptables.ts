// flannel's iptables rules, byte for byte: FORWARD accepts for the pod
// network (chain FLANNEL-FWD) and the masquerade set (chain FLANNEL-POSTRTG
// in nat). Every rule is checked with -C before it is written, rules inside
// our chains keep flannel's order (a RETURN appended after the MASQUERADE
// would be useless), and iptables always runs via execFile with an argument
// array and -w so it waits for the xtables lock instead of failing. An IPv6
// network gets the same chains through ip6tables, with ff00::/8 as the
// multicast range that is never masqueraded.
import type { Logger } from 'pino';
import { canonicalCidr, parseCidr, type Family } from '../../net/ip.js';
import { silentLogger } from '../backend/common.js';
import { execRunner, notInstalled } from './exec.js';
import type { RunResult, ToolRunner, TrafficManager, TrafficRules } from './types.js';

export type { RunResult };
export type IptablesRunner = ToolRunner;

export type IptablesTable = 'filter' | 'nat';

export interface IptablesRule {
  table: IptablesTable;
  chain: string;
  /** match and target arguments, as after `-A <chain>` */
  spec: string[];
}

export interface IptablesManagerOptions {
  /** the cluster network, e.g. 10.244.0.0/16 */
  network: string;
  /** this node's lease, e.g. 10.244.1.0/24 */
  subnet: string;
  ipMasq: boolean;
  /** FLANNEL-FWD accept rules (flannel's --iptables-forward-rules, default true) */
  forwardRules?: boolean;
  /** MASQUERADE with --random-fully; default: when the iptables version supports it (>= 1.6.2) */
  randomFully?: boolean;
  runner?: IptablesRunner;
  /**
   * runs iptables-restore (ip6tables-restore), input on stdin; default: from
   * `binary`, or none with a custom `runner`, when a rebuild falls back to
   * flush and append
   */
  restoreRunner?: IptablesRunner;
  /** command prefix, default ['iptables']; tests use ['ip', 'netns', 'exec', ns, 'iptables'] */
  binary?: string[];
  /** seconds to wait for the xtables lock */
  lockWaitSeconds?: number;
  logger?: Logger;
}

export const FORWARD_CHAIN = 'FLANNEL-FWD';
export const MASQ_CHAIN = 'FLANNEL-POSTRTG';
const FORWARD_COMMENT = ['-m', 'comment', '--comment', 'flanneld forward'];
const MASQ_COMMENT = ['-m', 'comment', '--comment', 'flanneld masq'];
/** kube-proxy marks packets it will masquerade itself */
export const KUBE_PROXY_MARK = '0x4000/0x4000';

/** One of our chains, the rules inside it in order, and the jump to it. */
export interface ChainSet {
  table: IptablesTable;
  chain: string;
  rules: IptablesRule[];
  jump: IptablesRule;
}

export class IptablesError extends Error {
  override readonly name = 'IptablesError';
}

/**
 * The answer of `-D`, `-C` or `-S` for a rule or chain that is not there:
 * exit 1 (no such rule or chain), 2 (the jump's target chain is unknown), or
 * a table this kernel cannot have (IPv6 disabled: nothing of ours either).
 * Anything else (4: the xtables lock is held; -2: no iptables) is a failure,
 * never "nothing there".
 */
function absent(res: RunResult): boolean {
  if (res.code === 1 || res.code === 2) return true;
  return res.code === 3 && /can't initialize|table does not exist|not supported by protocol/i.test(res.stderr);
}

function failure(tool: string, args: string[], res: RunResult): IptablesError {
  if (notInstalled(res)) {
    return new IptablesError(`${tool} not found: iptables mode (EnableNFTables off) needs it: install the iptables package, or set EnableNFTables`);
  }
  return new IptablesError(`${tool} ${args.map(quote).join(' ')} failed (exit ${res.code}): ${res.stderr.trim() || res.stdout.trim()}`);
}

/** Multicast is never masqueraded: 224.0.0.0/4, or ff00::/8 for IPv6. */
export function multicastRange(family: Family): string {
  return family === 6 ? 'ff00::/8' : '224.0.0.0/4';
}

/** The tool for a family's rules. */
export function iptablesTool(family: Family): 'iptables' | 'ip6tables' {
  return family === 6 ? 'ip6tables' : 'iptables';
}

/** flannel's rule sets for a network and own subnet (both canonical CIDRs of one family). */
export function flannelChains(opts: {
  network: string;
  subnet: string;
  ipMasq: boolean;
  forwardRules: boolean;
  randomFully: boolean;
}): ChainSet[] {
  const { network: net, subnet: own } = opts;
  const multicast = multicastRange(net.includes(':') ? 6 : 4);
  const sets: ChainSet[] = [];
  if (opts.forwardRules) {
    const fwd = (spec: string[]): IptablesRule => ({ table: 'filter', chain: FORWARD_CHAIN, spec: [...spec, ...FORWARD_COMMENT, '-j', 'ACCEPT'] });
    sets.push({
      table: 'filter',
      chain: FORWARD_CHAIN,
      rules: [fwd(['-s', net]), fwd(['-d', net])],
      jump: { table: 'filter', chain: 'FORWARD', spec: [...FORWARD_COMMENT, '-j', FORWARD_CHAIN] },
    });
  }
  if (opts.ipMasq) {
    const masq = opts.randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
    const r = (spec: string[], target: string[]): IptablesRule => ({ table: 'nat', chain: MASQ_CHAIN, spec: [...spec, ...MASQ_COMMENT, ...target] });
    const ret = ['-j', 'RETURN'];
    sets.push({
      table: 'nat',
      chain: MASQ_CHAIN,
      rules: [
        // already going to be masqueraded by kube-proxy: do not NAT twice
        r(['-m', 'mark', '--mark', KUBE_PROXY_MARK], ret),
        // pod to pod inside the overlay keeps its source
        r(['-s', own, '-d', net], ret),
        r(['-s', net, '-d', own], ret),
        // outside traffic to a local pod keeps the client address (flannel #734)
        r(['!', '-s', net, '-d', own], ret),
        // pods reaching outside the cluster network (multicast excepted)
        r(['-s', net, '!', '-d', multicast], masq),
        // anything else reaching a remote pod, so replies come back through us
        r(['!', '-s', net, '-d', net], masq),
      ],
      jump: { table: 'nat', chain: 'POSTROUTING', spec: [...MASQ_COMMENT, '-j', MASQ_CHAIN] },
    });
  }
  return sets;
}

/** Seconds iptables waits for the xtables lock before it gives up (exit 4). */
const DEFAULT_LOCK_WAIT_SECONDS = 5;

function lockWait(seconds: number): string[] {
  return ['-w', String(seconds)];
}

function quote(arg: string): string {
  return /^[A-Za-z0-9_./:!=+-]+$/.test(arg) ? arg : `"${arg.replace(/(["\\$`])/g, '\\$1')}"`;
}

/** The rule as `iptables -S` would print it, with its table. */
export function ruleText(rule: IptablesRule): string {
  return `-t ${rule.table} -A ${rule.chain} ${rule.spec.map(quote).join(' ')}`;
}

/** iptables >= 1.6.2 knows --random-fully. */
export function supportsRandomFully(versionText: string): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionText);
  if (!m) return false;
  const [maj, min, patch] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return maj > 1 || (maj === 1 && (min > 6 || (min === 6 && patch >= 2)));
}

/**
 * Deletes every copy of the chain's jump, then the chain; returns whether
 * anything was there. The one removal of our chains: the manager's (a
 * switched-off feature, remove()) and the clean-up's (tsflanneld --cleanup,
 * a mode or family switch). `exec` runs the tool with its lock wait. Only
 * "not there" (exit 1 or 2) ends a step quietly: a held xtables lock fails
 * the removal, never leaves the chains while reporting nothing to remove.
 */
async function dropChain(set: ChainSet, exec: (args: string[]) => Promise<RunResult>, tool: string): Promise<boolean> {
  const step = async (args: string[], quietWhenAbsent: boolean): Promise<boolean> => {
    const res = await exec(args);
    if (res.code === 0) return true;
    if (quietWhenAbsent && absent(res)) return false;
    throw failure(tool, args, res);
  };
  const t = ['-t', set.table];
  let removed = false;
  // -D until "no such rule": one call per copy, no -C before each
  for (let i = 0; i < 100 && (await step([...t, '-D', set.jump.chain, ...set.jump.spec], true)); i++) removed = true;
  if (!(await step([...t, '-S', set.chain], true))) return removed;
  await step([...t, '-F', set.chain], false);
  await step([...t, '-X', set.chain], false);
  return true;
}

export class IptablesManager {
  readonly family: Family;
  private readonly network: string;
  private readonly subnet: string;
  private readonly opts: IptablesManagerOptions;
  private readonly run: IptablesRunner;
  private readonly restore?: IptablesRunner;
  private readonly log: Logger;
  private chains?: ChainSet[];
  /** set once the chains of switched-off features (an earlier run's) are known gone */
  private disabledGone = false;
  /** serializes ensure/remove so a slow periodic ensure never races another */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(opts: IptablesManagerOptions) {
    const network = parseCidr(opts.network);
    if (!network) throw new IptablesError(`network ${JSON.stringify(opts.network)} is not a CIDR`);
    this.family = network.ip.family;
    const subnet = parseCidr(opts.subnet, this.family);
    if (!subnet) throw new IptablesError(`subnet ${JSON.stringify(opts.subnet)} is not an IPv${this.family} CIDR`);
    this.network = canonicalCidr(network);
    this.subnet = canonicalCidr(subnet);
    this.opts = opts;
    const binary = opts.binary ?? [iptablesTool(this.family)];
    this.run = opts.runner ?? execRunner(binary);
    const restore = opts.restoreRunner ?? (opts.runner ? undefined : execRunner(restoreCommand(binary)));
    if (restore) this.restore = restore;
    this.log = (opts.logger ?? silentLogger).child({ component: iptablesTool(this.family) });
  }

  /** The rules this manager maintains, in order (jumps first per chain). */
  async rules(): Promise<IptablesRule[]> {
    return (await this.chainSets()).flatMap((c) => [c.jump, ...c.rules]);
  }

  /** Installs what is missing and returns the rules it (re)installed. */
  ensure(): Promise<IptablesRule[]> {
    return this.serial(async () => {
      if (!this.disabledGone) {
        await this.removeDisabled();
        this.disabledGone = true;
      }
      const installed: IptablesRule[] = [];
      for (const set of await this.chainSets()) installed.push(...(await this.ensureChain(set)));
      if (installed.length > 0) {
        this.log.info({ rules: installed.map(ruleText) }, `installed ${installed.length} iptables rule(s)`);
      }
      return installed;
    });
  }

  /** Rules that are not in place right now; changes nothing. */
  async listMissing(): Promise<IptablesRule[]> {
    const missing: IptablesRule[] = [];
    for (const set of await this.chainSets()) {
      for (const rule of [set.jump, ...set.rules]) if (!(await this.exists(rule))) missing.push(rule);
    }
    return missing;
  }

  /** Deletes the jumps (every copy) and our chains; absent ones are fine. */
  remove(): Promise<void> {
    return this.serial(async () => {
      for (const set of await this.chainSets()) await this.dropChain(set);
      this.log.info('removed flannel iptables rules');
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Deletes our chains of features that are off now (--ip-masq,
   * --iptables-forward-rules) with their jumps: a run with the switch on left
   * them, and a FLANNEL-POSTRTG kept after --ip-masq was turned off would go
   * on masquerading every pod.
   */
  private async removeDisabled(): Promise<void> {
    const enabled = new Set((await this.chainSets()).map((c) => c.chain));
    const disabled = ALL_CHAINS.filter((set) => !enabled.has(set.chain));
    // with both switches off the agent must not need iptables: none installed, nothing to remove
    if (disabled.length === 0 || notInstalled(await this.run(['--version']))) return;
    for (const set of disabled) {
      if (await this.dropChain(set)) this.log.info({ chain: set.chain }, 'removed the chain of a switched-off feature and its jump');
    }
  }

  private dropChain(set: ChainSet): Promise<boolean> {
    return dropChain(set, (args) => this.exec(args), iptablesTool(this.family));
  }

  private async chainSets(): Promise<ChainSet[]> {
    if (!this.chains) {
      let randomFully = this.opts.randomFully;
      if (randomFully === undefined && this.opts.ipMasq) {
        const v = await this.run(['--version']);
        randomFully = v.code === 0 && supportsRandomFully(v.stdout + v.stderr);
      }
      this.chains = flannelChains({
        network: this.network,
        subnet: this.subnet,
        ipMasq: this.opts.ipMasq,
        forwardRules: this.opts.forwardRules ?? true,
        randomFully: randomFully ?? false,
      });
    }
    return this.chains;
  }

  private waitArgs(): string[] {
    return lockWait(this.opts.lockWaitSeconds ?? DEFAULT_LOCK_WAIT_SECONDS);
  }

  private exec(args: string[]): Promise<RunResult> {
    return this.run([...this.waitArgs(), ...args]);
  }

  private async must(args: string[]): Promise<RunResult> {
    const res = await this.exec(args);
    if (res.code !== 0) throw failure(iptablesTool(this.family), args, res);
    return res;
  }

  /** `-C`: 1 = no such rule, 2 = no such chain or target; anything else is a real failure. */
  private async exists(rule: IptablesRule): Promise<boolean> {
    const args = ['-t', rule.table, '-C', rule.chain, ...rule.spec];
    const res = await this.exec(args);
    if (res.code === 0) return true;
    if (absent(res)) return false;
    throw failure(iptablesTool(this.family), args, res);
  }

  /**
   * Replaces the chain's rules in one iptables-restore --noflush commit (a
   * declared chain is flushed, the table's other chains are left alone): a
   * flush followed by appends would let pods leave unmasqueraded, or be
   * dropped by a FORWARD policy DROP, between the calls.
   */
  private async rebuild(set: ChainSet): Promise<void> {
    const t = ['-t', set.table];
    if (!this.restore) {
      await this.must([...t, '-F', set.chain]);
      for (const rule of set.rules) await this.must([...t, '-A', set.chain, ...rule.spec]);
      return;
    }
    const payload = [`*${set.table}`, `:${set.chain} - [0:0]`, ...set.rules.map((r) => `-A ${set.chain} ${r.spec.map(quote).join(' ')}`), 'COMMIT', ''].join('\n');
    const args = [...this.waitArgs(), '--noflush'];
    const res = await this.restore(args, payload);
    if (res.code !== 0) throw failure(`${iptablesTool(this.family)}-restore`, args, res);
  }

  private async ensureChain(set: ChainSet): Promise<IptablesRule[]> {
    const t = ['-t', set.table];
    const listing = await this.exec([...t, '-S', set.chain]);
    let lines = 0;
    let disordered = false;
    if (listing.code !== 0) {
      const created = await this.exec([...t, '-N', set.chain]);
      if (created.code !== 0 && !/exists/i.test(created.stderr)) throw failure(iptablesTool(this.family), [...t, '-N', set.chain], created);
    } else {
      lines = listing.stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
      disordered = outOfOrder(listing.stdout, set);
    }
    const present: boolean[] = [];
    for (const rule of set.rules) present.push(await this.exists(rule));
    const installed: IptablesRule[] = [];
    if (lines > present.filter(Boolean).length || disordered) {
      // Rules we do not expect (a previous subnet, copies, foreign rules)
      // sit in our chain, or ours are out of order (a RETURN behind the
      // MASQUERADEs is useless): rebuild it in order rather than guess positions.
      this.log.warn({ chain: set.chain, lines, disordered }, 'chain holds unexpected or reordered rules; rebuilding it');
      await this.rebuild(set);
      installed.push(...set.rules);
    } else {
      // Insert each missing rule right after the present rules before it,
      // so the RETURNs stay ahead of the MASQUERADEs.
      let position = 1;
      for (const [i, rule] of set.rules.entries()) {
        if (!present[i]) {
          await this.must([...t, '-I', set.chain, String(position), ...rule.spec]);
          installed.push(rule);
        }
        position++;
      }
    }
    if (!(await this.exists(set.jump))) {
      await this.must([...t, '-A', set.jump.chain, ...set.jump.spec]);
      installed.push(set.jump);
    }
    return installed;
  }
}

/**
 * Whether our rules in a `-S <chain>` listing stand in another order than
 * flannel's. Judged only when iptables prints every line as we write it
 * (versions differ in how they print a match): an unknown line says nothing.
 */
export function outOfOrder(listing: string, set: ChainSet): boolean {
  const want = set.rules.map((r) => `-A ${set.chain} ${r.spec.map(quote).join(' ')}`);
  const seen = listing.split('\n').filter((l) => l.startsWith('-A ')).map((l) => want.indexOf(l.trim()));
  if (seen.some((i) => i < 0)) return false;
  return seen.some((i, k) => k > 0 && i < seen[k - 1]!);
}

/** `[..., 'iptables']` → `[..., 'iptables-restore']` (same netns prefix). */
function restoreCommand(binary: string[]): string[] {
  const tool = binary[binary.length - 1] ?? 'iptables';
  return [...binary.slice(0, -1), `${tool}-restore`];
}

/** Every chain and jump flannel's iptables mode can leave, whatever its network. */
const ALL_CHAINS: ChainSet[] = flannelChains({
  network: '0.0.0.0/0',
  subnet: '0.0.0.0/0',
  ipMasq: true,
  forwardRules: true,
  randomFully: false,
});


/**
 * Removes FLANNEL-FWD and FLANNEL-POSTRTG with every jump to them, written by
 * tsflanneld or flanneld for any network. A host without iptables has nothing
 * to remove.
 */
export async function cleanUpIptables(run: IptablesRunner, log: Logger = silentLogger): Promise<boolean> {
  const version = await run(['--version']);
  if (version.code !== 0 && notInstalled(version)) return false;
  let removed = false;
  const tool = /ip6tables/.test(version.stdout + version.stderr) ? 'ip6tables' : 'iptables';
  for (const set of ALL_CHAINS) {
    if (await dropChain(set, (args) => run([...lockWait(DEFAULT_LOCK_WAIT_SECONDS), ...args]), tool)) removed = true;
  }
  if (removed) log.info('removed flannel iptables chains');
  return removed;
}

/** The iptables traffic manager: flannel's chains, repaired rule by rule (ip6tables for an IPv6 network). */
export class IptablesTrafficManager implements TrafficManager {
  readonly mode = 'iptables' as const;
  private readonly manager: IptablesManager;
  private readonly run: IptablesRunner;
  private readonly log: Logger;

  constructor(rules: TrafficRules, opts: { runner?: IptablesRunner; restoreRunner?: IptablesRunner; netns?: string; logger?: Logger } = {}) {
    const tool = iptablesTool(rules.network.includes(':') ? 6 : 4);
    const binary = opts.netns ? ['ip', 'netns', 'exec', opts.netns, tool] : [tool];
    this.run = opts.runner ?? execRunner(binary);
    this.log = opts.logger ?? silentLogger;
    this.manager = new IptablesManager({
      network: rules.network,
      subnet: rules.subnet,
      ipMasq: rules.ipMasq,
      forwardRules: rules.forwardRules,
      // --random-fully only where iptables knows it (flannel's HasRandomFully)
      ...(rules.randomFully ? {} : { randomFully: false }),
      binary,
      // the restore runner follows `binary` unless a test gives runners
      ...(opts.runner ? { runner: opts.runner } : {}),
      ...(opts.restoreRunner ? { restoreRunner: opts.restoreRunner } : {}),
      logger: this.log,
    });
  }

  async ensure(): Promise<string[]> {
    return (await this.manager.ensure()).map(ruleText);
  }

  async check(): Promise<string[]> {
    return (await this.manager.listMissing()).map(ruleText);
  }

  async cleanUp(): Promise<void> {
    await cleanUpIptables(this.run, this.log);
  }
}
