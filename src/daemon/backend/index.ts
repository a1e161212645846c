// Picks the backend named in net-conf.json.
import type { Logger } from 'pino';
import type { Backend, BackendConfig } from '../types.js';
import { HostGwBackend } from './hostgw.js';
import { VxlanBackend } from './vxlan.js';
import { WireguardBackend } from './wireguard.js';

export { HostGwBackend, type HostGwBackendOptions } from './hostgw.js';
export { WireguardBackend, type WireguardBackendOptions, WIREGUARD_DEVICE, WIREGUARD_OVERHEAD_V4 } from './wireguard.js';
export { VxlanBackend, type VxlanBackendOptions, DEFAULT_VXLAN_PORT, VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6 } from './vxlan.js';

export interface CreateBackendOptions {
  /** the cluster pod network of `family` (NetworkConfig.network or ipv6Network): decides which routes a backend owns */
  network: string;
  /** 4 (default) or 6: the family this instance programs (vxlan and host-gw) */
  family?: 4 | 6;
  /** node netns path; absent = this process's netns */
  netns?: string;
  logger?: Logger;
  /** vxlan only: the VTEP MAC this node published before, to keep it across restarts */
  vtepMac?: string;
}

export function createBackend(cfg: BackendConfig, opts: CreateBackendOptions): Backend {
  const family = opts.family ?? 4;
  const common = {
    network: opts.network,
    ...(family === 6 ? { family } : {}),
    ...(opts.netns ? { netns: opts.netns } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
  };
  switch (cfg.type) {
    case 'vxlan':
      return new VxlanBackend({ config: cfg, ...common, ...(opts.vtepMac ? { vtepMac: opts.vtepMac } : {}) });
    case 'host-gw':
      return new HostGwBackend({ config: cfg, ...common });
    case 'wireguard':
      if (family === 6) throw new Error('the wireguard backend of tsflannel carries IPv4 only; use vxlan or host-gw for IPv6 (EnableIPv6)');
      return new WireguardBackend({ config: cfg, network: opts.network, ...(opts.netns ? { netns: opts.netns } : {}), ...(opts.logger ? { logger: opts.logger } : {}) });
    default: {
      const unknown: never = cfg;
      throw new Error(`unsupported backend type ${JSON.stringify((unknown as { type?: unknown }).type)}`);
    }
  }
}
