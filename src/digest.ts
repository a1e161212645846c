// SHA-256 of short text (a container ID and an interface name; the asset
// manifest), through @noble/hashes' plain-JavaScript SHA-256. node:crypto
// would do it, but loading it loads about 30 more of Node's modules (its
// ciphers pull in the stream modules), and the standalone plugin pays module
// loading on every pod's ADD and DEL: about 5 ms against well under 1 ms for
// this. Not for bulk data: the executable's embedded files are still checked
// with node:crypto (src/sea/assets.ts).
import { createRequire } from 'node:module';
import { sha256 } from '@noble/hashes/sha2.js';

/**
 * node:crypto, loaded on first use only: for the work that needs it (bulk
 * digests, random temp names) on paths a CNI call does not take.
 */
export function nodeCrypto(): typeof import('node:crypto') {
  return createRequire(import.meta.url)('node:crypto') as typeof import('node:crypto');
}

/** The last digest: an ADD hashes one attachment's key twice (its veth name and its lock file). */
let last: { text: string; hex: string } | undefined;

/** Lower-case hex SHA-256 of the UTF-8 bytes of `text`. */
export function sha256Hex(text: string): string {
  if (last?.text === text) return last.hex;
  const hex = Buffer.from(sha256(Buffer.from(text, 'utf8'))).toString('hex');
  last = { text, hex };
  return hex;
}
