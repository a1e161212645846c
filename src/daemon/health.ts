// /healthz and Prometheus /metrics for the agent. Bound to 127.0.0.1 by
// default: nothing here is meant for the network.
import { createServer, type Server } from 'node:http';
import { newCniServerMetrics, type CniServerMetrics } from './cni-server.js';

export interface AgentMetrics {
  /** leases known from the subnet manager, our own included */
  leasesKnown: number;
  /** remote leases currently programmed by the backend */
  routesProgrammed: number;
  reconcileErrors: number;
  reconciles: number;
  /** unix seconds of the last successful reconcile; 0 = never */
  lastSyncSeconds: number;
  /** true once the lease is held and the subnet file written */
  ready: boolean;
  /** the CNI socket server's counters (all zero when it is off) */
  cni: CniServerMetrics;
}

export function newMetrics(): AgentMetrics {
  return { leasesKnown: 0, routesProgrammed: 0, reconcileErrors: 0, reconciles: 0, lastSyncSeconds: 0, ready: false, cni: newCniServerMetrics() };
}

export function renderMetrics(m: AgentMetrics): string {
  const lines: string[] = [];
  const metric = (name: string, type: 'gauge' | 'counter', help: string, value: number) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
  };
  metric('tsflannel_leases_known', 'gauge', 'Subnet leases known from the subnet manager, including this node.', m.leasesKnown);
  metric('tsflannel_routes_programmed', 'gauge', 'Remote subnets currently programmed into the kernel.', m.routesProgrammed);
  metric('tsflannel_reconcile_errors_total', 'counter', 'Per-lease errors met while reconciling kernel state.', m.reconcileErrors);
  metric('tsflannel_reconciles_total', 'counter', 'Reconciliations run.', m.reconciles);
  metric('tsflannel_last_sync_timestamp_seconds', 'gauge', 'Unix time of the last completed reconciliation.', m.lastSyncSeconds);
  metric('tsflannel_ready', 'gauge', '1 once the lease is held and the subnet file is written.', m.ready ? 1 : 0);
  lines.push(
    '# HELP tsflannel_cni_calls_total CNI calls served on the agent socket, per command and result.',
    '# TYPE tsflannel_cni_calls_total counter',
  );
  for (const [command, c] of [...m.cni.calls].sort(([a], [b]) => a.localeCompare(b))) {
    lines.push(`tsflannel_cni_calls_total{command="${command}",result="ok"} ${c.ok}`);
    lines.push(`tsflannel_cni_calls_total{command="${command}",result="error"} ${c.error}`);
  }
  metric('tsflannel_cni_refused_total', 'counter', 'CNI connections refused because the peer is not root.', m.cni.refused);
  metric('tsflannel_cni_bad_frames_total', 'counter', 'CNI request frames that were oversize, malformed or late.', m.cni.badFrames);
  metric('tsflannel_cni_timeouts_total', 'counter', 'CNI calls answered with "try again" after the call deadline.', m.cni.timeouts);
  metric('tsflannel_cni_in_flight', 'gauge', 'CNI calls being served now.', m.cni.inFlight);
  const cpu = process.cpuUsage();
  metric('process_cpu_seconds_total', 'counter', 'CPU time of the agent, all threads, user plus system.', (cpu.user + cpu.system) / 1e6);
  return lines.join('\n') + '\n';
}

/** Starts the endpoints; resolves with the bound server (port 0 picks a free port). */
export function startHealthServer(host: string, port: number, metrics: AgentMetrics): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405).end();
    } else if (path === '/healthz') {
      res.writeHead(metrics.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(metrics.ready ? 'ok\n' : 'not ready\n');
    } else if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(renderMetrics(metrics));
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}
