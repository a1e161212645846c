// flannel's --ip-blackhole-route: a blackhole route for the node's own
// subnet, so traffic to pod addresses that do not exist (yet) is dropped here
// instead of following the default route out (setups where per-pod /32
// routes, not a bridge, deliver to pods). Like flanneld it adds, never
// replaces: where cni0 already owns the subnet the add finds it taken and
// nothing changes. The netlink shim has no route types, so this uses iproute2.
import { spawnSync } from 'node:child_process';

/**
 * Adds `blackhole <subnet>` unless a route for the subnet exists; true when
 * it added one. An IPv6 subnet gets an IPv6 blackhole (`ip -6`).
 */
export function ensureBlackholeRoute(subnet: string, netns?: string): boolean {
  const prefix = netns ? ['-n', netns] : [];
  const family = subnet.includes(':') ? ['-6'] : [];
  const res = spawnSync('ip', [...prefix, ...family, 'route', 'add', 'blackhole', subnet], { encoding: 'utf8', timeout: 10_000 });
  if (res.status === 0) return true;
  if (/File exists/i.test(res.stderr)) return false;
  throw new Error(`ip route add blackhole ${subnet} failed: ${(res.stderr || res.error?.message || '').trim()}`);
}
