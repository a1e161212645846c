// host-local compatible IP address management.
export type { IpamRange } from './range.js';
export {
  DEFAULT_DATA_DIR,
  DEFAULT_LOCK_TIMEOUT_MS,
  HostLocalIpam,
  type Allocation,
  type IpamConfig,
  type LeaseRecord,
  type PoolStats,
} from './host-local.js';
export { parseRequestedIp, requestedIps, type RequestSources } from './requested.js';
