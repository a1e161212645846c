// Extraction of a single executable's embedded native files, driven with a
// fake source on temporary directories: private directory checks, reuse,
// corruption, a racing first run, and clean-up of older builds.
import { afterAll, describe, expect, it } from 'vitest';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, utimesSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AssetError, DEFAULT_CACHE_ROOT, cacheRoot, extractAssets, manifestKey, parseManifest, type AssetSource } from '../../src/sea/assets.js';

const isRoot = process.geteuid?.() === 0;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tsf-assets-'));
  dirs.push(d);
  return d;
}

const digest = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function fakeSource(files: Record<string, string>, onRead?: (name: string) => void): AssetSource & { reads: string[] } {
  const data = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, Buffer.from(v)]));
  const reads: string[] = [];
  return {
    reads,
    manifest: { files: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, { sha256: digest(v), size: v.length }])) },
    read(name) {
      reads.push(name);
      onRead?.(name);
      return data[name]!;
    },
  };
}

const FILES = { 'koffi.node': 'addon bytes', 'libtsfnl.so': 'shim bytes, a bit longer' };

describe('extractAssets', () => {
  it('writes each file once into a 0700 directory named by the content hash', () => {
    const root = join(tempDir(), 'cache');
    const src = fakeSource(FILES);
    const paths = extractAssets(src, root);
    const key = manifestKey(src.manifest);
    expect(paths).toEqual({ 'koffi.node': join(root, key, 'koffi.node'), 'libtsfnl.so': join(root, key, 'libtsfnl.so') });
    expect(readFileSync(paths['libtsfnl.so']!, 'utf8')).toBe(FILES['libtsfnl.so']);
    expect(statSync(root).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, key)).mode & 0o777).toBe(0o700);
    expect(statSync(paths['koffi.node']!).mode & 0o777).toBe(0o500);
    expect(readdirSync(root)).toEqual([key]);
    // A later run only stats: nothing is read from the executable again.
    const again = fakeSource(FILES);
    expect(extractAssets(again, root)).toEqual(paths);
    expect(again.reads).toEqual([]);
  });

  it('uses a new directory when any file changes', () => {
    const root = join(tempDir(), 'cache');
    const a = extractAssets(fakeSource(FILES), root);
    const b = extractAssets(fakeSource({ ...FILES, 'libtsfnl.so': 'rebuilt shim' }), root);
    expect(b['libtsfnl.so']).not.toBe(a['libtsfnl.so']);
    expect(readFileSync(a['libtsfnl.so']!, 'utf8')).toBe(FILES['libtsfnl.so']);
    expect(readFileSync(b['libtsfnl.so']!, 'utf8')).toBe('rebuilt shim');
  });

  it('refuses a cache dir others can write to, a symlink, or one owned by someone else', () => {
    const base = tempDir();
    const open = join(base, 'open');
    mkdirSync(open, { mode: 0o700 });
    chmodSync(open, 0o777);
    expect(() => extractAssets(fakeSource(FILES), open)).toThrow(/writable by group or others/);
    const groupWritable = join(base, 'group');
    mkdirSync(groupWritable);
    chmodSync(groupWritable, 0o770);
    expect(() => extractAssets(fakeSource(FILES), groupWritable)).toThrow(AssetError);
    const real = join(base, 'real');
    mkdirSync(real, { mode: 0o700 });
    symlinkSync(real, join(base, 'link'));
    expect(() => extractAssets(fakeSource(FILES), join(base, 'link'))).toThrow(/symlink/);
    if (isRoot) {
      const foreign = join(base, 'foreign');
      mkdirSync(foreign, { mode: 0o700 });
      chownSync(foreign, 65534, 65534);
      expect(() => extractAssets(fakeSource(FILES), foreign)).toThrow(/owned by uid 65534/);
    }
    for (const d of [open, groupWritable, real]) expect(readdirSync(d)).toEqual([]);
  });

  it('refuses an extracted directory that became writable by others', () => {
    const root = join(tempDir(), 'cache');
    const paths = extractAssets(fakeSource(FILES), root);
    chmodSync(join(paths['koffi.node']!, '..'), 0o777);
    expect(() => extractAssets(fakeSource(FILES), root)).toThrow(/writable by group or others/);
  });

  it('re-extracts when a file went missing, moving the damaged directory aside', () => {
    const root = join(tempDir(), 'cache');
    const paths = extractAssets(fakeSource(FILES), root);
    unlinkSync(paths['koffi.node']!);
    const src = fakeSource(FILES);
    expect(extractAssets(src, root)).toEqual(paths);
    expect(src.reads.sort()).toEqual(['koffi.node', 'libtsfnl.so']);
    expect(readFileSync(paths['koffi.node']!, 'utf8')).toBe(FILES['koffi.node']);
  });

  it('rejects embedded bytes that do not match the manifest and leaves no directory', () => {
    const root = join(tempDir(), 'cache');
    const src = fakeSource(FILES);
    src.manifest.files['koffi.node']!.sha256 = '0'.repeat(64);
    expect(() => extractAssets(src, root)).toThrow(/does not match/);
    expect(readdirSync(root)).toEqual([]);
  });

  it('lets a racing first run win and uses its copy', () => {
    const root = join(tempDir(), 'cache');
    let raced = false;
    // While this run is writing its temporary copy, another one completes.
    const src = fakeSource(FILES, () => {
      if (raced) return;
      raced = true;
      extractAssets(fakeSource(FILES), root);
    });
    const paths = extractAssets(src, root);
    expect(raced).toBe(true);
    expect(readFileSync(paths['libtsfnl.so']!, 'utf8')).toBe(FILES['libtsfnl.so']);
    expect(readdirSync(root)).toEqual([manifestKey(src.manifest)]);
  });

  it('removes directories of older builds after an hour, not sooner', () => {
    const root = join(tempDir(), 'cache');
    const old = extractAssets(fakeSource({ 'a.so': 'old' }), root);
    const recent = extractAssets(fakeSource({ 'a.so': 'recent' }), root);
    const hourAgo = new Date(Date.now() - 2 * 60 * 60 * 1000);
    utimesSync(join(old['a.so']!, '..'), hourAgo, hourAgo);
    extractAssets(fakeSource({ 'a.so': 'current' }), root);
    expect(existsSync(old['a.so']!)).toBe(false);
    expect(existsSync(recent['a.so']!)).toBe(true);
  });
});

describe('manifest and cache root', () => {
  it('parses a valid manifest and rejects path tricks or bad digests', () => {
    const ok = { files: { 'koffi.node': { sha256: 'a'.repeat(64), size: 3 } } };
    expect(parseManifest(JSON.stringify(ok))).toEqual(ok);
    for (const bad of [
      { files: { '../evil.so': { sha256: 'a'.repeat(64), size: 1 } } },
      { files: { 'x/y.so': { sha256: 'a'.repeat(64), size: 1 } } },
      { files: { 'x.so': { sha256: 'nothex', size: 1 } } },
      { files: { 'x.so': { sha256: 'a'.repeat(64), size: -1 } } },
      { nofiles: true },
    ]) {
      expect(() => parseManifest(JSON.stringify(bad))).toThrow(AssetError);
    }
    expect(() => parseManifest('not json')).toThrow(AssetError);
  });

  it('defaults to a root-owned place outside /tmp and honours TSFLANNEL_CACHE_DIR', () => {
    expect(cacheRoot({})).toBe(DEFAULT_CACHE_ROOT);
    expect(DEFAULT_CACHE_ROOT.startsWith('/tmp')).toBe(false);
    expect(cacheRoot({ TSFLANNEL_CACHE_DIR: '/run/x' })).toBe('/run/x');
    expect(() => cacheRoot({ TSFLANNEL_CACHE_DIR: 'relative/dir' })).toThrow(AssetError);
  });
});
