// The node's WireGuard key pair. The private key is generated once and kept
// in a file (flannel: /run/flannel/wgkey, or WIREGUARD_KEY_FILE), so a
// restarted agent publishes the same public key and no peer has to change.
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { isWireguardKey } from '../config.js';

export const DEFAULT_KEY_FILE = '/run/flannel/wgkey';

/** flannel's override of the key path. */
export function keyFileFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.WIREGUARD_KEY_FILE || DEFAULT_KEY_FILE;
}

// PKCS#8 wrapping of a raw X25519 private key (RFC 8410): a fixed prefix.
const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** A fresh private key, clamped as `wg genkey` clamps it (RFC 7748). */
export function generatePrivateKey(): string {
  const k = randomBytes(32);
  k[0] &= 248;
  k[31] = (k[31] & 127) | 64;
  return k.toString('base64');
}

/** The public key of a base64 private key, as `wg pubkey` prints it. */
export function publicKeyOf(privateKey: string): string {
  const raw = Buffer.from(privateKey, 'base64');
  if (raw.length !== 32) throw new Error('a WireGuard private key is 32 bytes');
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, raw]), format: 'der', type: 'pkcs8' });
  const jwk = createPublicKey(key).export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new Error('X25519 public key export failed');
  return Buffer.from(jwk.x, 'base64url').toString('base64');
}

export interface KeyPair {
  privateKey: string;
  publicKey: string;
  file: string;
  /** true when this call generated the key */
  created: boolean;
  /** the file was readable by others and was made 0600 */
  tightened: boolean;
}

/**
 * Reads the key file, or creates it (0600, written whole then renamed into
 * place, so a crash never leaves half a key). A file that holds something
 * else is an error, never overwritten: it may be a key someone relies on.
 */
export function loadOrCreateKey(file: string): KeyPair {
  let text: string | undefined;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`reading WireGuard key ${file}: ${(err as Error).message}`);
  }
  if (text === undefined) {
    const privateKey = generatePrivateKey();
    mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, privateKey, { mode: 0o600 });
    renameSync(tmp, file);
    return { privateKey, publicKey: publicKeyOf(privateKey), file, created: true, tightened: false };
  }
  const privateKey = text.trim();
  if (!isWireguardKey(privateKey)) {
    throw new Error(`WireGuard key file ${file} does not hold a base64 private key (as \`wg genkey\` writes); fix or remove it`);
  }
  let tightened = false;
  if ((statSync(file).mode & 0o077) !== 0) {
    chmodSync(file, 0o600);
    tightened = true;
  }
  return { privateKey, publicKey: publicKeyOf(privateKey), file, created: false, tightened };
}
