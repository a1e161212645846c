// The VXLAN backend's edge-triggered path at a quick size (500 peers in a
// node netns): a lease event writes only that node's entries, as the kernel
// itself reports them (`ip monitor` inside the netns), and the periodic
// exact reconcile afterwards finds nothing to fix, or repairs drift the
// edge path cannot see.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { VxlanBackend } from '../../src/daemon/backend/vxlan.js';
import type { Lease, ReconcileReport } from '../../src/daemon/types.js';
import { addNetns, cleanupAll, inNs, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

const N = 500;

function leaseFor(i: number, mac = `6a:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01:02`): Lease {
  return {
    subnet: `10.${100 + Math.floor(i / 250)}.${i % 250}.0/24`,
    publicIP: `172.16.${Math.floor(i / 250)}.${(i % 250) + 2}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: mac },
    nodeName: `node${i}`,
  };
}

/** Collects the kernel's change notifications for routes, nexthop objects, neighbours and the FDB in a netns. */
class Monitor {
  private out = '';
  private readonly proc: ChildProcess;
  private marks = 0;

  constructor(private readonly ns: string) {
    this.proc = spawn('ip', ['-n', ns, '-o', 'monitor', 'route', 'nexthop', 'neigh'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.proc.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
  }

  /** Adds a marker route and waits until the monitor has seen it: everything before it has been seen too. */
  async mark(): Promise<string> {
    const dst = `192.0.2.${++this.marks}/32`;
    execFileSync('ip', ['-n', this.ns, 'route', 'add', dst, 'dev', 'eth0']);
    for (let i = 0; i < 200 && !this.out.includes(`${dst.replace('/32', '')} dev eth0`); i++) await sleep(25);
    expect(this.out).toContain(`${dst.replace('/32', '')} dev eth0`);
    return dst.replace('/32', '');
  }

  /** Kernel notifications between two marks (the marks excluded). */
  async between(action: () => void): Promise<string[]> {
    const a = await this.mark();
    action();
    const b = await this.mark();
    const text = this.out.slice(this.out.indexOf(`${a} dev eth0`));
    return text
      .slice(text.indexOf('\n') + 1, text.indexOf(`${b} dev eth0`))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !/^(Deleted )?(local )?fe80|ff00::|^(Deleted )?(multicast|broadcast)/.test(l));
  }

  stop(): void {
    this.proc.kill();
  }
}

const counts = (r: ReconcileReport) => ({ added: r.added, updated: r.updated, removed: r.removed, errors: r.errors });

describe.skipIf(requireOrSkip('backend-vxlan-edge', { root: isRoot }))('VXLAN backend: a lease event writes only that node\'s entries', () => {
  let ns: string;
  let backend: VxlanBackend;
  let leases: Lease[];
  let mon: Monitor;

  beforeAll(async () => {
    ns = addNetns('edge');
    const ip = (...a: string[]): void => void execFileSync('ip', ['-n', ns, ...a]);
    ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
    ip('addr', 'add', '172.16.200.1/16', 'dev', 'eth0');
    ip('link', 'set', 'eth0', 'up');
    ip('link', 'set', 'eth1', 'up');
    backend = new VxlanBackend({ config: { type: 'vxlan', vni: 1, port: 8472, directRouting: false }, network: '10.0.0.0/8', netns: nsPath(ns) });
    const ext = { name: 'eth0', index: 0, mtu: 1500, ip: '172.16.200.1', cidr: '172.16.200.1/16', publicIP: '172.16.200.1' };
    await backend.prepare(ext);
    await backend.configure({ subnet: '10.99.0.0/24', publicIP: ext.ip, backendType: 'vxlan', backendData: {} });
    leases = Array.from({ length: N }, (_, i) => leaseFor(i));
    const first = backend.reconcile(leases);
    expect(counts(first)).toEqual({ added: 3 * N, updated: 0, removed: 0, errors: [] });
    mon = new Monitor(ns);
    await sleep(100);
  });
  afterAll(() => {
    mon?.stop();
    cleanupAll();
  });

  it('an unchanged lease list (new objects, equal content) writes nothing', async () => {
    const copy = leases.map((l) => ({ ...l, backendData: { ...l.backendData } }));
    let report!: ReconcileReport;
    const seen = await mon.between(() => (report = backend.update(copy)));
    expect(counts(report)).toEqual({ added: 0, updated: 0, removed: 0, errors: [] });
    expect(report.programmed).toBe(N);
    expect(seen).toEqual([]);
  });

  it('a node changing its VTEP MAC rewrites only its neighbour and FDB entry', async () => {
    leases[7] = leaseFor(7, '6a:ee:00:00:00:07');
    let report!: ReconcileReport;
    const seen = await mon.between(() => (report = backend.update(leases.slice())));
    expect(counts(report)).toEqual({ added: 0, updated: 2, removed: 0, errors: [] });
    expect(seen.length).toBeGreaterThanOrEqual(3);
    for (const line of seen) expect(line).toMatch(/10\.100\.7\.0 |6a:00:00:07:01:02|6a:ee:00:00:00:07/);
    expect(seen.some((l) => l.startsWith('Deleted') && l.includes('6a:00:00:07:01:02'))).toBe(true);
    expect(seen).toContain('10.100.7.0 dev flannel.1 lladdr 6a:ee:00:00:00:07 PERMANENT');
    expect(seen.some((l) => !l.startsWith('Deleted') && l.includes('172.16.0.9') && l.includes('6a:ee:00:00:00:07'))).toBe(true);
  });

  it('a node leaving removes only its route, nexthop, neighbour and FDB entry', async () => {
    const gone = leases.splice(8, 1)[0]!;
    let report!: ReconcileReport;
    const seen = await mon.between(() => (report = backend.update(leases.slice())));
    expect(counts(report)).toEqual({ added: 0, updated: 0, removed: 3, errors: [] });
    expect(report.programmed).toBe(N - 1);
    for (const line of seen) expect(line).toMatch(/10\.100\.8\.0|6a:00:00:08:01:02/);
    // four deletions (route, its nexthop, neighbour, FDB); deleting a permanent
    // neighbour also makes the kernel announce its FAILED state first, which
    // is not a write of ours
    expect(seen.filter((l) => l.startsWith('Deleted'))).toHaveLength(4);
    expect(seen.filter((l) => /^Deleted id \d+ via 10\.100\.8\.0 dev flannel\.1 .*proto 157 onlink/.test(l))).toHaveLength(1);
    expect(seen.filter((l) => /^Deleted 10\.100\.8\.0\/24 nhid \d+ via 10\.100\.8\.0 dev flannel\.1 onlink/.test(l))).toHaveLength(1);
    expect(seen.filter((l) => !l.startsWith('Deleted'))).toEqual(seen.includes('10.100.8.0 dev flannel.1 FAILED') ? ['10.100.8.0 dev flannel.1 FAILED'] : []);
    expect(gone.subnet).toBe('10.100.8.0/24');
  });

  it('a node joining adds only its nexthop and three entries, and one moving its public IP moves only its FDB entry', async () => {
    leases.push(leaseFor(N));
    leases[9] = { ...leases[9]!, publicIP: '172.16.9.99' };
    let report!: ReconcileReport;
    const seen = await mon.between(() => (report = backend.update(leases.slice())));
    expect(counts(report)).toEqual({ added: 3, updated: 1, removed: 0, errors: [] });
    const joined = leaseFor(N);
    const macN = joined.backendData.VtepMAC!;
    expect(seen).toEqual(expect.arrayContaining([`10.102.0.0 dev flannel.1 lladdr ${macN} PERMANENT`]));
    // the nexthop, then the route through it
    const nh = seen.map((l) => /^id (\d+) via 10\.102\.0\.0 dev flannel\.1 .*proto 157 onlink/.exec(l)).filter((m) => m !== null);
    expect(nh).toHaveLength(1);
    expect(seen).toContain(`10.102.0.0/24 nhid ${nh[0]![1]} via 10.102.0.0 dev flannel.1 onlink`);
    // leases[9] is node10 (node8 left): its old FDB entry goes, the new one comes
    for (const line of seen) expect(line).toMatch(/10\.102\.0\.0|6a:00:01:f4:01:02|6a:00:00:0a:01:02/);
    expect(seen.filter((l) => l.includes('6a:00:00:0a:01:02'))).toHaveLength(2);
  });

  it('after the events, the exact reconcile finds the kernel already right', async () => {
    let report!: ReconcileReport;
    const seen = await mon.between(() => (report = backend.reconcile(leases)));
    expect(counts(report)).toEqual({ added: 0, updated: 0, removed: 0, errors: [] });
    expect(report.programmed).toBe(N);
    expect(seen).toEqual([]);
  });

  it('drift the edge path cannot see (a neighbour deleted by hand) is repaired by the exact reconcile', () => {
    execFileSync('ip', ['-n', ns, 'neigh', 'del', '10.100.20.0', 'dev', 'flannel.1']);
    expect(counts(backend.update(leases.slice()))).toEqual({ added: 0, updated: 0, removed: 0, errors: [] });
    expect(inNs(ns, 'ip', ['neigh', 'show', '10.100.20.0', 'dev', 'flannel.1']).trim()).toBe('');
    expect(counts(backend.reconcile(leases))).toEqual({ added: 1, updated: 0, removed: 0, errors: [] });
    expect(inNs(ns, 'ip', ['neigh', 'show', '10.100.20.0', 'dev', 'flannel.1'])).toContain('PERMANENT');
  });

  it('a conflicting event (two nodes claiming one VTEP MAC) falls back to the exact pass and refuses the newcomer', () => {
    const dup = { ...leaseFor(N + 1), backendData: { VNI: 1, VtepMAC: leases[0]!.backendData.VtepMAC! } };
    const report = backend.update([...leases, dup]);
    expect(report.errors).toEqual([expect.stringContaining('is already used by')]);
    expect(inNs(ns, 'ip', ['-4', 'route', 'show', '10.102.1.0/24'])).toBe('');
  });
});
