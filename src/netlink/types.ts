/** Every call may target another network namespace by path. */
export interface InNetns {
  /** e.g. /var/run/netns/pod1 or /proc/<pid>/ns/net; absent = this process's netns */
  netns?: string;
}

export interface VxlanInfo {
  vni: number;
  /** local (source) IP, '' when unset */
  local: string;
  /** underlay device index, 0 when unset */
  devIndex: number;
  port: number;
  learning: boolean;
}

export interface Link {
  index: number;
  name: string;
  /** 'bridge', 'veth', 'vxlan', 'device', ... as netlink reports it */
  type: string;
  mtu: number;
  mac: string;
  up: boolean;
  operState: string;
  masterIndex: number;
  parentIndex: number;
  /** netns id of a veth peer living in another namespace, -1 or 0 when none */
  peerNetnsId: number;
  /** present on bridge ports only */
  hairpin?: boolean;
  vxlan?: VxlanInfo;
}

export interface Address {
  /** address with prefix, e.g. 10.244.1.5/24 */
  cidr: string;
  linkIndex: number;
  scope: number;
}

export const RouteScope = { universe: 0, link: 253, host: 254 } as const;

export interface RouteSpec extends InNetns {
  /** destination CIDR; absent = default route */
  dst?: string;
  gw?: string;
  dev?: string;
  src?: string;
  onlink?: boolean;
  scope?: number;
  table?: number;
  protocol?: number;
  metric?: number;
  /** path MTU of this route (RTAX_MTU), e.g. a pod whose interface is smaller than its bridge */
  mtu?: number;
}

export interface Route {
  /** destination CIDR, or 'default' */
  dst: string;
  gw?: string;
  src?: string;
  linkIndex: number;
  onlink: boolean;
  scope: number;
  table: number;
  protocol: number;
  metric: number;
}

export const NudState = { permanent: 0x80, noarp: 0x40, reachable: 0x02, stale: 0x04 } as const;

export interface Neighbour {
  /** the neighbour's IP (ARP) or, in the FDB, the remote VTEP */
  ip?: string;
  mac: string;
  linkIndex: number;
  state: number;
  flags: number;
}
