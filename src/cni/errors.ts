// CNI error codes (SPEC 1.1.0 section "Error" plus the libcni constants) and
// the error type every layer throws so the entry point can print it as the
// spec's error JSON.

export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodingFailure: 6,
  InvalidNetworkConfig: 7,
  InvalidNetns: 8,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  LimitedConnectivity: 51,
  Internal: 999,
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

const MAX_MESSAGE = 2048;

function cap(text: string): string {
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text;
}

export class CniError extends Error {
  override readonly name = 'CniError';
  constructor(
    readonly code: ErrorCodeValue,
    msg: string,
    readonly details?: string,
  ) {
    super(msg);
  }

  toJSON(cniVersion: string): CniErrorJson {
    // A backstop: values are clipped where they are echoed, but no message
    // may grow with its input (runtimes log msg whole).
    const out: CniErrorJson = { cniVersion, code: this.code, msg: cap(this.message) };
    if (this.details) out.details = cap(this.details);
    return out;
  }
}

/** Wraps anything thrown into a CniError, keeping CniErrors as they are. */
export function asCniError(err: unknown, code: ErrorCodeValue = ErrorCode.Internal): CniError {
  if (err instanceof CniError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new CniError(code, msg);
}
