// A long-lived helper process inside a network namespace that spawns and
// times jobs there (bench/driver/main.go: it starts processes as a Go
// container runtime does, and reads each child's own CPU time). Running the
// timed processes through `ip netns exec` one by one would add ip's own
// fork/exec and mount-namespace set-up to every figure; with the driver, that
// cost is paid once, before timing starts.
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './cleanup.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DRIVER = 'build/bench-driver';

/** The driver's binary, built (only when its source changed) with the shim's GOPATH-mode script. */
function driverBinary() {
  execFileSync('bash', ['scripts/go-build.sh', 'bench/driver', DRIVER], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  return `${ROOT}${DRIVER}`;
}

/**
 * @typedef {import('./spawn.js').Job} Job
 * @typedef {import('./spawn.js').JobResult} JobResult
 * @typedef {{ run: (jobs: Job[], concurrency?: number) => Promise<{ results: (JobResult & { cpuMs?: number })[], wallMs: number, cpuMs: number }>, close: () => Promise<void> }} NsDriver
 */

/**
 * Starts a driver inside `ns` (a name under /var/run/netns).
 * @param {string} ns
 * @returns {NsDriver}
 */
export function startNsDriver(ns) {
  const child = spawn('ip', ['netns', 'exec', ns, driverBinary()], { stdio: ['pipe', 'pipe', 'inherit'] });
  const unregister = onCleanup(`driver in ${ns}`, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  /** @type {Map<number, { resolve: Function, reject: Function }>} */
  const pending = new Map();
  let nextId = 1;
  let dead = null;
  const failAll = (err) => {
    dead = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  child.on('error', failAll);
  child.on('exit', (code, signal) => failAll(new Error(`netns driver exited (code ${code}, signal ${signal})`)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    const msg = JSON.parse(line);
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.error) p.reject(new Error(`netns driver: ${msg.error}`));
    else p.resolve({ results: msg.results, wallMs: msg.wallMs, cpuMs: msg.cpuMs });
  });
  return {
    run(jobs, concurrency = 1) {
      if (dead) return Promise.reject(dead);
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.stdin.write(JSON.stringify({ id, jobs, concurrency }) + '\n');
      });
    },
    close() {
      return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          unregister();
          resolve();
          return;
        }
        child.once('exit', () => {
          unregister();
          resolve();
        });
        child.stdin.end();
      });
    },
  };
}
