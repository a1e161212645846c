// How fast tsflanneld's VXLAN backend programs N remote nodes, applies one
// change, and what it costs in memory. Reference in the same run: iproute2
// applying the same route/neigh/fdb entries with `ip -batch` / `bridge -batch`
// (one process each, the cheapest way a shell-based agent could do it).
// Leases come from a fake source; everything happens in a private netns.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const SIZES = (process.env.BENCH_AGENT_SIZES ?? '100,1000,5000').split(',').map(Number);
const QUICK_SIZES = [100, 1000];

function leaseFor(i) {
  const third = Math.floor(i / 250);
  const fourth = i % 250;
  return {
    subnet: `10.${100 + third}.${fourth}.0/24`,
    publicIP: `172.${16 + Math.floor(i / 65000)}.${Math.floor(i / 250) % 250}.${(i % 250) + 2}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: `6a:${[i >> 16, (i >> 8) & 255, i & 255, 1, 2].map((b) => b.toString(16).padStart(2, '0')).join(':')}` },
  };
}

function makeNode(ns) {
  execFileSync('ip', ['netns', 'add', ns]);
  const ip = (...a) => execFileSync('ip', ['-n', ns, ...a]);
  ip('link', 'set', 'lo', 'up');
  ip('link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1');
  ip('addr', 'add', '172.16.0.1/12', 'dev', 'eth0');
  ip('link', 'set', 'eth0', 'up');
  ip('link', 'set', 'eth1', 'up');
}

function seconds(fn) {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function measureBackend(ns, n) {
  const { VxlanBackend } = await import('../build/daemon/backend/index.js');
  const backend = new VxlanBackend({ config: { type: 'vxlan', vni: 1, port: 8472, directRouting: false }, network: '10.0.0.0/8', netns: `/var/run/netns/${ns}` });
  const ext = { name: 'eth0', index: 0, mtu: 1500, ip: '172.16.0.1', cidr: '172.16.0.1/12', publicIP: '172.16.0.1' };
  await backend.prepare(ext);
  await backend.configure({ subnet: '10.99.0.0/24', publicIP: '172.16.0.1', backendType: 'vxlan', backendData: {} });
  const leases = Array.from({ length: n }, (_, i) => leaseFor(i));
  const rssBefore = process.memoryUsage().rss;
  const first = seconds(() => backend.reconcile(leases));
  const noop = seconds(() => backend.reconcile(leases));
  const changed = leases.slice();
  changed[0] = { ...changed[0], backendData: { VNI: 1, VtepMAC: '6a:ff:ff:ff:ff:01' } };
  const one = seconds(() => backend.reconcile(changed));
  const rssAfter = process.memoryUsage().rss;
  return { first, noop, one, rssMiB: rssAfter / 2 ** 20, rssGrowthMiB: (rssAfter - rssBefore) / 2 ** 20 };
}

function measureIproute(ns, n, dir) {
  execFileSync('ip', ['-n', ns, 'link', 'add', 'ref.1', 'type', 'vxlan', 'id', '2', 'local', '172.16.0.1', 'dev', 'eth0', 'dstport', '8473', 'nolearning']);
  execFileSync('ip', ['-n', ns, 'link', 'set', 'ref.1', 'up']);
  const leases = Array.from({ length: n }, (_, i) => leaseFor(i));
  const ipBatch = join(dir, 'ip.batch');
  const brBatch = join(dir, 'bridge.batch');
  writeFileSync(ipBatch, leases.flatMap((l) => {
    const net = l.subnet.split('/')[0];
    return [`route replace ${l.subnet.replace('10.', '11.')} via ${net.replace('10.', '11.')} dev ref.1 onlink`,
      `neigh replace ${net.replace('10.', '11.')} lladdr ${l.backendData.VtepMAC} dev ref.1 nud permanent`];
  }).join('\n') + '\n');
  writeFileSync(brBatch, leases.map((l) => `fdb append ${l.backendData.VtepMAC} dev ref.1 dst ${l.publicIP} self permanent`).join('\n') + '\n');
  return seconds(() => {
    execFileSync('ip', ['-n', ns, '-batch', ipBatch]);
    execFileSync('ip', ['netns', 'exec', ns, 'bridge', '-batch', brBatch]);
  });
}

export async function run(ctx = {}) {
  const rows = [];
  const dir = mkdtempSync(join(tmpdir(), 'tsf-bench-agent-'));
  for (const n of ctx.quick ? QUICK_SIZES : SIZES) {
    const ns = `tsfbench${randomBytes(2).toString('hex')}`;
    try {
      makeNode(ns);
      const ours = await measureBackend(ns, n);
      const ref = measureIproute(ns, n, dir);
      rows.push({
        name: `${n} leases`,
        'program all (s)': ours.first.toFixed(3),
        'iproute2 batch (s)': ref.toFixed(3),
        'ratio vs iproute2': (ours.first / ref).toFixed(2),
        'no-op resync (ms)': (ours.noop * 1000).toFixed(1),
        'one change (ms)': (ours.one * 1000).toFixed(1),
        'RSS (MiB)': ours.rssMiB.toFixed(0),
      });
    } finally {
      spawnSync('ip', ['netns', 'del', ns]);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return {
    title: 'tsflanneld VXLAN backend: programming N remote nodes (route + neigh + FDB each)',
    rows,
    notes: 'iproute2 reference: the same 3N entries via `ip -batch` + `bridge -batch` in one process each. "one change" = one node changes its VTEP MAC; RSS is the bench process after the runs.',
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((r) => console.table(r.rows), (e) => { console.error(e); process.exit(1); });
}
