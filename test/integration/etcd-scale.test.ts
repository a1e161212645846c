// The etcd subnet manager with many leases on a real etcd: the first listing
// comes in pages from one snapshot, and a burst of lease writes reaches the
// backend as a few lease sets. Quick size here; `npm run bench`
// (bench/etcd-scale.js) runs 5,000 leases.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireOrSkip } from '../helpers/require.js';
import { ETCD_BIN, haveEtcd, startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { runEtcdStorm } from '../helpers/etcd-scale.js';

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
    const r = await runEtcdStorm({ endpoint: etcd.endpoint, prefix: `/tsf-scale-${process.pid}/network`, leases: LEASES, changes: LEASES, listPageSize: 100 });
    process.stderr.write(
      `[etcd-scale] ${r.leases} leases written in ${r.writeMs.toFixed(0)} ms; first lease set after ${r.firstListMs.toFixed(0)} ms ` +
        `(CPU ${r.firstListCpuMs.toFixed(0)} ms, ${r.pages} range requests); ${r.changes} puts: ${r.changeDeliveries} lease sets in ${r.changeWallMs.toFixed(0)} ms\n`,
    );
    // etcd says whether more keys follow, so no empty last page.
    expect(r.pages).toBe(Math.ceil(LEASES / 100));
    expect(r.changeDeliveries).toBeGreaterThanOrEqual(1);
    // One per change before coalescing; the burst takes a few windows of 200 ms to arrive.
    expect(r.changeDeliveries).toBeLessThanOrEqual(Math.max(5, Math.ceil(r.changeWallMs / 200) + 2));
    expect(r.changeDeliveries).toBeLessThan(LEASES / 10);
  }, 120_000);
});
