// A worker thread of the agent's CNI server: it runs the plugin handler, so
// the synchronous netlink calls of a pod's ADD or DEL (koffi blocks its
// thread) never stall the agent's event loop (health, metrics, reconcile).
// Everything a call needs is loaded before the worker says it is ready.
import { parentPort } from 'node:worker_threads';
import { handleCni, preloadHandler } from '../plugin/handler.js';
import type { WorkerReply, WorkerRequest } from './cni-pool.js';

const port = parentPort;
if (!port) throw new Error('cni-worker runs only as a worker thread');

port.on('message', (msg: WorkerRequest) => {
  void handleCni({ env: msg.env, stdin: msg.stdin }).then(
    (res) => port.postMessage({ id: msg.id, stdout: res.stdout, exitCode: res.exitCode, stderr: res.stderr } satisfies WorkerReply),
    // handleCni reports every failure as a CNI error; this is a defect guard.
    (err: unknown) => port.postMessage({ id: msg.id, error: String((err as Error)?.stack ?? err) } satisfies WorkerReply),
  );
});

preloadHandler().then(
  () => port.postMessage({ ready: true }),
  // A node without the shim still serves: the first call reports the error.
  (err: unknown) => port.postMessage({ ready: true, warning: `preloading the handler failed: ${(err as Error)?.message ?? String(err)}` }),
);
