// Wires the CNI socket server into the agent: its threads (they load the
// handler while the first calls wait in the socket's queue) and the agent's
// metrics, which read the threads' counters and durations at each scrape.
import type { Logger } from 'pino';
import { sysctlGet } from '../netlink/index.js';
import { CniServer } from './cni-server.js';
import { attachCniServer, type AgentMetrics } from './metrics.js';
import type { LogFormat, LogLevel } from './options.js';

export interface CniService {
  /** resolves once every worker has loaded the handler */
  ready(): Promise<void>;
  stop(): Promise<void>;
}

export interface CniServiceOptions {
  path: string;
  workers: number;
  logger: Logger;
  /** the CNI threads' own log lines; default the logger's level, JSON */
  log?: { level: LogLevel; format: LogFormat };
  /** the agent's Prometheus metrics: call durations and the server's counters */
  metrics?: AgentMetrics;
}

export async function startCniService(opts: CniServiceOptions): Promise<CniService> {
  const log = opts.logger.child({ component: 'cni' });
  const { metrics } = opts;
  const server = new CniServer({
    path: opts.path,
    workers: opts.workers,
    logger: log,
    log: opts.log ?? { level: opts.logger.level as LogLevel, format: 'json' },
    onWarning: (msg) => log.warn(msg),
    ...(metrics ? { onCall: (command, ok, seconds) => metrics.cniRequestDuration.observe({ command, result: ok ? 'success' : 'error' }, seconds) } : {}),
  });
  if (metrics) attachCniServer(metrics, server.metrics, () => server.drain());
  // The workers check SO_PEERCRED with libc through koffi; a node where it
  // cannot load fails here, at start, not at the first connection.
  sysctlGet('net.ipv4.ip_forward');
  // Listen at once; the workers load the handler meanwhile (a call that
  // comes first waits in the socket's queue for the first worker ready).
  // Not waiting for them keeps a restarting agent's lease renewal as quick
  // as before the socket.
  await server.start();
  const t0 = Date.now();
  server.ready().then(
    () => log.info({ workers: opts.workers, ms: Date.now() - t0 }, 'CNI workers ready'),
    (err: unknown) => log.error({ err }, 'a CNI worker failed to start'),
  );
  return {
    ready: () => server.ready(),
    stop: () => server.stop(),
  };
}
