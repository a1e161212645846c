// flannel's --ip-blackhole-route: a blackhole route for the node's own
// subnet, so traffic to pod addresses that do not exist (yet) is dropped here
// instead of following the default route out (setups where per-pod /32
// routes, not a bridge, deliver to pods). The netlink shim has no route
// types, so this uses iproute2.
//
// The blackhole carries metric 1024 in both families: cni0's connected route
// (metric 0 for IPv4, 256 for IPv6) always wins over it. Without a metric an
// IPv4 blackhole added before cni0 exists (a fresh or rebooted node: the
// agent starts before the first pod) comes first among the routes of equal
// metric, and the connected route the kernel appends later never matches:
// every pod of the node would be unreachable.
import { spawnSync } from 'node:child_process';

/** Below every connected route of the subnet (IPv4 0, IPv6 256); IPv6's default for a route added by hand. */
export const BLACKHOLE_METRIC = 1024;

/**
 * Adds `blackhole <subnet> metric 1024` unless it exists; true when it added
 * one. An IPv6 subnet gets an IPv6 blackhole (`ip -6`). A metric-0 IPv4
 * blackhole of the subnet (an earlier version's, or flanneld's) is replaced:
 * it would shadow cni0.
 */
export function ensureBlackholeRoute(subnet: string, netns?: string): boolean {
  const prefix = netns ? ['-n', netns] : [];
  const family = subnet.includes(':') ? ['-6'] : [];
  const ip = (args: string[]) => spawnSync('ip', [...prefix, ...family, 'route', ...args], { encoding: 'utf8', timeout: 10_000 });
  if (family.length === 0) {
    // `ip route show` prints no metric for 0; a delete's metric 0 is a wildcard
    // that takes the lowest, so delete only when that one is there
    const shown = ip(['show', 'exact', subnet, 'type', 'blackhole']).stdout ?? '';
    if (shown.split('\n').some((l) => l.startsWith('blackhole') && !/ metric /.test(l))) ip(['del', 'blackhole', subnet]);
  }
  const res = ip(['add', 'blackhole', subnet, 'metric', String(BLACKHOLE_METRIC)]);
  if (res.status === 0) return true;
  if (/File exists/i.test(res.stderr)) return false;
  throw new Error(`ip route add blackhole ${subnet} failed: ${(res.stderr || res.error?.message || '').trim()}`);
}
