// Docker-style nodes (FORWARD policy DROP) without --ip-masq: flannel
// installs its FORWARD accepts by default (--iptables-forward-rules), so
// cross-node pod traffic still flows. Also scrapes a live agent's /readyz,
// /healthz and /metrics from inside its node netns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { Cluster, type Pod } from '../../src/demo/cluster.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';

const haveEtcd = existsSync('/usr/bin/etcd');
const NODES = ['n1', 'n2', 'n3'];
const HEALTHZ_PORT = 18081;
const METRICS_PORT = 19465;

function ping(fromNs: string, ip: string): boolean {
  return spawnSync('ip', ['netns', 'exec', fromNs, 'ping', '-c1', '-W2', ip]).status === 0;
}

function failingPairs(pods: Pod[]): string[] {
  const failures: string[] = [];
  for (const a of pods) for (const b of pods) if (a !== b && !ping(a.ns, b.ip)) failures.push(`${a.node}/${a.name} -> ${b.node}/${b.name}`);
  return failures;
}

/** An HTTP request made from inside a netns (the agent listens on the node's own addresses). */
function httpIn(ns: string, url: string, method = 'GET'): { status: number; body: string; type: string } {
  const script = `fetch(process.argv[1],{method:process.argv[2]}).then(async r=>{process.stdout.write(JSON.stringify({status:r.status,type:r.headers.get('content-type')||'',body:await r.text()}))}).catch(e=>{console.error(e);process.exit(1)})`;
  const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', script, url, method], { encoding: 'utf8', timeout: 10_000 });
  return JSON.parse(out) as { status: number; body: string; type: string };
}


describe.skipIf(requireOrSkip('forward-drop', { root: isRoot, etcd: haveEtcd }))('nodes with FORWARD policy DROP and no --ip-masq', () => {
  const cluster = new Cluster({
    prefix: `tsffwd${randomBytes(2).toString('hex')}`,
    nodes: [
      { name: 'n1', segment: 'a' },
      { name: 'n2', segment: 'a' },
      { name: 'n3', segment: 'b' },
    ],
    ipMasq: false,
    forwardPolicy: 'DROP',
    resyncSeconds: 2,
  });
  const pods: Pod[] = [];

  beforeAll(async () => {
    await cluster.start();
    for (const node of NODES) pods.push(await cluster.addPod(node, 'p1'));
  }, 120_000);
  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it('every node keeps policy DROP, gets the FLANNEL-FWD accepts and no masquerade chain', () => {
    for (const node of NODES) {
      const ns = cluster.node(node).ns;
      const filter = execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-S'], { encoding: 'utf8' });
      expect(filter).toContain('-P FORWARD DROP');
      expect(filter).toContain('-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD');
      expect(filter).toContain('-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT');
      expect(filter).toContain('-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT');
      expect(execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-t', 'nat', '-S'], { encoding: 'utf8' })).not.toContain('FLANNEL');
    }
  });

  it('every pod pings every other pod across nodes', () => {
    expect(failingPairs(pods)).toEqual([]);
  });

  it('without the FORWARD jump n1\'s pod is cut off (the DROP policy bites); a restarted agent puts it back', async () => {
    const ns = cluster.node('n1').ns;
    const [p1, p2] = pods;
    await cluster.stopAgent('n1', 'SIGKILL'); // rules stay; nothing repairs them meanwhile
    execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-w', '5', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
    expect(ping(p1!.ns, p2!.ip)).toBe(false);
    await cluster.startAgent('n1');
    await eventually('n1 forwards again', 20_000, () => ping(p1!.ns, p2!.ip));
    expect(execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-S', 'FORWARD'], { encoding: 'utf8' })).toContain('-j FLANNEL-FWD');
  }, 40_000);

  it('a FORWARD jump deleted while the agent runs is restored by the resync (logged)', async () => {
    const ns = cluster.node('n1').ns;
    const [p1, p2] = pods;
    execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-w', '5', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
    await eventually('n1 logs the repair', 15_000, () => cluster.agentLog('n1').includes('traffic rules were changed; restored them'));
    expect(execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-S', 'FORWARD'], { encoding: 'utf8' })).toContain('-j FLANNEL-FWD');
    expect(ping(p1!.ns, p2!.ip)).toBe(true);
  }, 30_000);

  it('an agent restarted with --iptables-forward-rules=false (and no --ip-masq) removes the FLANNEL-FWD an earlier run left', async () => {
    const ns = cluster.node('n1').ns;
    const [p1, p2] = pods;
    const fwd = () => execFileSync('ip', ['netns', 'exec', ns, 'iptables', '-S'], { encoding: 'utf8' }).includes('FLANNEL-FWD');
    expect(fwd()).toBe(true);
    await cluster.stopAgent('n1', 'SIGTERM');
    await cluster.startAgent('n1', ['--iptables-forward-rules=false']);
    await eventually('n1 removes FLANNEL-FWD', 20_000, () => !fwd());
    expect(ping(p1!.ns, p2!.ip)).toBe(false); // the node's own FORWARD policy (DROP) decides now
    await cluster.stopAgent('n1', 'SIGTERM');
    await cluster.startAgent('n1');
    await eventually('n1 forwards again', 20_000, () => ping(p1!.ns, p2!.ip));
  }, 60_000);
});

describe.skipIf(requireOrSkip('forward-drop', { root: isRoot, etcd: haveEtcd }))('a live agent\'s /healthz, /readyz and /metrics', () => {
  const cluster = new Cluster({
    prefix: `tsfmet${randomBytes(2).toString('hex')}`,
    nodes: [{ name: 'n1', segment: 'a' }, { name: 'n2', segment: 'a' }],
    resyncSeconds: 2,
    extraAgentArgs: ['--healthz-port', String(HEALTHZ_PORT), '--healthz-ip', '127.0.0.1', '--metrics-addr', `0.0.0.0:${METRICS_PORT}`],
  });

  beforeAll(async () => {
    await cluster.start();
  }, 120_000);
  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it('answers /healthz and /readyz (GET and HEAD alike) once ready', async () => {
    const ns = cluster.node('n1').ns;
    await eventually('n1 ready', 20_000, () => httpIn(ns, `http://127.0.0.1:${HEALTHZ_PORT}/readyz`).status === 200);
    expect(httpIn(ns, `http://127.0.0.1:${HEALTHZ_PORT}/readyz`).body).toBe('ok: ready\n');
    expect(httpIn(ns, `http://127.0.0.1:${HEALTHZ_PORT}/healthz`)).toMatchObject({ status: 200, body: 'ok: alive\n' });
    expect(httpIn(ns, `http://127.0.0.1:${HEALTHZ_PORT}/readyz`, 'HEAD')).toMatchObject({ status: 200, body: '' });
    // metrics moved to --metrics-addr: not on the health port
    expect(httpIn(ns, `http://127.0.0.1:${HEALTHZ_PORT}/metrics`).status).toBe(404);
  });

  it('serves Prometheus text on --metrics-addr, reachable on the node IP, that a real parser reads', async () => {
    const node = cluster.node('n1');
    const res = httpIn(node.ns, `http://${node.ip}:${METRICS_PORT}/metrics`);
    expect(res.status).toBe(200);
    expect(res.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusTextFormat(res.body) as { name: string; type: string; metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string }[] }[];
    const byName = new Map(families.map((f) => [f.name, f]));
    expect(byName.get('tsflannel_build_info')?.metrics[0]?.labels).toMatchObject({ version: '0.1.0' });
    expect(byName.get('tsflannel_ready')?.metrics[0]?.value).toBe('1');
    expect(byName.get('tsflannel_leases_known')?.metrics[0]?.value).toBe('2');
    expect(byName.get('tsflannel_routes_programmed')?.metrics[0]?.value).toBe('1');
    const reconcile = byName.get('tsflannel_reconcile_duration_seconds');
    expect(reconcile?.type).toBe('HISTOGRAM');
    // this parser folds a labelled histogram into one bucket map (the last label set's); enough to see observations
    expect(Number(reconcile?.metrics[0]?.buckets?.['+Inf'])).toBeGreaterThan(0);
    expect(byName.get('tsflannel_cni_request_duration_seconds')?.type).toBe('HISTOGRAM');
    for (const name of ['tsflannel_api_errors_total', 'tsflannel_watch_restarts_total', 'tsflannel_reconciles_total']) {
      expect(byName.get(name)?.type).toBe('COUNTER');
    }
    // Node's own process metrics
    expect(Number(byName.get('process_resident_memory_bytes')?.metrics[0]?.value)).toBeGreaterThan(1e6);
    expect(byName.has('nodejs_eventloop_lag_seconds')).toBe(true);
  });
});
