// /healthz and Prometheus /metrics for the agent. Bound to 127.0.0.1 by
// default: nothing here is meant for the network.
import { createServer, type Server } from 'node:http';

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
}

export function newMetrics(): AgentMetrics {
  return { leasesKnown: 0, routesProgrammed: 0, reconcileErrors: 0, reconciles: 0, lastSyncSeconds: 0, ready: false };
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
