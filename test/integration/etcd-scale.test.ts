// The etcd subnet manager with many leases on a real etcd: the first listing
// comes in pages from one snapshot, and a burst of lease writes reaches the
// backend as a few lease sets. Quick size here; `npm run bench`
// (bench/etcd-scale.js) runs 5,000 leases.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireOrSkip } from '../helpers/require.js';
import { ETCD_BIN, haveEtcd, startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { runEtcdStorm } from '../helpers/etcd-scale.js';
import { Etcd3 } from 'etcd3';
import pino from 'pino';
import { EtcdSubnetManager } from '../../src/daemon/subnet/etcd.js';

const LEASES = Number(process.env.TSF_ETCD_SCALE_LEASES ?? 500);

describe.skipIf(requireOrSkip('etcd at scale', { [`etcd (${ETCD_BIN})`]: haveEtcd }))('etcd subnet manager at scale (real etcd)', () => {
  let etcd: EtcdServer;
  beforeAll(async () => {
    etcd = await startEtcd();
  }, 60_000);
  afterAll(async () => {
    await etcd?.stop();
  });

  it(`lists ${LEASES} leases in pages of 100 from one snapshot, then applies ${LEASES} separate lease writes in a few lease sets`, async () => {
    const r = await runEtcdStorm({ endpoint: etcd.endpoint, prefix: `/tsf-scale-${process.pid}/network`, leases: LEASES, changes: LEASES, singleChanges: 3, listPageSize: 100 });
    process.stderr.write(
      `[etcd-scale] ${r.leases} leases written in ${r.writeMs.toFixed(0)} ms; first lease set after ${r.firstListMs.toFixed(0)} ms ` +
        `(CPU ${r.firstListCpuMs.toFixed(0)} ms, ${r.pages} range requests); ${r.changes} puts: ${r.changeDeliveries} lease sets in ${r.changeWallMs.toFixed(0)} ms; ` +
        `single changes: ${r.singleChanges.map((c) => c.deliveredMs.toFixed(1)).join(', ')} ms\n`,
    );
    // etcd says whether more keys follow, so no empty last page.
    expect(r.pages).toBe(Math.ceil(LEASES / 100));
    expect(r.changeDeliveries).toBeGreaterThanOrEqual(1);
    // One per change before coalescing; the burst takes a few windows of 200 ms to arrive.
    expect(r.changeDeliveries).toBeLessThanOrEqual(Math.max(5, Math.ceil(r.changeWallMs / 200) + 2));
    expect(r.changeDeliveries).toBeLessThan(LEASES / 10);
    // A single put after a quiet spell goes out on its own, at once (timed in bench/api-scale.js).
    expect(r.singleChanges).toHaveLength(3);
    expect(r.singleChangeDeliveries).toBe(3);
  }, 120_000);

  it('20 agents taking their leases in the same instant spread their first renewals over the renewal interval', async () => {
    const prefix = `/tsf-renew-${process.pid}/network`;
    const admin = new Etcd3({ hosts: etcd.endpoint });
    await admin.put(`${prefix}/config`).value(JSON.stringify({ Network: '10.60.0.0/16', Backend: { Type: 'vxlan' } }));
    // TTL 9 s: renewal margin 6 s, so a renewal interval of 3 s.
    const managers = Array.from({ length: 20 }, () => new EtcdSubnetManager({ endpoints: [etcd.endpoint], prefix, leaseTtlSeconds: 9, logger: pino({ level: 'silent' }) }));
    const renewals: number[][] = managers.map(() => []);
    try {
      managers.forEach((m, i) => {
        const lc = (m as unknown as { client: Etcd3 }).client.leaseClient as unknown as { leaseKeepAlive: (...a: unknown[]) => unknown };
        const keepAlive = lc.leaseKeepAlive.bind(lc);
        lc.leaseKeepAlive = (...a: unknown[]) => {
          renewals[i]!.push(performance.now());
          return keepAlive(...a);
        };
      });
      await Promise.all(managers.map((m, i) => m.acquireLease({ publicIP: `198.51.100.${i + 1}`, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: `0a:00:00:00:01:${(i + 16).toString(16)}` } })));
      const acquired = performance.now();
      await new Promise((r) => setTimeout(r, 3500));
      const first = renewals.map((r) => r[0]! - acquired);
      process.stderr.write(`[etcd-scale] first renewals after acquiring (ms): ${first.map((t) => t.toFixed(0)).sort((a, b) => Number(a) - Number(b)).join(' ')}\n`);
      expect(first.every((t) => Number.isFinite(t))).toBe(true);
      // Without jitter all 20 would renew together, 3 s after acquiring; with it they spread over 0.3-3 s.
      expect(Math.max(...first) - Math.min(...first)).toBeGreaterThan(1000);
      expect(Math.max(...first)).toBeLessThan(3000 + 1500); // timers fire late on a loaded machine
    } finally {
      await Promise.all(managers.map((m) => m.close()));
      await admin.delete().prefix(`${prefix}/`).exec();
      admin.close();
    }
  }, 60_000);
});
