// One CNI serving design for bench/cni-serving.js, run inside a node netns:
// `node cni-serving-server.js <design> <socket path>`. Each design serves
// the plugin handler (build/plugin/handler.js) with the agent's frame code
// (build/daemon/cni-frame.js) and SO_PEERCRED check, and nothing else (no
// metrics, queue or deadline, which every design would pay alike):
//
//   hop4    the agent's design: the event loop accepts and reads the frame,
//           the least busy of 4 worker threads runs the handler
//   hop1    the same with one worker
//   single  one worker thread listens, accepts and serves every call itself;
//           the event loop does nothing per call
//
// Prints "ready" on stderr once every worker has loaded the handler.
import { createServer } from 'node:net';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { connectionHandler } from './cni-serving-conn.js';

const [design, socketPath, repoRoot] = process.argv.slice(2);
const DESIGNS = { hop4: { workers: 4 }, hop1: { workers: 1 }, single: { workers: 1, listens: true }, accept: { workers: 4, accepts: true }, accept1: { workers: 1, accepts: true }, service: { workers: 0 } };
const spec = DESIGNS[design];
if (!spec) throw new Error(`unknown design ${design}; one of ${Object.keys(DESIGNS).join(', ')}`);
const mod = (p) => import(pathToFileURL(join(repoRoot, 'build', p)).href);
const { FrameReader, decodeRequest, encodeResponse } = await mod('daemon/cni-frame.js');
const { libcPeerCred } = await mod('netlink/ffi.js');
try {
  unlinkSync(socketPath);
} catch {
  // none left
}

if (design === 'service') {
  // The agent's own CNI service (src/daemon/cni-service.ts): its queue,
  // deadline, metrics and logging on the event loop, 4 workers.
  const { startCniService } = await mod('daemon/cni-service.js');
  const { createAgentMetrics } = await mod('daemon/metrics.js');
  const { createAgentLogger } = await mod('daemon/logging.js');
  const service = await startCniService({ path: socketPath, workers: 4, logger: createAgentLogger({ level: 'info', format: 'json' }), metrics: createAgentMetrics() });
  await new Promise((r) => setTimeout(r, 1500));
  process.stderr.write('ready\n');
  await new Promise(() => undefined);
  await service.stop();
}
const workerUrl = new URL('./cni-serving-worker.js', import.meta.url);
const listenFd = spec.accepts ? (await import('./cni-serving-libc.js')).listenUnix(socketPath) : undefined;
const workers = [];
let readyCount = 0;
let nextId = 1;
for (let i = 0; i < spec.workers; i++) {
  const w = new Worker(workerUrl, { workerData: { repoRoot, listen: spec.listens ? socketPath : undefined, listenFd } });
  w.pending = new Map();
  w.on('message', (m) => {
    if (m.ready) {
      if (++readyCount === spec.workers) process.stderr.write('ready\n');
      return;
    }
    const done = w.pending.get(m.id);
    w.pending.delete(m.id);
    done({ stdout: Buffer.from(m.stdout), exitCode: m.exitCode, stderr: m.stderr });
  });
  w.on('error', (err) => {
    process.stderr.write(`worker failed: ${err.stack}\n`);
    process.exit(1);
  });
  workers.push(w);
}

if (!spec.listens && !spec.accepts) {
  const serve = (env, stdin) => {
    const w = workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = nextId++;
    return new Promise((resolve) => {
      w.pending.set(id, resolve);
      w.postMessage({ id, env, stdin });
    });
  };
  createServer({ allowHalfOpen: true }, connectionHandler({ FrameReader, decodeRequest, encodeResponse, libcPeerCred }, serve)).listen(socketPath);
}
