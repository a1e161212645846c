// One CNI serving design for bench/cni-serving.js, run inside a node netns:
// `node cni-serving-server.js <design> <socket path>`. Each design serves
// the plugin handler (build/plugin/handler.js):
//
//   agent   the agent's own CNI service (build/daemon/cni-service.js): 4
//           workers each waiting on the socket through epoll and serving
//           calls themselves, with its deadlines, attachment table,
//           metrics and logging
//   hop4    the agent's design before: the event loop accepts and reads the
//           frame (node:net), the least busy of 4 worker threads runs the
//           handler
//   hop1    the same with one worker
//   single  one worker thread listens with node:net, accepts and serves
//           every call itself; the event loop does nothing per call
//   bare    one worker thread blocked in accept(2) through libc, serving
//           each call itself with nothing else (no deadline, attachment
//           table or metrics): the floor of any design
//
// hop4, hop1 and single use the agent's frame code and SO_PEERCRED check
// and nothing else. Prints "ready" on stderr once every worker has loaded
// the handler.
import { createServer } from 'node:net';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { connectionHandler } from './cni-serving-conn.js';

const [designArg, socketPath, repoRoot] = process.argv.slice(2);
// <design>+<v8 flag>: the same design with a V8 flag set first (process-wide, workers inherit it).
const [design, ...v8flags] = designArg.split('+');
if (v8flags.length) (await import('node:v8')).setFlagsFromString(v8flags.map((f) => `--${f}`).join(' '));
const DESIGNS = { agent: { workers: 0 }, hop4: { workers: 4 }, hop1: { workers: 1 }, single: { workers: 1, listens: true }, bare: { workers: 1, accepts: true } };
const spec = DESIGNS[design];
if (!spec) throw new Error(`unknown design ${designArg}; one of ${Object.keys(DESIGNS).join(', ')}`);
const mod = (p) => import(pathToFileURL(join(repoRoot, 'build', p)).href);
const { FrameReader, decodeRequest, encodeResponse } = await mod('daemon/cni-frame.js');
const { libcPeerCred } = await mod('netlink/ffi.js');
try {
  unlinkSync(socketPath);
} catch {
  // none left
}

if (design === 'agent') {
  const { startCniService } = await mod('daemon/cni-service.js');
  const { createAgentMetrics } = await mod('daemon/metrics.js');
  const { createAgentLogger } = await mod('daemon/logging.js');
  const service = await startCniService({ path: socketPath, workers: 4, logger: createAgentLogger({ level: 'info', format: 'json' }), metrics: createAgentMetrics() });
  await service.ready();
  process.stderr.write('ready\n');
  process.on('SIGTERM', () => void service.stop().then(() => process.exit(0)));
  await new Promise(() => undefined);
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
