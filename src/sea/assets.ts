// Files embedded in a single executable (SEA) that must exist on disk to be
// used: native code can only be dlopen()ed from a path. They are written once
// into a private, root-owned directory named after their content hash, so
// every later run (and every binary built from the same inputs) reuses them.
// Nothing here knows what the files are; src/netlink/ffi.ts decides that.
import {
  closeSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';
import * as sea from 'node:sea';
// node:crypto only to extract (once per build and node): every CNI call of
// the standalone plugin checks the manifest, and loading node:crypto for
// that would cost it more than the check.
import { nodeCrypto, sha256Hex } from '../digest.js';

/** The SEA asset that lists the files to extract, written by scripts/package.sh. */
export const MANIFEST_ASSET = 'tsflannel-assets.json';

/**
 * Not /tmp: it may be noexec (then dlopen fails) and is shared with every
 * user. /var/lib survives reboots, so the files are extracted once per build.
 */
export const DEFAULT_CACHE_ROOT = '/var/lib/tsflannel/sea';

/** Extracted directories of other builds are removed once this old. */
const STALE_AFTER_MS = 60 * 60 * 1000;

export interface AssetEntry {
  sha256: string;
  size: number;
}

export interface AssetManifest {
  /** file name → content digest; the names are also the on-disk names */
  files: Record<string, AssetEntry>;
}

/** Where extraction reads from: the SEA itself, or a fake in tests. */
export interface AssetSource {
  manifest: AssetManifest;
  read(name: string): Uint8Array;
}

export class AssetError extends Error {
  override readonly name = 'AssetError';
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export function inSea(): boolean {
  return sea.isSea();
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const DIGEST = /^[0-9a-f]{64}$/;

export function parseManifest(text: string): AssetManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new AssetError(`asset manifest is not JSON: ${(err as Error).message}`);
  }
  const files = (raw as { files?: unknown } | null)?.files;
  if (typeof files !== 'object' || files === null || Array.isArray(files)) {
    throw new AssetError('asset manifest has no "files" object');
  }
  const out: Record<string, AssetEntry> = {};
  for (const [name, entry] of Object.entries(files as Record<string, unknown>)) {
    const e = entry as Partial<AssetEntry> | null;
    if (!NAME.test(name) || !e || typeof e.sha256 !== 'string' || !DIGEST.test(e.sha256) || !Number.isSafeInteger(e.size) || (e.size as number) < 0) {
      throw new AssetError(`asset manifest entry ${JSON.stringify(name)} is invalid`);
    }
    out[name] = { sha256: e.sha256, size: e.size as number };
  }
  return { files: out };
}

/** One short key for the whole set: a changed file gives a new directory. */
export function manifestKey(manifest: AssetManifest): string {
  const lines = Object.keys(manifest.files)
    .sort()
    .map((name) => `${name} ${manifest.files[name]!.sha256} ${manifest.files[name]!.size}\n`);
  return sha256Hex(lines.join('')).slice(0, 16);
}

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.TSFLANNEL_CACHE_DIR;
  if (fromEnv === undefined || fromEnv === '') return DEFAULT_CACHE_ROOT;
  if (!fromEnv.startsWith('/') || fromEnv.includes('\0')) {
    throw new AssetError(`TSFLANNEL_CACHE_DIR must be an absolute path, got ${JSON.stringify(fromEnv)}`);
  }
  return fromEnv;
}

function euid(): number {
  return process.geteuid ? process.geteuid() : 0;
}

/**
 * A directory is private when it is a real directory (not a symlink), owned
 * by us, and nobody else may write to it: otherwise another user could swap
 * the code we are about to load.
 */
function checkPrivateDir(path: string, st: Stats): void {
  if (st.isSymbolicLink() || !st.isDirectory()) {
    throw new AssetError(`${path} is not a directory (a symlink or a file is refused)`, 'ENOTDIR');
  }
  if (st.uid !== euid()) {
    throw new AssetError(`${path} is owned by uid ${st.uid}, not by uid ${euid()}; refusing to load code from it`, 'EPERM');
  }
  if ((st.mode & 0o022) !== 0) {
    throw new AssetError(
      `${path} is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); refusing to load code from it`,
      'EPERM',
    );
  }
}

function ensureRoot(root: string): void {
  try {
    mkdirSync(root, { recursive: true, mode: 0o700 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new AssetError(`cannot create ${root}: ${e.message} (set TSFLANNEL_CACHE_DIR to a private directory)`, e.code);
  }
  checkPrivateDir(root, lstatSync(root));
}

function lstatOrUndefined(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** True when `dir` holds every file at its expected size; throws if it is not private. */
function isComplete(dir: string, manifest: AssetManifest): boolean {
  const st = lstatOrUndefined(dir);
  if (!st) return false;
  checkPrivateDir(dir, st);
  for (const [name, entry] of Object.entries(manifest.files)) {
    const f = lstatOrUndefined(join(dir, name));
    if (!f || !f.isFile() || f.uid !== euid() || (f.mode & 0o022) !== 0 || f.size !== entry.size) return false;
  }
  return true;
}

function writeDurably(path: string, data: Uint8Array): void {
  const fd = openSync(path, 'wx', 0o500);
  try {
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function fsyncDir(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function sha256(data: Uint8Array): string {
  return nodeCrypto().createHash('sha256').update(data).digest('hex');
}

/**
 * Writes every file into a fresh temporary directory, then renames it into
 * place. rename(2) of a directory onto an existing non-empty one fails, so
 * when two first runs race, one wins and the other uses the winner's copy.
 */
function extractInto(root: string, final: string, source: AssetSource): void {
  const tmp = join(root, `.tmp-${process.pid}-${nodeCrypto().randomBytes(4).toString('hex')}`);
  mkdirSync(tmp, { mode: 0o700 });
  try {
    for (const [name, entry] of Object.entries(source.manifest.files)) {
      const data = source.read(name);
      if (data.length !== entry.size || sha256(data) !== entry.sha256) {
        throw new AssetError(`embedded file ${name} does not match its manifest digest (corrupt binary?)`, 'EBADMSG');
      }
      writeDurably(join(tmp, name), data);
    }
    fsyncDir(tmp);
    try {
      renameSync(tmp, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // Another process finished first; its copy is as good as ours.
    }
    fsyncDir(root);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Best effort: directories of older builds and abandoned temporaries. */
function pruneStale(root: string, keep: string, now: number): void {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return;
  }
  for (const name of names) {
    if (name === keep || !(/^[0-9a-f]{16}$/.test(name) || name.startsWith('.tmp-'))) continue;
    const path = join(root, name);
    const st = lstatOrUndefined(path);
    if (st && st.isDirectory() && now - st.mtimeMs > STALE_AFTER_MS) {
      rmSync(path, { recursive: true, force: true });
    }
  }
}

function moveAside(dir: string, root: string): void {
  try {
    renameSync(dir, join(root, `.tmp-stale-${process.pid}-${nodeCrypto().randomBytes(4).toString('hex')}`));
  } catch (err) {
    // A concurrent run moved it first.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * Makes sure the files of `source` exist under `root` and returns their
 * paths by name. Safe to call from many processes at once.
 */
export function extractAssets(source: AssetSource, root: string, now: number = Date.now()): Record<string, string> {
  ensureRoot(root);
  const key = manifestKey(source.manifest);
  const final = join(root, key);
  // Retried because a racing run may move a directory aside under us; see below.
  for (let attempt = 0; !isComplete(final, source.manifest); attempt++) {
    if (attempt === 3) throw new AssetError(`could not extract embedded files into ${final}`, 'EIO');
    // A directory that exists but is incomplete was not made by us (ours
    // appear atomically): move it aside rather than trust or patch it.
    if (lstatOrUndefined(final)) moveAside(final, root);
    extractInto(root, final, source);
    pruneStale(root, key, now);
  }
  const paths: Record<string, string> = {};
  for (const name of Object.keys(source.manifest.files)) paths[name] = join(final, name);
  return paths;
}

function seaSource(): AssetSource {
  let text: string;
  try {
    text = sea.getAsset(MANIFEST_ASSET, 'utf8');
  } catch (err) {
    throw new AssetError(`this executable has no ${MANIFEST_ASSET} asset: ${(err as Error).message}`);
  }
  return {
    manifest: parseManifest(text),
    read: (name) => new Uint8Array(sea.getAsset(name)),
  };
}

let extracted: Record<string, string> | undefined;

/** Paths of the embedded files, extracting them on first use. SEA only. */
export function seaAssetPaths(): Record<string, string> {
  if (!inSea()) throw new AssetError('not running as a single executable');
  extracted ??= extractAssets(seaSource(), cacheRoot());
  return extracted;
}

/** A small embedded text file, read straight from the executable. SEA only. */
export function seaTextAsset(name: string): string {
  return sea.getAsset(name, 'utf8');
}
