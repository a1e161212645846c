// The single place that touches FFI: it loads the Go shim with koffi and
// exposes one synchronous `call(op, request)`. Swapping the FFI binding means
// rewriting this file only.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { NetlinkError } from './errors.js';

/** Bumped with native/tsfnl ShimVersion; a mismatch means a stale build. */
const EXPECTED_SHIM_VERSION = 1;

type RawCall = (op: string, request: string) => string;

let rawCall: RawCall | undefined;

/** Where the shim is: TSFLANNEL_NETLINK_LIB, else the repository's build. */
export function shimPath(): string {
  const fromEnv = process.env.TSFLANNEL_NETLINK_LIB;
  if (fromEnv) return fromEnv;
  return fileURLToPath(new URL('../../native/build/libtsfnl.so', import.meta.url));
}

function load(): RawCall {
  const path = shimPath();
  if (!existsSync(path)) {
    throw new NetlinkError('load', `netlink shim not found at ${path} (run scripts/setup.sh)`, 'ENOENT', 2);
  }
  // koffi is CommonJS with a native addon; require keeps it out of start-up
  // until the first netlink call.
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as typeof import('koffi');
  const lib = koffi.load(path);
  const free = lib.func('void TsfFree(void *p)');
  const heapStr = koffi.disposable('TsfReply', 'str', free);
  const fn = lib.func('TsfCall', heapStr, ['str', 'str']) as (op: string, req: string) => string;
  return fn;
}

interface Reply {
  ok: boolean;
  result?: unknown;
  error?: string;
  errno?: string;
  code?: number;
}

/** Runs one shim op and returns its result, or throws a NetlinkError. */
export function call(op: string, request: object): unknown {
  if (!rawCall) {
    rawCall = load();
    checkVersion(rawCall);
  }
  return unwrap(op, rawCall(op, JSON.stringify(request)));
}

function unwrap(op: string, text: string): unknown {
  const reply = JSON.parse(text) as Reply;
  if (!reply.ok) {
    throw new NetlinkError(op, reply.error ?? 'unknown error', reply.errno, reply.code);
  }
  return reply.result;
}

function checkVersion(fn: RawCall): void {
  const got = unwrap('version', fn('version', '{}')) as { version: number };
  if (got.version !== EXPECTED_SHIM_VERSION) {
    rawCall = undefined;
    throw new NetlinkError(
      'version',
      `netlink shim version ${got.version} at ${shimPath()}, expected ${EXPECTED_SHIM_VERSION} (rebuild with scripts/build-native.sh)`,
    );
  }
}
