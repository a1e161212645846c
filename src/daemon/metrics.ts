// tsflanneld's Prometheus metrics, kept by prom-client. One AgentMetrics per
// agent (its own Registry, so tests can run several side by side); the
// process-wide default is what the CNI socket server reports into through
// observeCniRequest().
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { VERSION } from '../version.js';
import type { CniServerMetrics } from './cni-server.js';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';
export type CniResult = 'success' | 'error';
/** Who talked to a remote API: the Kubernetes API server or etcd. */
export type ApiSource = 'kube' | 'etcd';

export interface AgentMetrics {
  readonly registry: Registry;
  readonly leasesKnown: Gauge;
  readonly routesProgrammed: Gauge;
  readonly reconciles: Counter;
  readonly reconcileErrors: Counter;
  readonly lastSync: Gauge;
  readonly ready: Gauge;
  readonly reconcileDuration: Histogram<'reason'>;
  readonly cniRequestDuration: Histogram<'command' | 'result'>;
  readonly apiErrors: Counter<'source' | 'operation'>;
  readonly watchRestarts: Counter<'source' | 'reason'>;
  readonly trafficRepairs: Counter<'mode'>;
  readonly trafficFailures: Counter<'mode'>;
  readonly leaseEvents: Counter<'source' | 'result'>;
  /** Run before each scrape reads cniRequestDuration: the CNI threads' durations not yet observed (attachCniServer). */
  beforeCniScrape?: () => void;
}

/** Hooks a subnet manager calls; kept tiny so managers stay free of prom-client. */
export interface SubnetMetrics {
  apiError(operation: string): void;
  watchRestart(reason: string): void;
  /** one watch event: `changed` a lease, or `ignored` (nothing a lease is made of changed, e.g. a status heartbeat) */
  leaseEvent(result: 'changed' | 'ignored'): void;
}

export function subnetMetrics(m: AgentMetrics, source: ApiSource): SubnetMetrics {
  return {
    apiError: (operation) => m.apiErrors.inc({ source, operation }),
    watchRestart: (reason) => m.watchRestarts.inc({ source, reason }),
    leaseEvent: (result) => m.leaseEvents.inc({ source, result }),
  };
}

export interface MetricsOptions {
  /** Node's process metrics (CPU, memory, event loop lag, GC); default true */
  processMetrics?: boolean;
}

export function createAgentMetrics(opts: MetricsOptions = {}): AgentMetrics {
  const registry = new Registry();
  // Event-loop lag sampled every 100 ms, not prom-client's 10 ms: an idle agent
  // then wakes 10 times a second instead of 100 (its CPU is charged to every pod call).
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  const registers = [registry];
  new Gauge({
    name: 'tsflannel_build_info',
    help: 'Always 1; the labels say which tsflannel and Node.js run.',
    labelNames: ['version', 'nodejs'],
    registers,
  }).set({ version: VERSION, nodejs: process.version }, 1);
  const m: AgentMetrics = {
    registry,
    // names up to 0.1.0, unchanged
    leasesKnown: new Gauge({ name: 'tsflannel_leases_known', help: 'Subnet leases known from the subnet manager, including this node.', registers }),
    routesProgrammed: new Gauge({ name: 'tsflannel_routes_programmed', help: 'Remote subnets currently programmed into the kernel.', registers }),
    reconcileErrors: new Counter({ name: 'tsflannel_reconcile_errors_total', help: 'Per-lease errors met while reconciling kernel state.', registers }),
    reconciles: new Counter({ name: 'tsflannel_reconciles_total', help: 'Reconciliations run.', registers }),
    lastSync: new Gauge({ name: 'tsflannel_last_sync_timestamp_seconds', help: 'Unix time of the last completed reconciliation.', registers }),
    ready: new Gauge({ name: 'tsflannel_ready', help: '1 while /readyz answers 200 (lease, device, subnet file, first reconcile).', registers }),
    // new in 0.2
    reconcileDuration: new Histogram({
      name: 'tsflannel_reconcile_duration_seconds',
      help: 'Time to make routes, neighbours and FDB entries match the leases.',
      labelNames: ['reason'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    cniRequestDuration: new Histogram({
      name: 'tsflannel_cni_request_duration_seconds',
      help: 'CNI requests served by the agent, by command and result.',
      labelNames: ['command', 'result'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
      collect() {
        m.beforeCniScrape?.();
      },
    }),
    apiErrors: new Counter({
      name: 'tsflannel_api_errors_total',
      help: 'Failed calls to the Kubernetes API or etcd, by source and operation.',
      labelNames: ['source', 'operation'],
      registers,
    }),
    watchRestarts: new Counter({
      name: 'tsflannel_watch_restarts_total',
      help: 'Lease watches (Kubernetes Node watch, etcd watch) restarted, by source and reason.',
      labelNames: ['source', 'reason'],
      registers,
    }),
    trafficRepairs: new Counter({
      name: 'tsflannel_traffic_rule_repairs_total',
      help: 'Times the resync found forward/masquerade rules missing or changed and rewrote them.',
      labelNames: ['mode'],
      registers,
    }),
    trafficFailures: new Counter({
      name: 'tsflannel_traffic_rule_failures_total',
      help: 'Times installing or checking the forward/masquerade rules failed (at start or in a resync, e.g. a held xtables lock); the resync retries.',
      labelNames: ['mode'],
      registers,
    }),
    leaseEvents: new Counter({
      name: 'tsflannel_lease_events_total',
      help: 'Lease watch events (Node or etcd key changes), by source and result: changed a lease, or ignored (e.g. a Node status heartbeat).',
      labelNames: ['source', 'result'],
      registers,
    }),
  };
  return m;
}

let defaultInstance: AgentMetrics | undefined;

/** The process-wide metrics the agent serves (created on first use). */
export function defaultMetrics(): AgentMetrics {
  defaultInstance ??= createAgentMetrics();
  return defaultInstance;
}

/** For the CNI socket server: one finished request. */
export function observeCniRequest(command: CniCommand, result: CniResult, seconds: number, m: AgentMetrics = defaultMetrics()): void {
  m.cniRequestDuration.observe({ command, result }, seconds);
}

/** Times `fn` as a CNI request; the result label follows whether it threw. */
export async function timeCniRequest<T>(command: CniCommand, fn: () => Promise<T>, m: AgentMetrics = defaultMetrics()): Promise<T> {
  const end = m.cniRequestDuration.startTimer({ command });
  try {
    const value = await fn();
    end({ result: 'success' });
    return value;
  } catch (err) {
    end({ result: 'error' });
    throw err;
  }
}

/**
 * The CNI socket server's own counters, read at each scrape: connections
 * refused (peer not root), bad frames, calls past their deadline, and the
 * calls being served now. Counts are since the agent started.
 */
export function attachCniServer(m: AgentMetrics, s: CniServerMetrics, beforeScrape?: () => void): void {
  if (beforeScrape) m.beforeCniScrape = beforeScrape;
  const registers = [m.registry];
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  gauge('tsflannel_cni_threads', 'CNI worker threads running now: the --cni-workers ones and any spare.', () => s.threads);
  gauge('tsflannel_cni_spare_threads_started', 'Spare CNI threads started since start, each because every thread was busy and one was stalled.', () => s.sparesStarted);
  gauge('tsflannel_cni_in_flight', 'CNI calls being served on the agent socket now.', () => s.inFlight);
  gauge('tsflannel_cni_refused_connections', 'CNI connections refused since start because the peer is not root.', () => s.refused);
  gauge('tsflannel_cni_bad_frames', 'CNI request frames since start that were oversize, malformed or late.', () => s.badFrames);
  gauge('tsflannel_cni_call_timeouts', 'CNI calls since start answered with "try again" after the call deadline.', () => s.timeouts);
}
