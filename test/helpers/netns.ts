// Network namespaces for tests. Every name carries a per-process prefix so
// parallel test files never collide, and `cleanupAll` removes whatever a
// test made even when it failed half way.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

const PREFIX = `tsf${randomBytes(2).toString('hex')}`;
const created = new Set<string>();

export const isRoot = process.getuid?.() === 0;

/** A namespace name unique to this test process, e.g. tsf1a2b-node1. */
export function nsName(label: string): string {
  return `${PREFIX}-${label}`;
}

export function nsPath(name: string): string {
  return `/var/run/netns/${name}`;
}

/** Creates a netns with `lo` up and returns its name. */
export function addNetns(label: string): string {
  const name = nsName(label);
  execFileSync('ip', ['netns', 'add', name]);
  created.add(name);
  execFileSync('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

export function delNetns(name: string): void {
  spawnSync('ip', ['netns', 'del', name]);
  created.delete(name);
}

/** Runs a command inside a netns and returns its stdout; throws on failure. */
export function inNs(name: string, cmd: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', name, cmd, ...args], { encoding: 'utf8' });
}

/** `ip -j ...` inside a netns, parsed. */
export function ipJson<T = unknown>(name: string, args: string[]): T {
  const out = execFileSync('ip', ['-n', name, '-j', ...args], { encoding: 'utf8' });
  return JSON.parse(out || '[]') as T;
}

/** Deletes every namespace this process created (links inside go with them). */
export function cleanupAll(): void {
  for (const name of [...created]) delNetns(name);
}

/** A unique short name for links that live in the root netns of a node netns. */
export function linkName(label: string): string {
  return `${label}${randomBytes(2).toString('hex')}`.slice(0, 15);
}

/** A command's output as its non-empty lines, trimmed and sorted: kernel tables compared as sets. */
export function sortedLines(text: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter(Boolean).sort();
}
