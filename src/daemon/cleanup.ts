// `tsflanneld --cleanup`: the explicit way to take tsflannel's masquerade and
// forward rules, and its nexthop objects with the per-peer routes through
// them, off a node. A stopping agent (SIGTERM or SIGKILL) leaves them
// in place, as flanneld does, so pods keep their masqueraded source while a
// rolling update replaces the agent; only an uninstall should remove them.
import type { Logger } from 'pino';
import { createTrafficManager, type TrafficMode, type TrafficRules } from './traffic/index.js';
import { flushOwnNexthops } from '../netlink/index.js';

/**
 * Each mode's cleanUp removes its chains and tables whatever network they
 * were written for, so no subnet file is needed; these values stand in.
 */
const ANY_RULES: TrafficRules = { network: '10.244.0.0/16', subnet: '10.244.0.0/24', ipMasq: true, forwardRules: true, randomFully: true };
const MODES: readonly TrafficMode[] = ['iptables', 'nftables'];

export async function cleanupRules(logger: Logger): Promise<void> {
  for (const mode of MODES) await createTrafficManager(mode, ANY_RULES, { logger }).cleanUp();
  // Per-peer routes go through nexthops of tsflannel's protocol: deleting
  // those removes the routes on every device (host-gw and DirectRouting
  // ones on the underlay included), and nothing of anybody else's.
  const nexthops = flushOwnNexthops();
  logger.info({ modes: MODES, nexthops }, 'clean-up done: removed the masquerade and forward rules of both modes and tsflannel\'s nexthops with their routes');
}
