// Picks the traffic manager for net-conf's EnableNFTables and removes what
// the other mode left behind (flanneld does the same at start), so a mode
// switch leaves no rules of the old mode.
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { silentLogger } from '../backend/common.js';
import { execRunner, toolCommand } from './exec.js';
import type { Family } from '../../net/ip.js';
import { cleanUpIptables, iptablesTool, IptablesTrafficManager } from './iptables.js';
import { cleanUpNftables, NftablesTrafficManager } from './nftables.js';
import type { TrafficManager, TrafficMode, TrafficRules } from './types.js';

export * from './types.js';
export { IptablesTrafficManager } from './iptables.js';
export { NftablesTrafficManager } from './nftables.js';

export interface TrafficManagerOptions {
  /** run the tools inside this netns (tests) */
  netns?: string;
  logger?: Logger;
}

export function createTrafficManager(mode: TrafficMode, rules: TrafficRules, opts: TrafficManagerOptions = {}): TrafficManager {
  return mode === 'nftables' ? new NftablesTrafficManager(rules, opts) : new IptablesTrafficManager(rules, opts);
}

/**
 * The agent's first ensure() of a manager. It never stops the agent: a held
 * xtables lock, an iptables or nft missing or failing for a moment must not
 * take the node's routes and CNI service down with it (flanneld logs a
 * failed rule bootstrap and lets its resync loop retry). It warns and
 * returns false; the periodic resync runs ensure() again until the rules are
 * in. With --ip-masq or --iptables-forward-rules on, the agent holds its
 * readiness and the subnet file back meanwhile; with both off the only work
 * was removing what an earlier run left, and nothing waits for that.
 * Returns whether ensure() succeeded.
 */
export async function ensureTrafficAtStart(
  manager: TrafficManager,
  wanted: Pick<TrafficRules, 'ipMasq' | 'forwardRules'>,
  log: Logger,
): Promise<boolean> {
  try {
    await manager.ensure();
    return true;
  } catch (err) {
    const rulesWanted = wanted.ipMasq || wanted.forwardRules;
    log.warn(
      { err: (err as Error).message, mode: manager.mode, ipMasq: wanted.ipMasq, forwardRules: wanted.forwardRules },
      rulesWanted
        ? 'could not install the traffic rules at start; the resync retries (not ready and no subnet file until they are in)'
        : 'could not remove the flannel rules of an earlier run (--ip-masq and --iptables-forward-rules are off); the resync retries',
    );
    return false;
  }
}

/** Removes the rules of the mode not in use; returns whether anything was there. */
export async function cleanUpOtherMode(mode: TrafficMode, opts: TrafficManagerOptions = {}): Promise<boolean> {
  return cleanUpMode(mode === 'nftables' ? 'iptables' : 'nftables', opts);
}

/**
 * Removes every rule of one mode, both families, whatever network they were
 * written for; returns whether anything was there.
 */
export async function cleanUpMode(mode: TrafficMode, opts: TrafficManagerOptions = {}): Promise<boolean> {
  const log = opts.logger ?? silentLogger;
  if (mode === 'iptables') {
    // a dual-stack node (ours or flanneld's) also has FLANNEL chains in ip6tables
    const v4 = await cleanUpIptables(execRunner(toolCommand('iptables', opts.netns)), log);
    const v6 = ipv6Enabled() && (await cleanUpIptables(execRunner(toolCommand('ip6tables', opts.netns)), log));
    return v4 || v6;
  }
  return cleanUpNftables(execRunner(toolCommand('nft', opts.netns)), log);
}

/**
 * Removes one family's rules of a mode (its iptables or ip6tables chains, or
 * its nftables table): what an earlier run left for a family the node no
 * longer runs (dual-stack turned off). Returns whether anything was there.
 */
export async function cleanUpFamily(mode: TrafficMode, family: Family, opts: TrafficManagerOptions = {}): Promise<boolean> {
  const log = opts.logger ?? silentLogger;
  if (mode === 'iptables') {
    if (family === 6 && !ipv6Enabled()) return false;
    return cleanUpIptables(execRunner(toolCommand(iptablesTool(family), opts.netns)), log);
  }
  return cleanUpNftables(execRunner(toolCommand('nft', opts.netns)), log, [family]);
}

/**
 * A kernel booted with ipv6.disable=1 has no IPv6 (no /proc/net/if_inet6):
 * no ip6tables rule can exist, and ip6tables would only fail.
 */
function ipv6Enabled(): boolean {
  return existsSync('/proc/net/if_inet6');
}
