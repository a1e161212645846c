// /healthz, /readyz and /metrics as served by startEndpoints, scraped over
// real HTTP and read back with a Prometheus text-format parser.
import { afterEach, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { startEndpoints, type HealthSource } from '../../../src/daemon/health.js';
import { createAgentMetrics, observeCniRequest, subnetMetrics, timeCniRequest } from '../../../src/daemon/metrics.js';
import { VERSION } from '../../../src/version.js';

type Family = { name: string; help: string; type: string; metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }[] };

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function serve(opts: Parameters<typeof startEndpoints>[2]): Promise<string> {
  const server = await startEndpoints('127.0.0.1', 0, opts);
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function health(state: { live: boolean; ready: boolean }): HealthSource {
  return {
    live: () => ({ ok: state.live, detail: state.live ? 'running' : 'resync loop stalled for 99 s' }),
    ready: () => ({ ok: state.ready, detail: state.ready ? 'ready' : 'waiting for leaseHeld, subnetFileWritten' }),
  };
}

describe('health endpoints', () => {
  it('keeps liveness apart from readiness: alive while waiting for a lease, ready only after', async () => {
    const state = { live: true, ready: false };
    const url = await serve({ health: health(state) });
    const healthz = await fetch(`${url}/healthz`);
    expect([healthz.status, await healthz.text()]).toEqual([200, 'ok: alive\n']);
    const readyz = await fetch(`${url}/readyz`);
    expect([readyz.status, await readyz.text()]).toEqual([503, 'not ready: waiting for leaseHeld, subnetFileWritten\n']);
    state.ready = true;
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    state.live = false;
    const dead = await fetch(`${url}/healthz`);
    expect([dead.status, await dead.text()]).toEqual([503, 'not alive: resync loop stalled for 99 s\n']);
  });

  it('answers HEAD like GET, with the same status and length and no body; other methods get 405', async () => {
    const url = await serve({ health: health({ live: true, ready: false }), registry: createAgentMetrics({ processMetrics: false }).registry });
    for (const path of ['/healthz', '/readyz', '/metrics', '/nope']) {
      const get = await fetch(`${url}${path}`);
      const head = await fetch(`${url}${path}`, { method: 'HEAD' });
      expect(head.status).toBe(get.status);
      expect(head.headers.get('content-length')).toBe(get.headers.get('content-length'));
      expect(await head.text()).toBe('');
    }
    const post = await fetch(`${url}/healthz`, { method: 'POST' });
    expect([post.status, post.headers.get('allow')]).toEqual([405, 'GET, HEAD']);
  });

  it('serves no /metrics where metrics live on their own address, and no probes on the metrics server', async () => {
    const probesOnly = await serve({ health: health({ live: true, ready: true }) });
    expect((await fetch(`${probesOnly}/metrics`)).status).toBe(404);
    const metricsOnly = await serve({ registry: createAgentMetrics({ processMetrics: false }).registry });
    expect((await fetch(`${metricsOnly}/healthz`)).status).toBe(404);
    expect((await fetch(`${metricsOnly}/metrics`)).status).toBe(200);
  });
});

describe('prom-client metrics', () => {
  it('exposes build info, the 0.1 names, histograms, error and restart counters and process metrics in valid text format', async () => {
    const m = createAgentMetrics();
    m.leasesKnown.set(3);
    m.routesProgrammed.set(2);
    m.reconciles.inc(4);
    m.ready.set(1);
    m.reconcileDuration.observe({ reason: 'watch' }, 0.003);
    observeCniRequest('ADD', 'success', 0.2, m);
    await expect(timeCniRequest('DEL', async () => { throw new Error('boom'); }, m)).rejects.toThrow('boom');
    expect(await timeCniRequest('CHECK', async () => 'fine', m)).toBe('fine');
    const kube = subnetMetrics(m, 'kube');
    kube.apiError('list nodes');
    kube.apiError('list nodes');
    subnetMetrics(m, 'etcd').watchRestart('error');

    const url = await serve({ registry: m.registry });
    const res = await fetch(`${url}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const families = parsePrometheusTextFormat(text) as Family[];
    const fam = (name: string) => families.find((f) => f.name === name)!;

    expect(fam('tsflannel_build_info').metrics).toEqual([{ value: '1', labels: { version: VERSION, nodejs: process.version } }]);
    expect(fam('tsflannel_leases_known').metrics[0]!.value).toBe('3');
    expect(fam('tsflannel_routes_programmed').metrics[0]!.value).toBe('2');
    expect(fam('tsflannel_reconciles_total')).toMatchObject({ type: 'COUNTER', metrics: [{ value: '4' }] });
    expect(fam('tsflannel_ready').metrics[0]!.value).toBe('1');
    for (const name of ['tsflannel_reconcile_errors_total', 'tsflannel_last_sync_timestamp_seconds']) expect(fam(name)).toBeDefined();
    expect(fam('tsflannel_reconcile_duration_seconds')).toMatchObject({ type: 'HISTOGRAM' });
    expect(fam('tsflannel_cni_request_duration_seconds').type).toBe('HISTOGRAM');
    expect(fam('tsflannel_api_errors_total').metrics).toEqual([{ value: '2', labels: { source: 'kube', operation: 'list nodes' } }]);
    expect(fam('tsflannel_watch_restarts_total').metrics).toEqual([{ value: '1', labels: { source: 'etcd', reason: 'error' } }]);
    expect(Number(fam('process_resident_memory_bytes').metrics[0]!.value)).toBeGreaterThan(1e6);
    expect(fam('nodejs_eventloop_lag_seconds')).toBeDefined();

    // the parser folds labelled histograms, so the per-command series are checked in the text it accepted
    expect(text).toContain('tsflannel_cni_request_duration_seconds_count{command="ADD",result="success"} 1');
    expect(text).toContain('tsflannel_cni_request_duration_seconds_count{command="DEL",result="error"} 1');
    expect(text).toContain('tsflannel_cni_request_duration_seconds_count{command="CHECK",result="success"} 1');
    expect(text).toContain('tsflannel_cni_request_duration_seconds_bucket{le="0.25",command="ADD",result="success"} 1');
    expect(text).toContain('tsflannel_cni_request_duration_seconds_bucket{le="0.1",command="ADD",result="success"} 0');
  });

  it('gives every agent its own registry, so two agents in one process do not mix', async () => {
    const a = createAgentMetrics({ processMetrics: false });
    const b = createAgentMetrics({ processMetrics: false });
    a.reconciles.inc();
    expect(await a.registry.getSingleMetricAsString('tsflannel_reconciles_total')).toContain('tsflannel_reconciles_total 1');
    expect(await b.registry.getSingleMetricAsString('tsflannel_reconciles_total')).toContain('tsflannel_reconciles_total 0');
  });
});
