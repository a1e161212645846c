// /healthz (liveness: the process answers and its loops turn), /readyz
// (readiness: lease held, device and subnet file in place, first reconcile
// done) and Prometheus /metrics. HEAD answers like GET without a body.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';

export interface Probe {
  ok: boolean;
  /** one line for people reading the probe's body */
  detail: string;
}

export interface HealthSource {
  live(): Probe;
  ready(): Probe;
}

export interface EndpointOptions {
  /** /healthz and /readyz; absent on a metrics-only server */
  health?: HealthSource;
  /** /metrics; absent when metrics are served elsewhere */
  registry?: Registry;
}

function reply(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : body);
}

async function handle(req: IncomingMessage, res: ServerResponse, opts: EndpointOptions): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return;
  }
  const probe = path === '/healthz' ? opts.health?.live() : path === '/readyz' ? opts.health?.ready() : undefined;
  if (probe) {
    const name = path === '/healthz' ? 'alive' : 'ready';
    const body = probe.ok ? `ok: ${name}\n` : `not ${name}: ${probe.detail}\n`;
    reply(req, res, probe.ok ? 200 : 503, 'text/plain; charset=utf-8', body);
  } else if (path === '/metrics' && opts.registry) {
    reply(req, res, 200, opts.registry.contentType, await opts.registry.metrics());
  } else {
    reply(req, res, 404, 'text/plain; charset=utf-8', 'not found\n');
  }
}

/** Starts the endpoints; resolves with the bound server (port 0 picks a free port). */
export function startEndpoints(host: string, port: number, opts: EndpointOptions): Promise<Server> {
  const server = createServer((req, res) => {
    handle(req, res, opts).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`internal error: ${(err as Error).message}\n`);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
