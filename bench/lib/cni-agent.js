// tsflanneld --cni-only (the CNI socket server without a subnet manager) in a
// node netns, for the benchmarks that measure the agent-served CNI path.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { onCleanup } from './cleanup.js';

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

/** Starts the agent in `nodeNs`; resolves with its pid once its socket answers a VERSION call. */
export async function startCniAgent(agentCmd, nodeNs, socket, workers = 4) {
  const child = spawn('ip', ['netns', 'exec', nodeNs, ...agentCmd, '--cni-only', '--cni-socket', socket, '--cni-workers', String(workers), '--log-level', process.env.TSFLANNEL_BENCH_AGENT_LOG ?? 'warn'], {
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

