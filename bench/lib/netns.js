// Network namespaces and temp dirs for benchmarks. Every name carries a
// per-run prefix (tsfbXXXX-) so a benchmark never touches namespaces it did
// not make, and everything made is registered for cleanup at once.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onCleanup } from './cleanup.js';

export const PREFIX = `tsfb${randomBytes(2).toString('hex')}`;

/** @type {Set<string>} */
const created = new Set();
let registered = false;

function ensureRegistered() {
  if (registered) return;
  registered = true;
  onCleanup('network namespaces', () => delNetns([...created]));
}

/** @param {string} label */
export function nsName(label) {
  return `${PREFIX}-${label}`;
}

/** @param {string} name */
export function nsPath(name) {
  return `/var/run/netns/${name}`;
}

/** Runs `ip -batch -` with the given lines; returns the exit status and stderr. */
function ipBatch(lines) {
  const r = spawnSync('ip', ['-force', '-batch', '-'], { input: lines.join('\n') + '\n', encoding: 'utf8' });
  return { status: r.status ?? -1, stderr: r.stderr ?? '' };
}

/**
 * Creates namespaces for the given labels in one `ip -batch` run (hundreds
 * take well under a second) and returns their names. `lo` is brought up when
 * asked, which a node netns needs and a bare pod netns does not.
 * @param {string[]} labels
 * @param {{ lo?: boolean }} [opts]
 * @returns {string[]}
 */
export function addNetns(labels, opts = {}) {
  ensureRegistered();
  const names = labels.map(nsName);
  for (const n of names) created.add(n);
  const r = ipBatch(names.map((n) => `netns add ${n}`));
  if (r.status !== 0) throw new Error(`ip netns add failed: ${r.stderr.trim()}`);
  // ip -batch takes no per-line -n, so lo goes up one namespace at a time.
  if (opts.lo) for (const n of names) execFileSync('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
  return names;
}

/**
 * Deletes namespaces (links inside go with them); missing ones are ignored.
 * @param {string[]} names
 */
export function delNetns(names) {
  if (names.length === 0) return;
  ipBatch(names.map((n) => `netns del ${n}`));
  for (const n of names) created.delete(n);
}

/** Namespaces of this run still present, for a leak check. */
export function leftoverNetns() {
  const out = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${PREFIX}-`));
}

/**
 * A fresh temp dir removed at cleanup.
 * @param {string} label
 */
export function tempDir(label) {
  const dir = mkdtempSync(join(tmpdir(), `${PREFIX}-${label}-`));
  onCleanup(`temp dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
