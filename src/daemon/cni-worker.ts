// A worker thread of the agent's CNI server: it runs the plugin handler, so
// the synchronous netlink calls of a pod's ADD or DEL (koffi blocks its
// thread) never stall the agent's event loop (health, metrics, reconcile).
// Everything a call needs is loaded before the worker says it is ready.
import { writeFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { handleCni, preloadHandler } from '../plugin/handler.js';
import type { WorkerReply, WorkerRequest, WorkerStart } from './cni-pool.js';

const port = parentPort;
if (!port) throw new Error('cni-worker runs only as a worker thread');

port.on('message', (msg: WorkerRequest) => {
  void handleCni({ env: msg.env, stdin: msg.stdin }).then(
    (res) => port.postMessage({ id: msg.id, stdout: res.stdout, exitCode: res.exitCode, stderr: res.stderr } satisfies WorkerReply),
    // handleCni reports every failure as a CNI error; this is a defect guard.
    (err: unknown) => port.postMessage({ id: msg.id, error: String((err as Error)?.stack ?? err) } satisfies WorkerReply),
  );
});

/**
 * Names this thread (`ps -T`, `top -H`, /proc/<pid>/task/<tid>/comm), so an
 * operator or the benchmark can tell the CNI workers' CPU from the event
 * loop's. After the preload: the Go runtime's own threads, started when the
 * shim loads, inherit the name of the thread that loaded it, and they are
 * not CNI workers. Best effort: a kernel that refuses leaves the old name.
 */
function nameThread(): void {
  const name = (workerData as Partial<WorkerStart> | undefined)?.threadName;
  if (!name) return;
  try {
    writeFileSync('/proc/thread-self/comm', name);
  } catch {
    // no /proc, or an older kernel: the name is only for people and benchmarks
  }
}

void preloadHandler()
  .then(
    (): WorkerReply => ({ ready: true }),
    // A node without the shim still serves: the first call reports the error.
    (err: unknown): WorkerReply => ({ ready: true, warning: `preloading the handler failed: ${(err as Error)?.message ?? String(err)}` }),
  )
  .then((ready) => {
    nameThread();
    port.postMessage(ready);
  });
