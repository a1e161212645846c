// The sysctls the checks look at, read through the netlink layer (the shim
// reads /proc/sys from inside the target netns), so no process is spawned.
import { release } from 'node:os';
import * as nl from '../netlink/index.js';

export interface SysctlState {
  /** net.ipv4.ip_forward, null when unreadable */
  ipForward: string | null;
  /** net.ipv6.conf.all.forwarding (the plugin sets it for a node with an IPv6 subnet); null when unreadable, absent = not read */
  ipv6Forward?: string | null;
  /** net.ipv4.conf.<name>.rp_filter for all, default, the VXLAN device and the bridge */
  rpFilter: Record<string, number | null>;
  /** net.ipv4.neigh.default.gc_thresh1..3 (null = unreadable, e.g. outside the initial netns); absent = not read */
  neighGcThresh?: [number | null, number | null, number | null];
  /** the running kernel's release (uname -r): which neighbour entries count against gc_thresh3 depends on it */
  kernelRelease?: string;
}

/** One sysctl, null when it cannot be read. Keys use slashes: interface names such as flannel.1 contain dots. */
function readSysctl(key: string, ns: nl.InNetns): string | null {
  try {
    return nl.sysctlGet(key, ns);
  } catch {
    return null;
  }
}

/** ip_forward, and rp_filter for each of `names` (interfaces, or all/default). */
export function readSysctls(ns: nl.InNetns, names: string[]): SysctlState {
  const rpFilter: Record<string, number | null> = {};
  for (const name of names) {
    const v = readSysctl(`net/ipv4/conf/${name}/rp_filter`, ns);
    rpFilter[name] = v === null || !/^\d+$/.test(v) ? null : Number(v);
  }
  const num = (key: string): number | null => {
    const v = readSysctl(key, ns);
    return v === null || !/^\d+$/.test(v) ? null : Number(v);
  };
  return {
    ipForward: readSysctl('net/ipv4/ip_forward', ns),
    ipv6Forward: readSysctl('net/ipv6/conf/all/forwarding', ns),
    rpFilter,
    neighGcThresh: [1, 2, 3].map((i) => num(`net/ipv4/neigh/default/gc_thresh${i}`)) as [number | null, number | null, number | null],
    kernelRelease: release(),
  };
}
