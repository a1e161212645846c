// Typed getters for decoded JSON config and the address checks the protocol
// needs. Every failure is a CniError 7 that names the field and the value, so
// a runtime log line is enough to fix the config.
import { parseIp } from '../net/ip.js';
import { CniError, ErrorCode } from './errors.js';

const MAX_SHOWN = 80;

/** A short, printable rendering of a bad value for error messages. */
export function describeValue(value: unknown): string {
  let text: string;
  try {
    text = value === undefined ? 'undefined' : (JSON.stringify(value) ?? String(value));
  } catch {
    text = String(value);
  }
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}...` : text;
}

/** Longest echo of an input value in a message, in UTF-8 bytes. */
export const MAX_ECHO_BYTES = 256;

/**
 * `text` cut to MAX_ECHO_BYTES (on a character boundary) with an ellipsis:
 * an error message must not grow with its input (a 1 MB name gave a 1 MB msg).
 */
export function clip(text: string, maxBytes = MAX_ECHO_BYTES): string {
  if (Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (bytes + n > maxBytes) break;
    out += ch;
    bytes += n;
  }
  return `${out}…`;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(key: string, expected: string, value: unknown): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, `invalid "${key}": expected ${expected}, got ${describeValue(value)}`);
}

/**
 * Own properties only: a key such as "constructor" must read as absent, not
 * as Object.prototype's member. JSON null counts as absent, as in Go.
 */
function present(obj: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

export function optString(obj: Record<string, unknown>, key: string): string | undefined {
  const v = present(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(key, 'a string', v);
  return v;
}

export function optBool(obj: Record<string, unknown>, key: string): boolean | undefined {
  const v = present(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw invalid(key, 'true or false', v);
  return v;
}

export function optInt(obj: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = present(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalid(key, `an integer from ${min} to ${max}`, v);
  }
  return v;
}

export function optObject(obj: Record<string, unknown>, key: string): Record<string, unknown> | undefined {
  const v = present(obj, key);
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw invalid(key, 'an object', v);
  return v;
}

export function optArray(obj: Record<string, unknown>, key: string): unknown[] | undefined {
  const v = present(obj, key);
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) throw invalid(key, 'a list', v);
  return v;
}

// Our own parser rather than node:net's isIP: loading node:net (and the
// stream modules it needs) cost the standalone plugin's cold call a few ms.

/** Dotted quad without leading zeros (Go's net.ParseIP rejects them too). */
export function isIPv4(s: string): boolean {
  return parseIp(s, 4) !== undefined;
}

/** IPv6 text without a zone: a zone ("%eth0") has no meaning in a result. */
export function isIPv6(s: string): boolean {
  return parseIp(s, 6) !== undefined;
}

export function isIP(s: string): boolean {
  return isIPv4(s) || isIPv6(s);
}

function splitCidr(s: string): [string, number] | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const prefix = s.slice(slash + 1);
  if (!/^(0|[1-9]\d{0,2})$/.test(prefix)) return undefined;
  return [s.slice(0, slash), Number(prefix)];
}

/** "10.244.1.5/24": host bits may be set, as in a CNI result address. */
export function isIPv4Cidr(s: string): boolean {
  const p = splitCidr(s);
  return p !== undefined && p[1] <= 32 && isIPv4(p[0]);
}

export function isIPv6Cidr(s: string): boolean {
  const p = splitCidr(s);
  return p !== undefined && p[1] <= 128 && isIPv6(p[0]);
}

export function isIPCidr(s: string): boolean {
  return isIPv4Cidr(s) || isIPv6Cidr(s);
}
