// Wires the CNI socket server into the agent: the worker pool (started and
// preloaded before the socket opens, so the first call pays no loading),
// SO_PEERCRED (libc's getsockopt, through src/netlink), and the agent's metrics.
import type { Logger } from 'pino';
import { peerCred, sysctlGet } from '../netlink/index.js';
import { WorkerPool } from './cni-pool.js';
import { CniServer, newCniServerMetrics } from './cni-server.js';
import { attachCniServer, type AgentMetrics } from './metrics.js';

export interface CniService {
  stop(): Promise<void>;
}

export interface CniServiceOptions {
  path: string;
  workers: number;
  logger: Logger;
  /** the agent's Prometheus metrics: call durations and the server's counters */
  metrics?: AgentMetrics;
}

export async function startCniService(opts: CniServiceOptions): Promise<CniService> {
  const log = opts.logger.child({ component: 'cni' });
  const pool = new WorkerPool({ size: opts.workers, onWarning: (msg) => log.warn(msg) });
  const counters = newCniServerMetrics();
  const { metrics } = opts;
  if (metrics) attachCniServer(metrics, counters);
  const server = new CniServer({
    path: opts.path,
    pool,
    peerCred,
    logger: log,
    metrics: counters,
    ...(metrics ? { onCall: (command: string, ok: boolean, seconds: number) => metrics.cniRequestDuration.observe({ command, result: ok ? 'success' : 'error' }, seconds) } : {}),
  });
  try {
    // The SO_PEERCRED check runs on this thread: load koffi (and the Go
    // shim, its fallback) now, not on the first connection.
    sysctlGet('net.ipv4.ip_forward');
    // Listen at once; the workers load the handler meanwhile (a call that
    // comes first waits in its worker's queue). Not waiting for them keeps
    // a restarting agent's lease renewal as quick as before the socket.
    await server.start();
  } catch (err) {
    await pool.close();
    throw err;
  }
  const t0 = Date.now();
  pool.ready().then(
    () => log.info({ workers: opts.workers, ms: Date.now() - t0 }, 'CNI workers ready'),
    (err: unknown) => log.error({ err }, 'a CNI worker failed to start'),
  );
  return {
    async stop() {
      await server.stop();
      await pool.close();
    },
  };
}
