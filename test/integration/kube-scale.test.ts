// The Kubernetes subnet manager keeps the API server quiet at scale: it lists
// from the watch cache, resumes watches from bookmarks instead of re-listing,
// ignores status heartbeats, and turns a burst of annotation changes into a
// few lease sets. Quick sizes here; `npm run bench` (bench/kube-scale.js)
// runs 5,000 Nodes, 10,000 heartbeats and 5,000 changes.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FakeKube } from '../helpers/fake-kube.js';
import { pollFor } from '../helpers/eventually.js';
import { collectLeases } from '../helpers/lease-watch.js';
import { runKubeStorm, scaleNode, nodeName } from '../helpers/kube-scale.js';
import { KubeSubnetManager, jittered, leaseFields } from '../../src/daemon/subnet/kube.js';
import { annotationKeys } from '../../src/daemon/subnet/annotations.js';
import type { Lease } from '../../src/daemon/types.js';

const P = 'flannel.alpha.coreos.com';
const NODES = Number(process.env.TSF_KUBE_SCALE_NODES ?? 500);
const HEARTBEATS = Number(process.env.TSF_KUBE_SCALE_HEARTBEATS ?? 1000);

let dir: string;
let netConf: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-kube-scale-'));
  netConf = join(dir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.0.0.0/8', Backend: { Type: 'vxlan' } }));
});
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The in-memory API server answers at once: poll every 10 ms, for 10 s.
const waitFor = (what: string, probe: () => boolean): Promise<unknown> => pollFor(what, probe, 10_000, 10);

/** A fake API server with three Nodes, and a manager watching it; every lease set it delivers lands in `calls`. */
async function watchedFake(opts: { listTimeoutMs?: number; before?: (fake: FakeKube) => void } = {}): Promise<{ fake: FakeKube; calls: Lease[][] }> {
  const fake = await FakeKube.start();
  cleanups.push(() => fake.close());
  fake.addNodes(3, (i) => scaleNode(i));
  opts.before?.(fake);
  const m = new KubeSubnetManager({
    nodeName: nodeName(0), netConfPath: netConf, apiServerUrl: fake.url, resyncSeconds: 300,
    ...(opts.listTimeoutMs !== undefined ? { listTimeoutMs: opts.listTimeoutMs } : {}),
    backoff: { initialMs: 20, maxMs: 200 }, logger: pino({ level: 'silent' }),
  });
  cleanups.push(() => m.close());
  return { fake, calls: collectLeases(m, (fn) => cleanups.push(fn)) };
}

describe('Kubernetes subnet manager at scale', () => {
  it(`lists ${NODES} Nodes once from the watch cache, ignores ${HEARTBEATS} status heartbeats and applies ${NODES} MAC changes in a few lease sets`, async () => {
    const r = await runKubeStorm({ nodes: NODES, heartbeats: HEARTBEATS, changes: NODES, singleChanges: 3, netConfPath: netConf });
    process.stderr.write(
      `[kube-scale] ${r.nodes} nodes: first list ${r.initialListMs.toFixed(0)} ms; ` +
        `${r.heartbeats} heartbeats: ${r.heartbeatDeliveries} lease sets, manager CPU ${r.heartbeatCpuMs.toFixed(0)} ms ` +
        `(${r.heartbeatCpuUsPerEvent.toFixed(1)} µs/event; JSON.parse alone ${r.parseOnlyCpuMs.toFixed(0)} ms), wall ${r.heartbeatWallMs.toFixed(0)} ms; ` +
        `${r.changes} MAC changes: ${r.changeDeliveries} lease sets in ${r.changeWallMs.toFixed(0)} ms (CPU ${r.changeCpuMs.toFixed(0)} ms); ` +
        `single changes: ${r.singleChanges.map((c) => c.deliveredMs.toFixed(1)).join(', ')} ms; requests: ${r.lists} list, ${r.watches} watch\n`,
    );
    expect(r.lists).toBe(1);
    expect(r.watches).toBe(1);
    expect(r.firstListResourceVersion).toBe('0');
    expect(r.allowWatchBookmarks).toBe(true);
    expect(r.heartbeatDeliveries).toBe(0);
    // Its CPU per heartbeat is printed above; the bound against JSON.parse lives in bench/api-scale.js.
    expect(r.changeDeliveries).toBeGreaterThanOrEqual(1);
    expect(r.changeDeliveries).toBeLessThanOrEqual(5);
    // A single change after a quiet spell goes out on its own, at once (timed in bench/api-scale.js).
    expect(r.singleChanges).toHaveLength(3);
    expect(r.singleChangeDeliveries).toBe(3);
  }, 60_000);

  it('resumes a watch the server ended from its last bookmark, with no re-list, even after the watch cache forgot older versions', async () => {
    const { fake, calls } = await watchedFake();
    await waitFor('watch open', () => fake.openWatches === 1 && calls.length === 1);

    // Other resources move the resourceVersion; a bookmark tells the watch.
    fake.advanceResourceVersion(500);
    expect(fake.bookmark()).toBe(1);
    const bookmarked = fake.resourceVersion;
    await new Promise((r) => setTimeout(r, 100));
    // The API server restarts its cache (nothing older than now can be watched) and ends the watch.
    fake.compact();
    fake.closeWatches('graceful');
    await waitFor('watch resumed', () => fake.openWatches === 1);
    const watches = fake.requests.filter((r) => r.verb === 'watch');
    expect(watches.at(-1)!.query.resourceVersion).toBe(bookmarked);
    expect(fake.count('list')).toBe(1);

    // The resumed watch still delivers changes.
    fake.setAnnotations(nodeName(2), { [`${P}/public-ip`]: '192.0.2.2' });
    await waitFor('change seen', () => calls.at(-1)!.some((l) => l.publicIP === '192.0.2.2'));
    expect(fake.count('list')).toBe(1);
  });

  it('without a bookmark the same cache restart answers 410 Gone, and the re-list reads from the cache again', async () => {
    const { fake, calls } = await watchedFake();
    await waitFor('watch open', () => fake.openWatches === 1 && calls.length === 1);
    const seen = fake.resourceVersion;
    fake.advanceResourceVersion(500);
    fake.compact();
    fake.closeWatches('graceful');
    await waitFor('re-listed and watching', () => fake.count('list') === 2 && fake.openWatches === 1);
    const lists = fake.requests.filter((r) => r.verb === 'list');
    // "Not older than what we saw": still served from the watch cache, never a quorum read.
    expect(lists.map((r) => r.query.resourceVersion)).toEqual(['0', seen]);
  });

  it('abandons a list whose answer stalls half-way after listTimeoutMs and lists again', async () => {
    const { fake, calls } = await watchedFake({ listTimeoutMs: 500, before: (f) => f.stallNextRequests(1, (r) => r.verb === 'list') });
    await waitFor('leases after the stalled list', () => calls.length === 1 && fake.openWatches === 1);
    expect(fake.count('list')).toBe(2);
    expect(calls[0]!.map((l) => l.nodeName)).toEqual([nodeName(0), nodeName(1), nodeName(2)]);
  });

  it('reads a status-only update as no change: the lease fields of a Node ignore status, labels and foreign annotations', () => {
    const keys = annotationKeys(P);
    const base = { metadata: { name: 'n', annotations: scaleNode(1).annotations }, spec: { podCIDR: '10.16.1.0/24', podCIDRs: ['10.16.1.0/24'] } };
    const fields = leaseFields(base, keys);
    expect(leaseFields({ ...base, status: { conditions: [{ type: 'Ready', status: 'True', lastHeartbeatTime: new Date() }] } }, keys)).toBe(fields);
    expect(leaseFields({ ...base, metadata: { ...base.metadata, labels: { a: 'b' }, annotations: { ...base.metadata.annotations, 'x/y': 'z' } } }, keys)).toBe(fields);
    expect(leaseFields({ ...base, metadata: { ...base.metadata, annotations: { ...base.metadata.annotations, [`${P}/public-ip`]: '1.2.3.4' } } }, keys)).not.toBe(fields);
    expect(leaseFields({ ...base, spec: { podCIDR: '10.16.2.0/24', podCIDRs: ['10.16.2.0/24'] } }, keys)).not.toBe(fields);
    expect(leaseFields({ ...base, spec: { ...base.spec, podCIDRs: ['10.16.1.0/24', 'fd00::/64'] } }, keys)).not.toBe(fields);
  });

  it('draws each re-list period from 0.8 to 1.2 times the resync period', () => {
    expect(jittered(300_000, () => 0)).toBe(240_000);
    expect(jittered(300_000, () => 0.5)).toBe(300_000);
    expect(jittered(300_000, () => 0.999999)).toBeLessThanOrEqual(360_000);
  });
});
