// The Kubernetes subnet manager against thousands of Nodes on the fake API
// server: what it asks of the API server, what a storm of status heartbeats
// costs it, and how many lease sets a burst of annotation changes becomes.
// Used by test/integration/kube-scale.test.ts (quick sizes) and
// bench/kube-scale.js (full sizes), so both measure the same thing.
import pino from 'pino';
import { FakeKube } from './fake-kube.js';
import { KubeSubnetManager } from '../../src/daemon/subnet/kube.js';
import type { Lease } from '../../src/daemon/types.js';
import { LeaseClock, timeSingleChanges, type SingleChange } from './lease-clock.js';
import { pollFor } from './eventually.js';

const P = 'flannel.alpha.coreos.com';

export interface KubeStormOptions {
  nodes: number;
  /** status-only updates, spread round-robin over the Nodes */
  heartbeats: number;
  /** Nodes whose VTEP MAC changes, all in one burst */
  changes: number;
  netConfPath: string;
  /** heartbeats are sent in bursts of this many (default 1000) */
  heartbeatBurst?: number;
  /** single MAC changes timed one at a time after the burst (default 0) */
  singleChanges?: number;
  timeoutMs?: number;
}

export interface KubeStormResult {
  nodes: number;
  /** list and watch requests the manager made over the whole run */
  lists: number;
  watches: number;
  /** the resourceVersion the first list asked for ("0": the watch cache) */
  firstListResourceVersion: string | undefined;
  allowWatchBookmarks: boolean;
  initialListMs: number;
  heartbeats: number;
  /** lease sets delivered while the heartbeats were processed */
  heartbeatDeliveries: number;
  /** CPU the manager spent on the heartbeats (the fake's own writing excluded), and per heartbeat */
  heartbeatCpuMs: number;
  heartbeatCpuUsPerEvent: number;
  /** CPU of JSON.parse alone over the same heartbeat events: the least any watch client pays */
  parseOnlyCpuMs: number;
  heartbeatWallMs: number;
  changes: number;
  /** lease sets delivered until all changes were seen */
  changeDeliveries: number;
  changeWallMs: number;
  changeCpuMs: number;
  /** each single change, timed from the Node update */
  singleChanges: SingleChange[];
  /** lease sets delivered for the single changes (one each when nothing else happens) */
  singleChangeDeliveries: number;
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function macOf(i: number, tail: number): string {
  return `0a:${tail.toString(16).padStart(2, '0')}:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
}

export function nodeName(i: number): string {
  return `node-${String(i).padStart(5, '0')}`;
}

/** Node i: pod CIDR 10.<16+i/256>.<i%256>.0/24 and flannel's annotations. */
export function scaleNode(i: number, macTail = 1): { name: string; podCIDR: string; annotations: Record<string, string> } {
  return {
    name: nodeName(i),
    podCIDR: `10.${16 + (i >> 8)}.${i & 255}.0/24`,
    annotations: {
      [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${macOf(i, macTail)}"}`,
      [`${P}/backend-type`]: 'vxlan',
      [`${P}/kube-subnet-manager`]: 'true',
      [`${P}/public-ip`]: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    },
  };
}

export function changedMac(i: number): string {
  return macOf(i, 2);
}

export async function runKubeStorm(opts: KubeStormOptions): Promise<KubeStormResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const fake = await FakeKube.start({ historyLimit: Math.max(1000, opts.heartbeats + opts.changes + 10) });
  const manager = new KubeSubnetManager({
    nodeName: nodeName(0),
    netConfPath: opts.netConfPath,
    apiServerUrl: fake.url,
    resyncSeconds: 3600,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: pino({ level: 'warn' }, pino.destination(2)),
  });
  const ac = new AbortController();
  try {
    fake.addNodes(opts.nodes, (i) => scaleNode(i));
    let deliveries = 0;
    let latest: Lease[] = [];
    const clock = new LeaseClock();
    const t0 = performance.now();
    const done = manager.watchLeases((leases) => {
      deliveries++;
      latest = leases;
      clock.delivered(leases);
    }, ac.signal);
    await pollFor('the first list', () => deliveries === 1 && fake.openWatches === 1, timeoutMs, 5);
    const initialListMs = performance.now() - t0;

    // A sentinel change after the storm: the stream is ordered, so once it is
    // delivered every heartbeat before it has been read.
    const sentinel = nodeName(opts.nodes - 1);
    const sentinelSeen = (ip: string) => () => latest.some((l) => l.nodeName === sentinel && l.publicIP === ip);

    const burst = opts.heartbeatBurst ?? 1000;
    let fakeCpu = 0;
    const lines: string[] = [];
    const hbWall = performance.now();
    const hbCpu = cpuMs();
    const before = deliveries;
    for (let sent = 0; sent < opts.heartbeats; ) {
      const n = Math.min(burst, opts.heartbeats - sent);
      const c = cpuMs();
      fake.burst(() => {
        for (let k = 0; k < n; k++) {
          const node = fake.heartbeat(nodeName((sent + k) % opts.nodes), new Date(Date.now() + sent + k));
          if (lines.length < 2000) lines.push(JSON.stringify({ type: 'MODIFIED', object: node }));
        }
      });
      fakeCpu += cpuMs() - c;
      sent += n;
      // Let the client read between bursts, as kubelets' heartbeats are spread in time.
      await new Promise((r) => setImmediate(r));
    }
    const c = cpuMs();
    fake.setAnnotations(sentinel, { [`${P}/public-ip`]: '192.0.2.1' });
    fakeCpu += cpuMs() - c;
    await pollFor('the sentinel after the heartbeats', sentinelSeen('192.0.2.1'), timeoutMs, 5);
    const heartbeatCpuMs = cpuMs() - hbCpu - fakeCpu;
    const heartbeatWallMs = performance.now() - hbWall;
    const heartbeatDeliveries = deliveries - before - 1;

    // The reference: parsing the same events and nothing else.
    const p0 = cpuMs();
    for (let k = 0; k < opts.heartbeats; k++) JSON.parse(lines[k % lines.length]!);
    const parseOnlyCpuMs = cpuMs() - p0;

    // Every changed Node's VTEP MAC, in one burst.
    const chWall = performance.now();
    const chCpu = cpuMs();
    const beforeChanges = deliveries;
    let chFakeCpu = cpuMs();
    fake.burst(() => {
      for (let i = 0; i < opts.changes; i++) fake.setAnnotations(nodeName(i), { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${changedMac(i)}"}` });
    });
    chFakeCpu = cpuMs() - chFakeCpu;
    const changed = new Set(Array.from({ length: opts.changes }, (_, i) => `${nodeName(i)} ${changedMac(i)}`));
    await pollFor(
      'every changed MAC delivered',
      () => latest.filter((l) => changed.has(`${l.nodeName} ${l.backendData.VtepMAC}`)).length === opts.changes,
      timeoutMs,
      5,
    );
    const changeWallMs = performance.now() - chWall;
    const changeCpuMs = cpuMs() - chCpu - chFakeCpu;
    // Anything still in flight would show as more deliveries: give it a moment.
    await new Promise((r) => setTimeout(r, 300));
    const changeDeliveries = deliveries - beforeChanges;

    // One Node at a time changing its MAC, after the coalescing window.
    const beforeSingles = deliveries;
    const singleChanges = await timeSingleChanges(clock, opts.singleChanges ?? 0, 250, (k) => {
      const name = nodeName((k * 7919) % opts.nodes);
      const mac = `0a:03:00:00:${((k >> 8) & 255).toString(16).padStart(2, '0')}:${(k & 255).toString(16).padStart(2, '0')}`;
      return {
        change: () => fake.setAnnotations(name, { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}` }),
        probe: (leases) => leases.some((l) => l.nodeName === name && l.backendData.VtepMAC === mac),
      };
    }, timeoutMs);
    const singleChangeDeliveries = deliveries - beforeSingles;

    const firstList = fake.requests.find((r) => r.verb === 'list');
    const firstWatch = fake.requests.find((r) => r.verb === 'watch');
    ac.abort();
    await done;
    return {
      nodes: opts.nodes,
      lists: fake.count('list'),
      watches: fake.count('watch'),
      firstListResourceVersion: firstList?.query.resourceVersion,
      allowWatchBookmarks: firstWatch?.query.allowWatchBookmarks === 'true',
      initialListMs,
      heartbeats: opts.heartbeats,
      heartbeatDeliveries,
      heartbeatCpuMs,
      heartbeatCpuUsPerEvent: (heartbeatCpuMs * 1000) / Math.max(1, opts.heartbeats),
      parseOnlyCpuMs,
      heartbeatWallMs,
      changes: opts.changes,
      changeDeliveries,
      changeWallMs,
      changeCpuMs,
      singleChanges,
      singleChangeDeliveries,
    };
  } finally {
    ac.abort();
    await manager.close();
    await fake.close();
  }
}
