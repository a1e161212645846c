// `tsflanneld --cleanup`: the explicit way to take tsflannel's masquerade and
// forward rules, and its nexthop objects with the per-peer routes through
// them, off a node. A stopping agent (SIGTERM or SIGKILL) leaves them
// in place, as flanneld does, so pods keep their masqueraded source while a
// rolling update replaces the agent; only an uninstall should remove them.
import type { Logger } from 'pino';
import { cleanUpMode, type TrafficMode } from './traffic/index.js';
import { flushOwnNexthops } from '../netlink/index.js';

const MODES: readonly TrafficMode[] = ['iptables', 'nftables'];

export async function cleanupRules(logger: Logger): Promise<void> {
  // Both families of each mode, whatever network they were written for, so
  // no subnet file is needed: a dual-stack node's ip6tables chains go too.
  for (const mode of MODES) await cleanUpMode(mode, { logger });
  // Per-peer routes go through nexthops of tsflannel's protocol: deleting
  // those removes the routes on every device (host-gw and DirectRouting
  // ones on the underlay included), and nothing of anybody else's.
  const nexthops = flushOwnNexthops();
  logger.info({ modes: MODES, nexthops }, 'clean-up done: removed the masquerade and forward rules of both modes and tsflannel\'s nexthops with their routes');
}
