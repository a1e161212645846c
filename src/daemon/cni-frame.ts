// The CNI socket protocol (docs/architecture-cni-path.md): one request frame
// and one answer frame per connection, each a 4-byte big-endian length and
// that many bytes of UTF-8 JSON. This module only encodes and validates; the
// server (cni-server.ts) and the probes of status and doctor use it.
import { CniError, type ErrorCodeValue } from '../cni/errors.js';
import { CURRENT_VERSION } from '../cni/versions.js';
import type { CniResponse } from '../plugin/handler.js';

export const DEFAULT_CNI_SOCKET = '/run/tsflannel/cni.sock';
export const PROTOCOL_VERSION = 1;
/** The largest frame body either side accepts (JSON bytes, after the length). */
export const MAX_FRAME = 2 * 1024 * 1024;
/** Only these variables cross the socket (the forwarder sends nothing else). */
export const ENV_NAME = /^(CNI_|TSFLANNEL_)[^=\0]*$/;

export interface CniFrameRequest {
  env: Record<string, string>;
  stdin: Buffer;
  /** when the forwarder gives up (ms since the epoch); absent: it did not say */
  deadline?: number;
}

export class FrameError extends Error {
  override readonly name = 'FrameError';
}

export function encodeFrame(body: object): Buffer {
  const json = Buffer.from(JSON.stringify(body), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(json.length, 0);
  return Buffer.concat([head, json]);
}

export function encodeRequest(env: Record<string, string>, stdin: Uint8Array): Buffer {
  return encodeFrame({ v: PROTOCOL_VERSION, env, stdin: Buffer.from(stdin).toString('base64') });
}

export function encodeResponse(res: CniResponse): Buffer {
  return encodeFrame({ v: PROTOCOL_VERSION, stdout: res.stdout.toString('base64'), exitCode: res.exitCode, stderr: res.stderr });
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates a request body; anything off is a FrameError naming what. */
export function decodeRequest(body: Buffer): CniFrameRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new FrameError(`request is not JSON: ${(err as Error).message}`);
  }
  if (!isRecord(raw)) throw new FrameError('request is not a JSON object');
  if (raw.v !== PROTOCOL_VERSION) throw new FrameError(`unsupported protocol version ${JSON.stringify(raw.v)}`);
  if (!isRecord(raw.env)) throw new FrameError('request has no "env" object');
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw.env)) {
    if (!ENV_NAME.test(name)) throw new FrameError(`env name ${JSON.stringify(name.slice(0, 64))} is not CNI_* or TSFLANNEL_*`);
    if (typeof value !== 'string') throw new FrameError(`env ${name} is not a string`);
    env[name] = value;
  }
  if (typeof raw.stdin !== 'string' || raw.stdin.length % 4 !== 0 || !BASE64.test(raw.stdin)) {
    throw new FrameError('request "stdin" is not base64');
  }
  const stdin = Buffer.from(raw.stdin, 'base64');
  if (raw.deadline === undefined) return { env, stdin };
  if (typeof raw.deadline !== 'number' || !Number.isSafeInteger(raw.deadline) || raw.deadline < 0) {
    throw new FrameError('request "deadline" is not a time in milliseconds since the epoch');
  }
  return { env, stdin, deadline: raw.deadline };
}

/** Validates an answer body (used by the status and doctor probes). */
export function decodeResponse(body: Buffer): CniResponse {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new FrameError(`answer is not JSON: ${(err as Error).message}`);
  }
  if (!isRecord(raw) || raw.v !== PROTOCOL_VERSION) throw new FrameError('answer is not a version 1 frame');
  if (typeof raw.stdout !== 'string' || !Number.isInteger(raw.exitCode) || typeof raw.stderr !== 'string') {
    throw new FrameError('answer lacks stdout, exitCode or stderr');
  }
  return { stdout: Buffer.from(raw.stdout, 'base64'), exitCode: raw.exitCode as number, stderr: raw.stderr };
}

/** An answer carrying a CNI error, for calls the handler never saw. */
export function errorResponse(code: ErrorCodeValue, msg: string, stderr = ''): CniResponse {
  const err = new CniError(code, msg);
  return { stdout: Buffer.from(`${JSON.stringify(err.toJSON(CURRENT_VERSION))}\n`), exitCode: 1, stderr };
}

/**
 * Collects one frame from a stream of chunks. push() returns the body once
 * it is complete; a length over MAX_FRAME throws at once, before the body is
 * buffered.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private need: number | undefined;

  push(chunk: Buffer): Buffer | undefined {
    this.chunks.push(chunk);
    this.have += chunk.length;
    if (this.need === undefined) {
      if (this.have < 4) return undefined;
      const all = Buffer.concat(this.chunks, this.have);
      this.chunks = [all];
      const n = all.readUInt32BE(0);
      if (n > MAX_FRAME) throw new FrameError(`frame of ${n} bytes is over the ${MAX_FRAME}-byte limit`);
      this.need = n;
    }
    if (this.have < 4 + this.need) return undefined;
    const all = Buffer.concat(this.chunks, this.have);
    if (all.length > 4 + this.need) throw new FrameError('bytes after the request frame');
    return all.subarray(4);
  }
}
