// What thousands of Nodes or leases cost the agent and its API server or
// etcd (issue 18, items 3 and 4). Runs the same scenarios as the tests
// (test/helpers/kube-scale.ts, kube-agent-storm.ts, etcd-scale.ts and
// src/daemon/subnet/renewal.ts), at full size:
//   - the Kubernetes subnet manager against the fake API server with 5,000
//     Nodes: requests made, 10,000 status heartbeats, 5,000 MAC changes;
//   - the real tsflanneld in a node netns against the same: kernel writes
//     (ip/bridge monitor) and reconcile passes (its metrics) for the storm;
//   - the etcd manager listing and watching 5,000 leases on a real etcd;
//   - 5,000 agents' lease renewals, simulated, per second.
// Sizes: BENCH_API_NODES, BENCH_API_HEARTBEATS, BENCH_API_LEASES, BENCH_API_AGENTS.
// The TypeScript helpers are bundled with esbuild into node_modules/.cache
// (ignored by git) so that their imports resolve.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { percentile } from './lib/stats.js';

const FULL = { nodes: 5000, heartbeats: 10_000, leases: 5000, agents: 5000 };
const QUICK = { nodes: 500, heartbeats: 1000, leases: 500, agents: 5000 };

/** single changes timed one at a time in each manager's run */
const SINGLE_CHANGES = 20;

function singleChangeColumns(r) {
  if (r.singleChanges.length === 0) return {};
  const q = (values, p) => percentile(values, p * 100);
  const delivered = r.singleChanges.map((c) => c.deliveredMs);
  // The manager's share: what the wait took beyond the write's own return (an etcd put returns after its commit).
  const beyond = r.singleChanges.map((c) => Math.max(0, c.deliveredMs - c.writtenMs)); // 0: delivered before the put returned
  return {
    'single change median / p95 (ms)': `${q(delivered, 0.5).toFixed(2)} / ${q(delivered, 0.95).toFixed(2)}`,
    'after the write returned, median / p95 (ms)': `${q(beyond, 0.5).toFixed(2)} / ${q(beyond, 0.95).toFixed(2)}`,
    'lease sets (single changes)': r.singleChangeDeliveries,
  };
}

async function loadHelpers(repoRoot) {
  const { build } = await import('esbuild');
  const outdir = join(repoRoot, 'node_modules/.cache/tsflannel-bench-api-scale');
  mkdirSync(outdir, { recursive: true });
  const entries = {
    kubeScale: 'test/helpers/kube-scale.ts',
    agentStorm: 'test/helpers/kube-agent-storm.ts',
    etcdScale: 'test/helpers/etcd-scale.ts',
    etcd: 'test/helpers/etcd.ts',
    renewal: 'src/daemon/subnet/renewal.ts',
  };
  await build({
    entryPoints: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, join(repoRoot, v)])),
    outdir,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outExtension: { '.js': '.mjs' },
    logLevel: 'error',
  });
  const mods = {};
  for (const k of Object.keys(entries)) mods[k] = await import(pathToFileURL(join(outdir, `${k}.mjs`)).href);
  return mods;
}

const f0 = (x) => x.toFixed(0);
const f1 = (x) => x.toFixed(1);

export async function run(ctx = {}) {
  const size = { ...(ctx.quick ? QUICK : FULL) };
  for (const [k, env] of [['nodes', 'BENCH_API_NODES'], ['heartbeats', 'BENCH_API_HEARTBEATS'], ['leases', 'BENCH_API_LEASES'], ['agents', 'BENCH_API_AGENTS'], ['changes', 'BENCH_API_CHANGES']]) {
    if (process.env[env]) size[k] = Number(process.env[env]);
  }
  // The burst of MAC changes: every Node / lease unless BENCH_API_CHANGES caps it.
  const burst = (n) => Math.min(n, size.changes ?? n);
  const repoRoot = ctx.repoRoot ?? new URL('..', import.meta.url).pathname;
  const log = ctx.log ?? (() => undefined);
  const m = await loadHelpers(repoRoot);
  const dir = mkdtempSync(join(tmpdir(), 'tsf-bench-api-'));
  const netConfPath = join(dir, 'net-conf.json');
  writeFileSync(netConfPath, JSON.stringify({ Network: '10.0.0.0/8', Backend: { Type: 'vxlan' } }));
  const results = [];
  // A failing part is reported as a table of its own; the other parts still run.
  // BENCH_API_PARTS=kube,etcd runs only those (e.g. the managers alone at 50,000, without a kernel first sync).
  const only = process.env.BENCH_API_PARTS ? new Set(process.env.BENCH_API_PARTS.split(',')) : undefined;
  const part = async (name, title, fn) => {
    if (only && !only.has(name)) return;
    try {
      await fn();
    } catch (err) {
      log(`api-scale: ${title} failed: ${err?.stack ?? err}`);
      results.push({ title: `${title}: FAILED`, rows: [{ name: 'error', message: String(err?.message ?? err).slice(0, 300) }] });
    }
  };
  try {
    // 1. The Kubernetes subnet manager alone (in this process).
    await part('kube', 'Kubernetes subnet manager', async () => {
      log(`api-scale: kube manager, ${size.nodes} Nodes`);
      const k = await m.kubeScale.runKubeStorm({ nodes: size.nodes, heartbeats: size.heartbeats, changes: burst(size.nodes), singleChanges: SINGLE_CHANGES, netConfPath });
      results.push({
        title: 'Kubernetes subnet manager against the fake API server',
        rows: [
          {
            name: `${k.nodes} Nodes`,
            'list / watch requests': `${k.lists} / ${k.watches}`,
            'first list RV': k.firstListResourceVersion ?? '(none)',
            'first list (ms)': f0(k.initialListMs),
            heartbeats: k.heartbeats,
            'lease sets (heartbeats)': k.heartbeatDeliveries,
            'CPU for them (ms)': f0(k.heartbeatCpuMs),
            'µs per heartbeat': f1(k.heartbeatCpuUsPerEvent),
            'ratio vs JSON.parse alone': (k.heartbeatCpuMs / Math.max(0.001, k.parseOnlyCpuMs)).toFixed(1),
            'MAC changes': k.changes,
            'lease sets (changes)': k.changeDeliveries,
            'changes per lease set': f0(k.changes / Math.max(1, k.changeDeliveries)),
            'all delivered (ms)': f0(k.changeWallMs),
            ...singleChangeColumns(k),
          },
        ],
        notes: [
          'The manager (src/daemon/subnet/kube.ts) in this process, against test/helpers/fake-kube.ts over HTTP; heartbeats change only status.conditions[Ready].lastHeartbeatTime, written in bursts of 1,000; MAC changes in one burst.',
          'CPU: this process, the fake\'s own writing taken off. Reference: JSON.parse of the same event lines, the least any watch client pays.',
          'Before this change (same scenario at 500 Nodes): 384 µs per heartbeat (a sort and serialisation of every lease per event) and one lease set per MAC change.',
          `Single change: ${SINGLE_CHANGES} Nodes one at a time, 250 ms apart (past the coalescing window), each from the Node update on the fake to the lease set in the backend's hands.`,
        ],
    });

    });

    // 2. The real agent in a node netns.
    await part('agent', 'tsflanneld in a node netns', async () => {
      log(`api-scale: tsflanneld, ${size.nodes} Nodes, ${size.heartbeats} heartbeats`);
      const a = await m.agentStorm.runAgentStorm({ nodes: size.nodes, heartbeats: size.heartbeats, repoRoot, log, timeoutMs: 300_000 });
      results.push({
        title: 'tsflanneld (Kubernetes mode) in a node netns: status storm and MAC burst',
        rows: [
          {
            name: `${a.nodes} Nodes`,
            'programmed in (s)': (a.programMs / 1000).toFixed(1),
            heartbeats: a.heartbeats,
            'kernel writes': a.heartbeatKernelWrites,
            'reconcile passes': a.heartbeatPasses,
            'agent CPU (ms)': f0(a.heartbeatAgentCpuMs),
            'µs per heartbeat': f0((a.heartbeatAgentCpuMs * 1000) / a.heartbeats),
            'MAC changes': a.changes,
            'passes for them': a.changePasses,
            'kernel messages seen': a.changeKernelWrites,
            'in kernel after (ms)': f0(a.changeWallMs),
            'agent CPU for them (ms)': f0(a.changeAgentCpuMs),
            'list / watch requests': `${a.lists} / ${a.watches}`,
            'agent RSS (MiB)': f0(a.agentRssMiB),
          },
        ],
        notes: [
          'bin/tsflanneld --kube-subnet-mgr --resync-period 3600 in a netns, reaching the fake API server through a socket bridge. Kernel writes: messages seen by `ip monitor route neigh link address` and `bridge monitor fdb` in the node netns, the sentinel Node\'s own entries taken off (a MAC change of the last Node after the storm shows that every heartbeat before it was read).',
          'Passes: tsflannel_reconcile_duration_seconds_count{reason="watch"}. CPU: the agent process, /proc utime+stime (10 ms ticks).',
        ],
    });

    });

    // 3. etcd: list and watch.
    await part('etcd', 'etcd subnet manager', async () => {
      const { haveEtcd, startEtcd } = m.etcd;
      if (haveEtcd) {
        log(`api-scale: etcd, ${size.leases} leases`);
        const etcd = await startEtcd();
        try {
          const e = await m.etcdScale.runEtcdStorm({ endpoint: etcd.endpoint, prefix: `/tsf-bench-${process.pid}/network`, leases: size.leases, changes: burst(size.leases), singleChanges: SINGLE_CHANGES });
          results.push({
            title: 'etcd subnet manager against a real etcd',
            rows: [
              {
                name: `${e.leases} leases`,
                'first lease set (ms)': f0(e.firstListMs),
                'its CPU (ms)': f0(e.firstListCpuMs),
                'range requests': e.pages,
                'separate puts': e.changes,
                'lease sets for them': e.changeDeliveries,
                'puts per lease set': f0(e.changes / Math.max(1, e.changeDeliveries)),
                'all delivered (ms)': f0(e.changeWallMs),
                ...singleChangeColumns(e),
              },
            ],
            notes: [
              'Debian etcd, one member; leases on one etcd lease; listing in pages of 1,000 keys at one revision; then one put per lease, 200 in flight.',
              `Single change: ${SINGLE_CHANGES} leases one at a time, 250 ms apart, each from the put (etcd's write and watch included) to the lease set in the backend's hands.`,
            ],
          });
        } finally {
          await etcd.stop();
        }
      } else {
        log('api-scale: no etcd binary; skipping the etcd table');
      }
    });

    // 4. Renewals, simulated.
    if (only && !only.has('renewals')) return results;
    const { simulateRenewals, seededRandom } = m.renewal;
    const sim = { agents: size.agents, intervalMs: 60_000, durationMs: 3_600_000, startSpreadMs: 1000 };
    const fixed = simulateRenewals({ ...sim, jitter: false, random: seededRandom(1) });
    const jit = simulateRenewals({ ...sim, random: seededRandom(1) });
    const down = { fromMs: 1_200_000, toMs: 1_500_000 };
    const outage = simulateRenewals({ ...sim, random: seededRandom(2), outage: down });
    const oldRandom = seededRandom(2);
    const oldRetry = (f) => Math.min(5000, 100 * 2 ** Math.min(f - 1, 16)) * (0.75 + 0.5 * oldRandom());
    const outageBefore = simulateRenewals({ ...sim, random: oldRandom, outage: down, backoffMs: oldRetry });
    const after = outage.perSecond.slice(27 * 60);
    results.push({
      title: 'etcd lease renewals of N agents started in the same second (simulated, 1 h, 60 s renewal interval)',
      rows: [
        { name: 'fixed interval (before)', agents: size.agents, 'peak per second': fixed.peak, 'mean per second': f1(fixed.mean), 'peak / mean': (fixed.peak / fixed.mean).toFixed(1) },
        { name: 'jittered (renewal.ts)', agents: size.agents, 'peak per second': jit.peak, 'mean per second': f1(jit.mean), 'peak / mean': (jit.peak / jit.mean).toFixed(2) },
        { name: 'etcd down 20–25 min: retries, 5 s backoff cap (before)', agents: size.agents, 'peak per second': outageBefore.peak, 'mean per second': f1(outageBefore.mean), 'peak / mean': (outageBefore.peak / outageBefore.mean).toFixed(1) },
        { name: 'etcd down 20–25 min: retries (renewalRetryMs)', agents: size.agents, 'peak per second': outage.peak, 'mean per second': f1(outage.mean), 'peak / mean': (outage.peak / outage.mean).toFixed(1) },
        { name: 'jittered, from 2 min after the outage', agents: size.agents, 'peak per second': Math.max(...after), 'mean per second': f1(after.reduce((x, y) => x + y, 0) / after.length), 'peak / mean': (Math.max(...after) / (after.reduce((x, y) => x + y, 0) / after.length)).toFixed(2) },
      ],
      notes: [
        'renewalDelayMs: the first renewal after taking the lease (or after an outage) at 0.1–1 × the interval, later ones at 0.8–1 ×; never later than the interval. Retries (renewalRetryMs): 1 s doubling to min(30 s, interval / 2), ±25 %; before: 100 ms doubling to 5 s, ±25 %.',
        'Peak/mean of the fixed interval: all agents renew in the same second of every minute.',
      ],
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run({ log: (msg) => console.error(msg), quick: process.argv.includes('--quick') }).then(
    (rs) => {
      for (const r of rs) {
        console.log(r.title);
        console.table(r.rows);
      }
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
