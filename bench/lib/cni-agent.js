// tsflanneld --cni-only (the CNI socket server without a subnet manager) in a
// node netns, for the benchmarks that measure the agent-served CNI path.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { onCleanup } from './cleanup.js';
import { processCpuMs } from './cpu-clock.js';

/**
 * The shipped single executable when packaged, else node + bin/tsflanneld
 * (TSFLANNEL_BENCH_AGENT=node forces the latter).
 */
export function agentCommand(repoRoot) {
  const sea = join(repoRoot, 'dist', 'tsflanneld');
  const useSea = process.env.TSFLANNEL_BENCH_AGENT !== 'node' && existsSync(sea);
  return useSea ? [sea] : [process.execPath, join(repoRoot, 'bin', 'tsflanneld')];
}

function answers(socket) {
  return new Promise((resolve) => {
    const c = createConnection(socket);
    const body = Buffer.from(JSON.stringify({ v: 1, env: { CNI_COMMAND: 'VERSION' }, stdin: '' }));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    let got = 0;
    c.on('connect', () => c.end(Buffer.concat([head, body])));
    c.on('data', (d) => (got += d.length));
    c.on('end', () => resolve(got > 4));
    c.on('error', () => resolve(false));
  });
}

/** Starts the agent in `nodeNs` (`workers`: its --cni-workers, else its default); resolves with its pid once its socket answers a VERSION call. */
export async function startCniAgent(agentCmd, nodeNs, socket, workers) {
  const workerArgs = workers === undefined ? [] : ['--cni-workers', String(workers)];
  const child = spawn('ip', ['netns', 'exec', nodeNs, ...agentCmd, '--cni-only', '--cni-socket', socket, ...workerArgs, '--log-level', process.env.TSFLANNEL_BENCH_AGENT_LOG ?? 'warn'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const stop = onCleanup('cni agent', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`tsflanneld --cni-only exited with ${child.exitCode}`);
    if (await answers(socket)) return { pid: child.pid, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  stop();
  throw new Error(`tsflanneld did not answer on ${socket} within 30 s`);
}


/**
 * One look at the agent's CPU: the whole process (ms, exact) and each
 * live thread's run time (ms, /proc/<pid>/task/<tid>/schedstat, exact) with
 * its name.
 */
export function agentCpuSnapshot(pid) {
  const threads = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      threads.set(tid, { comm, ms: ns / 1e6 });
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return { at: Date.now(), totalMs: processCpuMs(pid), threads };
}

/**
 * The agent's CPU between two snapshots, by thread role: the event loop
 * (the main thread: socket, frames, hand-offs), the CNI workers (threads
 * named tsf-cni-*: the handler, and the shim's calls made on them), other
 * threads still alive (V8's compiler and GC helpers, libuv, the Go
 * runtime's threads) and threads that ended in between (mostly the shim's
 * throw-away threads that enter a pod's netns, with the kernel work done
 * there). ms; `total` is the process's own figure, `ended` what the live
 * threads do not account for.
 */
export function agentCpuSplit(pid, before, after) {
  const split = { total: after.totalMs - before.totalMs, main: 0, workers: 0, other: 0, ended: 0 };
  for (const [tid, t] of after.threads) {
    const d = t.ms - (before.threads.get(tid)?.ms ?? 0);
    if (tid === String(pid)) split.main += d;
    else if (t.comm.startsWith('tsf-cni-')) split.workers += d;
    else split.other += d;
  }
  split.ended = Math.max(0, split.total - split.main - split.workers - split.other);
  return split;
}
