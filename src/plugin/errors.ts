// Kernel refusals that have a CNI meaning get its code; the rest stay 999.
import { asCniError, CniError, ErrorCode } from '../cni/errors.js';
import { NetlinkError } from '../netlink/index.js';

/**
 * EPERM/EACCES from the kernel mean the plugin lacks a right (CAP_NET_ADMIN,
 * a read-only /proc/sys): an environment the runtime must fix, code 5 as
 * the reference plugins' I/O failures. Named-link ENOENT/EEXIST cases are
 * mapped where the name is known (network.ts); anything else is 999.
 */
export function cniErrorOf(err: unknown): CniError {
  if (err instanceof NetlinkError && (err.errno === 'EPERM' || err.errno === 'EACCES')) {
    return new CniError(ErrorCode.IOFailure, `permission denied by the kernel: ${err.message}`, 'the plugin needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and a writable /proc/sys');
  }
  return asCniError(err);
}
