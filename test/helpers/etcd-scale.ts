// The etcd subnet manager against a real etcd holding thousands of subnet
// leases: the first listing (paged, one snapshot), and how many lease sets a
// burst of lease writes becomes. Used by test/integration/etcd-scale.test.ts
// (quick sizes) and bench/etcd-scale.js (5,000 leases).
import { Etcd3 } from 'etcd3';
import pino from 'pino';
import { EtcdSubnetManager } from '../../src/daemon/subnet/etcd.js';
import type { Lease } from '../../src/daemon/types.js';
import { LeaseClock, timeSingleChanges, type SingleChange } from './lease-clock.js';
import { pollFor } from './eventually.js';

export interface EtcdStormOptions {
  endpoint: string;
  /** key prefix of this run, e.g. /tsf-scale-123/network */
  prefix: string;
  leases: number;
  /** leases whose VTEP MAC changes, each in its own put, all at once */
  changes: number;
  /** keys per range request (the manager's default is 1000) */
  listPageSize?: number;
  /** single MAC changes timed one at a time after the burst (default 0) */
  singleChanges?: number;
  timeoutMs?: number;
}

export interface EtcdStormResult {
  leases: number;
  /** time to write the leases into etcd (setup, not the agent) */
  writeMs: number;
  /** watchLeases started to the first lease set, with every lease */
  firstListMs: number;
  firstListCpuMs: number;
  /** range requests the listing took */
  pages: number;
  changes: number;
  /** lease sets delivered until every change was seen */
  changeDeliveries: number;
  changeWallMs: number;
  /** each single change, timed from the put */
  singleChanges: SingleChange[];
  /** lease sets delivered for the single changes (one each when nothing else happens) */
  singleChangeDeliveries: number;
}

const mac = (i: number, tail: number) =>
  `0a:${tail.toString(16).padStart(2, '0')}:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

/** Lease i: subnet 10.<16+i/256>.<i%256>.0/24, flannel's value format. */
export function etcdLease(i: number, macTail = 1): { key: string; value: string } {
  return {
    key: `subnets/10.${16 + (i >> 8)}.${i & 255}.0-24`,
    value: JSON.stringify({
      PublicIP: `172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
      PublicIPv6: null,
      BackendType: 'vxlan',
      BackendData: { VNI: 1, VtepMAC: mac(i, macTail) },
    }),
  };
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

export async function runEtcdStorm(opts: EtcdStormOptions): Promise<EtcdStormResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const admin = new Etcd3({ hosts: opts.endpoint });
  const ranges: number[] = [];
  const m = new EtcdSubnetManager({
    endpoints: [opts.endpoint],
    prefix: opts.prefix,
    logger: pino({ level: 'warn' }, pino.destination(2)),
    ...(opts.listPageSize ? { listPageSize: opts.listPageSize } : {}),
  });
  const ac = new AbortController();
  try {
    await admin.put(`${opts.prefix}/config`).value(JSON.stringify({ Network: '10.0.0.0/8', Backend: { Type: 'vxlan' } }));
    // Every node's key on an etcd lease with a TTL, as agents write them; 100 puts per transaction.
    const ttl = await admin.leaseClient.leaseGrant({ TTL: 3600 });
    const w0 = performance.now();
    for (let i = 0; i < opts.leases; i += 100) {
      const ops = [];
      for (let j = i; j < Math.min(opts.leases, i + 100); j++) {
        const l = etcdLease(j);
        ops.push(admin.put(`${opts.prefix}/${l.key}`).value(l.value).lease(ttl.ID));
      }
      await admin.if(`${opts.prefix}/config`, 'Version', '>', 0).then(...ops).commit();
    }
    const writeMs = performance.now() - w0;

    // Count the range requests the manager's listing makes (its own client, wrapped).
    const client = (m as unknown as { client: Etcd3 }).client;
    const kv = client.kv as unknown as { range: (...a: unknown[]) => Promise<unknown> };
    const range = kv.range.bind(kv);
    kv.range = (...a: unknown[]) => {
      ranges.push(performance.now());
      return range(...a);
    };

    let deliveries = 0;
    let latest: Lease[] = [];
    const clock = new LeaseClock();
    const t0 = performance.now();
    const c0 = cpuMs();
    const done = m.watchLeases((leases) => {
      deliveries++;
      latest = leases;
      clock.delivered(leases);
    }, ac.signal);
    await pollFor('the first lease set', () => deliveries >= 1, timeoutMs, 5);
    const firstListMs = performance.now() - t0;
    const firstListCpuMs = cpuMs() - c0;
    if (latest.length !== opts.leases) throw new Error(`first lease set has ${latest.length} leases, expected ${opts.leases}`);
    const pages = ranges.length;
    // Let the watch start before the burst (its start revision follows the listing anyway).
    await new Promise((r) => setTimeout(r, 300));

    const before = deliveries;
    const c1 = performance.now();
    // One put per lease, as thousands of agents would write them, up to 200 in flight
    // (more only makes a single-member etcd on a loaded machine time requests out).
    let next = 0;
    const writer = async (): Promise<void> => {
      while (next < opts.changes) {
        const l = etcdLease(next++, 2);
        await admin.put(`${opts.prefix}/${l.key}`).value(l.value).lease(ttl.ID).exec();
      }
    };
    await Promise.all(Array.from({ length: Math.min(200, opts.changes) }, writer));
    const changed = new Set(Array.from({ length: opts.changes }, (_, i) => mac(i, 2)));
    await pollFor('every change delivered', () => latest.filter((l) => changed.has(l.backendData.VtepMAC ?? '')).length === opts.changes, timeoutMs, 5);
    const changeWallMs = performance.now() - c1;
    await new Promise((r) => setTimeout(r, 300));
    const changeDeliveries = deliveries - before;

    // One lease at a time changing its MAC, after the coalescing window.
    const beforeSingles = deliveries;
    const singleChanges = await timeSingleChanges(clock, opts.singleChanges ?? 0, 250, (k) => {
      const l = etcdLease((k * 7919) % opts.leases, 3 + (k % 200));
      const want = (JSON.parse(l.value) as { BackendData: { VtepMAC: string } }).BackendData.VtepMAC;
      const subnet = l.key.slice('subnets/'.length).replace('-', '/');
      return {
        change: () => admin.put(`${opts.prefix}/${l.key}`).value(l.value).lease(ttl.ID).exec(),
        probe: (leases) => leases.some((x) => x.subnet === subnet && x.backendData.VtepMAC === want),
      };
    }, timeoutMs);
    const singleChangeDeliveries = deliveries - beforeSingles;
    ac.abort();
    await done;
    return { leases: opts.leases, writeMs, firstListMs, firstListCpuMs, pages, changes: opts.changes, changeDeliveries, changeWallMs, singleChanges, singleChangeDeliveries };
  } finally {
    ac.abort();
    await m.close();
    await admin.delete().prefix(`${opts.prefix}/`).exec().catch(() => undefined);
    admin.close();
  }
}
