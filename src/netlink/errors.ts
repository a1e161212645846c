/** Errno names the callers branch on to stay idempotent. */
export type Errno = 'EEXIST' | 'ENOENT' | 'EBUSY' | 'EPERM' | 'EINVAL' | 'ENODEV' | 'EAGAIN' | 'ERANGE' | string;

/** A kernel or shim failure, keeping the errno so callers can decide. */
export class NetlinkError extends Error {
  override readonly name = 'NetlinkError';
  /** The Go stack of a panic in the shim: for a debug log only, never for a message. */
  goStack?: string;
  /** What a pod op's failure means (PodFailure), when the shim tagged it. */
  reason?: string;
  constructor(
    readonly op: string,
    message: string,
    readonly errno?: Errno,
    readonly code?: number,
  ) {
    super(`${op}: ${message}`);
  }
}

export function isErrno(err: unknown, ...names: Errno[]): boolean {
  return err instanceof NetlinkError && err.errno !== undefined && names.includes(err.errno);
}

/** Missing link, address, route or neighbour: what an idempotent delete ignores. */
export function isNotFound(err: unknown): boolean {
  return isErrno(err, 'ENOENT', 'ENODEV', 'ESRCH', 'EADDRNOTAVAIL');
}

export function isExists(err: unknown): boolean {
  return isErrno(err, 'EEXIST');
}

/**
 * Runs a change and reports whether it took effect: false when the kernel
 * answered with an error `tolerated` accepts (already there, already gone),
 * which is what makes creates and deletes idempotent.
 */
export function applied(change: () => unknown, tolerated: (err: unknown) => boolean): boolean {
  try {
    change();
    return true;
  } catch (err) {
    if (tolerated(err)) return false;
    throw err;
  }
}
