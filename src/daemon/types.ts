// Contracts between tsflanneld's parts: the network configuration
// (flannel's net-conf.json), leases, subnet managers and backends.

export interface VxlanBackendConfig {
  type: 'vxlan';
  /** VXLAN network identifier, flannel's default 1 */
  vni: number;
  /** UDP destination port, flannel's default 8472 (the Linux kernel default) */
  port: number;
  /** use a plain route via the remote public IP when it is on our L2 subnet */
  directRouting: boolean;
  /** fixed MTU for flannel.1; absent = underlay MTU - 50 */
  mtu?: number;
}

export interface HostGwBackendConfig {
  type: 'host-gw';
}

/** flannel's Backend.Mode for wireguard: which devices and endpoint families. */
export type WireguardMode = 'separate' | 'auto' | 'ipv4' | 'ipv6';

export interface WireguardBackendConfig {
  type: 'wireguard';
  /** UDP port of flannel-wg, flannel's default 51820 */
  listenPort: number;
  /** UDP port of flannel-wg-v6 (Mode separate with IPv6), flannel's default 51821 */
  listenPortV6: number;
  /** optional pre-shared key (base64, 32 bytes) added to every peer */
  psk?: string;
  /** seconds between keepalives to each peer; 0 = off (flannel's default) */
  persistentKeepaliveInterval: number;
  mode: WireguardMode;
  /** MTU of the encrypted (underlay) packets; absent = underlay MTU */
  mtu?: number;
}

export type BackendConfig = VxlanBackendConfig | HostGwBackendConfig | WireguardBackendConfig;

/**
 * net-conf.json, validated and with flannel's defaults filled in.
 *
 * The IPv4 fields keep their types and are '' / 0 when EnableIPv4 is false
 * (an IPv6-only cluster), so IPv4-only code needs no change; check
 * `enableIPv4` (or test for '') before using them. The IPv6 fields are
 * present exactly when `enableIPv6` is true.
 */
export interface NetworkConfig {
  /** the cluster's IPv4 pod network, e.g. 10.244.0.0/16; '' when enableIPv4 is false */
  network: string;
  /** prefix length of each node's IPv4 subnet, default 24; 0 when enableIPv4 is false */
  subnetLen: number;
  /** first and last IPv4 node subnet the etcd manager may hand out; '' when enableIPv4 is false */
  subnetMin: string;
  subnetMax: string;
  /** flannel's EnableIPv4, default true */
  enableIPv4: boolean;
  /** flannel's EnableIPv6, default false */
  enableIPv6: boolean;
  /** the cluster's IPv6 pod network (IPv6Network), network form, e.g. fd00:10:244::/56 */
  ipv6Network?: string;
  /** IPv6SubnetLen: 64 when IPv6Network is a /62 or larger, else its prefix + 2 */
  ipv6SubnetLen?: number;
  /** IPv6SubnetMin/Max: first and last IPv6 node subnet (default: skip the first, up to the last) */
  ipv6SubnetMin?: string;
  ipv6SubnetMax?: string;
  /** traffic rules through nftables (table ip flannel-ipv4) instead of iptables */
  enableNFTables: boolean;
  backend: BackendConfig;
}

/** What the backend publishes about this node (flannel's backend-data). */
export interface BackendData {
  VNI?: number;
  VtepMAC?: string;
  /** wireguard: the node's public key, base64 (flannel's field name) */
  PublicKey?: string;
}

/**
 * What a node publishes with its lease (flannel's LeaseAttrs). The IPv4
 * fields stay required strings so IPv4-only code is untouched: `publicIP` is
 * '' when the node has no IPv4 lease (an IPv6-only cluster), and
 * `backendData` is then {}. The IPv6 fields are present exactly when the
 * node has an IPv6 lease.
 */
export interface LeaseAttrs {
  /** the IPv4 address peers reach us at (flannel's PublicIP); '' for IPv6-only */
  publicIP: string;
  /** the IPv6 address peers reach us at (flannel's PublicIPv6) */
  publicIPv6?: string;
  backendType: BackendConfig['type'];
  /** the IPv4 backend's data (flannel's BackendData), e.g. flannel.1's VtepMAC */
  backendData: BackendData;
  /** the IPv6 backend's data (flannel's BackendV6Data), e.g. flannel-v6.1's VtepMAC */
  backendV6Data?: BackendData;
}

/** One node's subnet lease, as the subnet manager knows it. */
export interface Lease extends LeaseAttrs {
  /** the node's IPv4 subnet, network address form: 10.244.1.0/24; '' for IPv6-only */
  subnet: string;
  /** the node's IPv6 subnet, network address form: fd00:10:244:1::/64 (flannel's IPv6Subnet) */
  ipv6Subnet?: string;
  /** Kubernetes node name, or the etcd key, for logs */
  nodeName?: string;
  /** when an etcd lease runs out; absent for Kubernetes leases */
  expiration?: Date;
}

/** What this node held before a restart (from its subnet.env), so it can be found and asked for again. */
export interface PriorLease {
  /** the previous node subnet, network form: 10.244.1.0/24 */
  subnet?: string;
  /** the previous IPv6 node subnet, network form: fd00:10:244:1::/64 */
  ipv6Subnet?: string;
}

/**
 * Where leases come from: Kubernetes Node objects or etcd. Watching is
 * level-triggered: `onLeases` always gets the complete current set (this
 * node's own lease included), so a backend can reconcile exactly.
 */
export interface SubnetManager {
  readonly kind: 'kube' | 'etcd';
  getNetworkConfig(): Promise<NetworkConfig>;
  /**
   * Gets (or keeps) this node's lease and publishes the attributes. `prior`
   * names the subnet this node had: asked for first when free, and a lease
   * on it carrying our VTEP MAC is ours even under an older public IP.
   */
  acquireLease(attrs: LeaseAttrs, signal?: AbortSignal, prior?: PriorLease): Promise<Lease>;
  /**
   * Calls `onLeases` with the full set after the first list and after every
   * change. Errors are retried with backoff and never turn into an empty
   * set. Resolves once `signal` aborts.
   */
  watchLeases(onLeases: (leases: Lease[]) => void, signal: AbortSignal): Promise<void>;
  /**
   * The node is ready (rules, subnet file, first reconcile): flannel's
   * CompleteLease. The kube manager sets NetworkUnavailable=False here.
   */
  leaseReady?(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/**
 * The host interface overlay traffic leaves through (flannel's
 * ExternalInterface). The IPv4 fields are '' when IPv4 is off (an IPv6-only
 * cluster); the IPv6 fields are present when IPv6 is on.
 */
export interface ExternalInterface {
  name: string;
  index: number;
  mtu: number;
  /** the IPv4 address on `name` used as the node's public IP and VTEP source */
  ip: string;
  /** `ip` with its prefix, e.g. 192.168.50.2/24: tells which nodes share our L2 */
  cidr: string;
  /** the address advertised to others when --public-ip differs from `ip` */
  publicIP: string;
  /** the IPv6 address on `name` used as the IPv6 VTEP source (flannel's ExtV6Addr) */
  ipv6?: string;
  /** `ipv6` with its prefix, e.g. fd00:50::2/64 */
  ipv6Cidr?: string;
  /** the IPv6 address advertised to others: --public-ipv6, else `ipv6` */
  publicIPv6?: string;
}

export interface ReconcileReport {
  added: number;
  updated: number;
  removed: number;
  /** remote subnets whose kernel entries are all in place after this pass (unchanged or written now) */
  programmed: number;
  errors: string[];
}

export interface Backend {
  readonly type: BackendConfig['type'];
  /** Creates what must exist before the lease is published (flannel.1) and returns its data. */
  prepare(ext: ExternalInterface): Promise<BackendData>;
  /**
   * EnableIPv6: creates what the IPv6 overlay needs before the lease is
   * published (flannel-v6.<VNI>) and returns its data (flannel's
   * BackendV6Data). A backend without it does not carry IPv6, and the agent
   * refuses a config with EnableIPv6 rather than ignore it.
   */
  prepareV6?(ext: ExternalInterface): Promise<BackendData>;
  /** Our lease is known: address the device and return the pod MTU. */
  configure(own: Lease): Promise<{ mtu: number }>;
  /** Makes the kernel match exactly these remote leases (our own excluded). */
  reconcile(remote: Lease[]): ReconcileReport;
  /**
   * Edge-triggered: the same result as reconcile when nothing drifted, but
   * writing only the entries of the leases that changed since the last call
   * and without reading the kernel. Optional; reconcile stands in.
   */
  update?(remote: Lease[]): ReconcileReport;
}
