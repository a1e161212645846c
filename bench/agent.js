// How fast tsflanneld's VXLAN backend programs N remote nodes, applies one
// change, and what it costs in memory. Reference in the same run: iproute2
// applying the same entries with `ip -batch` / `bridge -batch` (one process
// each, the cheapest way a shell-based agent could do it), in the same form:
// each route through its own nexthop object, as tsflanneld writes them.
// Leases come from a fake source; everything happens in a private netns.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

const SIZES = (process.env.BENCH_AGENT_SIZES ?? '1000,5000,50000').split(',').filter(Boolean).map(Number);
const QUICK_SIZES = [100, 1000];
/**
 * Sizes for the no-op resync alone, on a kernel filled by `ip -batch`
 * through nexthop objects (seconds at 50,000, where programming the same
 * gateway routes one by one takes minutes: docs/scale.md).
 */
const RESYNC_SIZES = (process.env.BENCH_AGENT_RESYNC_SIZES ?? '50000').split(',').filter(Boolean).map(Number);
const QUICK_RESYNC_SIZES = [1000];
const RESYNC_RUNS = 5;
/** one-change events measured per size; the median and the worst are reported */
const EVENTS = 5;
const OWN_SUBNET = '10.255.255.0/24';
const REF_NEXTHOP_BASE = 10_000_000;

function macFor(i, tail = '01:02') {
  return `6a:${[i >> 16, (i >> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, '0')).join(':')}:${tail}`;
}

function leaseFor(i) {
  return {
    subnet: `10.${(i >> 8) + 1}.${i & 255}.0/24`,
    publicIP: `172.${16 + Math.floor(i / 65000)}.${Math.floor(i / 250) % 250}.${(i % 250) + 2}`,
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: macFor(i) },
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

/** Wall-clock and CPU (user + system) seconds of fn, and its result. */
function timed(fn) {
  const cpu = process.cpuUsage();
  const t = process.hrtime.bigint();
  const value = fn();
  const wall = Number(process.hrtime.bigint() - t) / 1e9;
  const used = process.cpuUsage(cpu);
  return { wall, cpu: (used.user + used.system) / 1e6, value };
}

function seconds(fn) {
  return timed(fn).wall;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Entries a pass wrote (added, changed or removed). */
const written = (r) => r.added + r.updated + r.removed;

function assertClean(report, what) {
  if (report.errors.length) throw new Error(`${what}: ${report.errors.length} errors, first: ${report.errors[0]}`);
}

async function measureBackend(ns, n) {
  const { VxlanBackend } = await import('../build/daemon/backend/index.js');
  const backend = new VxlanBackend({ config: { type: 'vxlan', vni: 1, port: 8472, directRouting: false }, network: '10.0.0.0/8', netns: `/var/run/netns/${ns}` });
  const ext = { name: 'eth0', index: 0, mtu: 1500, ip: '172.16.0.1', cidr: '172.16.0.1/12', publicIP: '172.16.0.1' };
  await backend.prepare(ext);
  await backend.configure({ subnet: OWN_SUBNET, publicIP: '172.16.0.1', backendType: 'vxlan', backendData: {} });
  let leases = Array.from({ length: n }, (_, i) => leaseFor(i));
  const first = timed(() => backend.reconcile(leases));
  assertClean(first.value, 'program all');
  if (first.value.added !== 3 * n) throw new Error(`program all wrote ${first.value.added} entries, expected ${3 * n}`);
  // The first exact pass after programming: no memo of a quiet dump yet, so
  // every line of the dump is compared with what the plans render.
  const firstExact = timed(() => backend.reconcile(leases));
  if (written(firstExact.value) !== 0) throw new Error(`the first exact pass after programming wrote ${JSON.stringify(firstExact.value)}`);
  // The periodic pass: the whole kernel state read and compared, nothing to write.
  const noop = timed(() => backend.reconcile(leases));
  if (written(noop.value) !== 0) throw new Error('no-op resync wrote something');
  // A lease event with nothing changed for the kernel (e.g. a renewal): equal leases, new objects.
  const copies = leases.map((l) => ({ ...l, backendData: { ...l.backendData } }));
  const noopEvent = timed(() => backend.update(copies));
  leases = copies;
  // Lease events: one node changes its VTEP MAC, one leaves, one joins.
  const mac = [];
  for (let e = 0; e < EVENTS; e++) {
    const i = (e * 7919) % n;
    leases = leases.slice();
    leases[i] = { ...leases[i], backendData: { VNI: 1, VtepMAC: macFor(i, `ee:${e.toString(16).padStart(2, '0')}`) } };
    const t = timed(() => backend.update(leases));
    assertClean(t.value, 'MAC change');
    if (t.value.updated !== 2 || t.value.added + t.value.removed !== 0) throw new Error(`MAC change wrote ${JSON.stringify(t.value)}`);
    mac.push(t);
  }
  // Nodes leaving (from inside the list) and joining (at its end), one at a time.
  const leave = [];
  const join_ = [];
  for (let e = 0; e < EVENTS; e++) {
    const leaving = leases[1 + e * 13];
    leases = leases.filter((l) => l !== leaving);
    const l = timed(() => backend.update(leases));
    if (l.value.removed !== 3 || l.value.errors.length) throw new Error(`node leaving wrote ${JSON.stringify(l.value)}`);
    leave.push(l);
    leases = [...leases, leaseFor(n + e)];
    const j = timed(() => backend.update(leases));
    if (j.value.added !== 3 || j.value.errors.length) throw new Error(`node joining wrote ${JSON.stringify(j.value)}`);
    join_.push(j);
  }
  const check = backend.reconcile(leases);
  if (check.added + check.updated + check.removed !== 0) throw new Error(`exact pass after the events wrote ${JSON.stringify(check)}`);
  const rss = process.memoryUsage().rss / 2 ** 20;
  const peakRss = process.resourceUsage().maxRSS / 1024;
  return { first, firstExact, noop, noopEvent, mac, leave, join: join_, rss, peakRss };
}

function measureIproute(ns, n, dir) {
  execFileSync('ip', ['-n', ns, 'link', 'add', 'ref.1', 'type', 'vxlan', 'id', '2', 'local', '172.16.0.1', 'dev', 'eth0', 'dstport', '8473', 'nolearning']);
  execFileSync('ip', ['-n', ns, 'link', 'set', 'ref.1', 'up']);
  const leases = Array.from({ length: n }, (_, i) => leaseFor(i));
  const ipBatch = join(dir, 'ip.batch');
  const brBatch = join(dir, 'bridge.batch');
  // ids far above the ones the shim allocates (from 1 up) for the backend's routes
  writeFileSync(ipBatch, leases.flatMap((l, i) => {
    const net = l.subnet.split('/')[0].replace('10.', '11.');
    return [`neigh replace ${net} lladdr ${l.backendData.VtepMAC} dev ref.1 nud permanent`,
      `nexthop add id ${REF_NEXTHOP_BASE + i} via ${net} dev ref.1 onlink`,
      `route replace ${l.subnet.replace('10.', '11.')} nhid ${REF_NEXTHOP_BASE + i}`];
  }).join('\n') + '\n');
  writeFileSync(brBatch, leases.map((l) => `fdb append ${l.backendData.VtepMAC} dev ref.1 dst ${l.publicIP} self permanent`).join('\n') + '\n');
  return seconds(() => {
    execFileSync('ip', ['-n', ns, '-batch', ipBatch]);
    execFileSync('ip', ['netns', 'exec', ns, 'bridge', '-batch', brBatch]);
  });
}

/**
 * The exact pass with nothing to do, N peers already in the kernel: their
 * neighbours and FDB entries, and their routes through nexthop objects of
 * tsflannel's protocol (157), as the agent writes them. RESYNC_RUNS passes
 * after a first one; each must write nothing.
 */
async function measureResync(ns, n, dir) {
  makeNode(ns);
  const { VxlanBackend } = await import('../build/daemon/backend/index.js');
  const backend = new VxlanBackend({ config: { type: 'vxlan', vni: 1, port: 8472, directRouting: false }, network: '10.0.0.0/8', netns: `/var/run/netns/${ns}` });
  const ext = { name: 'eth0', index: 0, mtu: 1500, ip: '172.16.0.1', cidr: '172.16.0.1/12', publicIP: '172.16.0.1' };
  await backend.prepare(ext);
  await backend.configure({ subnet: OWN_SUBNET, publicIP: '172.16.0.1', backendType: 'vxlan', backendData: {} });
  const leases = Array.from({ length: n }, (_, i) => leaseFor(i));
  const ipBatch = join(dir, 'resync-ip.batch');
  const brBatch = join(dir, 'resync-bridge.batch');
  writeFileSync(ipBatch, leases.flatMap((l, i) => {
    const gw = l.subnet.split('/')[0];
    return [`neigh replace ${gw} lladdr ${l.backendData.VtepMAC} dev flannel.1 nud permanent`,
      `nexthop replace id ${i + 1} via ${gw} dev flannel.1 onlink proto 157`, `route replace ${l.subnet} nhid ${i + 1}`];
  }).join('\n') + '\n');
  writeFileSync(brBatch, leases.map((l) => `fdb append ${l.backendData.VtepMAC} dev flannel.1 dst ${l.publicIP} self permanent`).join('\n') + '\n');
  const fill = seconds(() => {
    execFileSync('ip', ['-n', ns, '-batch', ipBatch]);
    execFileSync('ip', ['netns', 'exec', ns, 'bridge', '-batch', brBatch]);
  });
  const passes = [];
  for (let k = 0; k <= RESYNC_RUNS; k++) {
    const t = timed(() => backend.reconcile(leases));
    const r = t.value;
    if (r.errors.length || r.added + r.updated + r.removed !== 0) throw new Error(`no-op resync at ${n} wrote ${JSON.stringify({ ...r, errors: r.errors.slice(0, 3) })}`);
    if (r.programmed !== n) throw new Error(`no-op resync at ${n} counted ${r.programmed} peers programmed`);
    passes.push(t);
  }
  return { fill, first: passes[0], rest: passes.slice(1), rss: process.memoryUsage().rss / 2 ** 20 };
}

export async function run(ctx = {}) {
  const rows = [];
  const dir = mkdtempSync(join(tmpdir(), 'tsf-bench-agent-'));
  // Node netns are deleted at the end: the kernel frees a netns holding
  // 150,000 entries on a worker thread for tens of seconds, which would
  // take a core from the measurements after it.
  const made = [];
  try {
    return await measureAll(ctx, rows, dir, made);
  } finally {
    for (const ns of made) spawnSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measureAll(ctx, rows, dir, made) {
  for (const n of ctx.quick ? QUICK_SIZES : SIZES) {
    const ns = `tsfbench${randomBytes(2).toString('hex')}`;
    made.push(ns);
    {
      makeNode(ns);
      ctx.log?.(`agent: ${n} leases`);
      const ours = await measureBackend(ns, n);
      const ref = measureIproute(ns, n, dir);
      const ms = (s) => (s * 1000).toFixed(1);
      rows.push({
        name: `${n} leases`,
        'program all (s)': ours.first.wall.toFixed(3),
        'its CPU (s)': ours.first.cpu.toFixed(3),
        'iproute2 batch (s)': ref.toFixed(3),
        'ratio vs iproute2': (ours.first.wall / ref).toFixed(2),
        'first exact pass after programming (ms, CPU, written)': `${ms(ours.firstExact.wall)} (${ms(ours.firstExact.cpu)}, ${written(ours.firstExact.value)})`,
        'no-op resync (ms)': ms(ours.noop.wall),
        'its CPU (ms)': ms(ours.noop.cpu),
        'no-op event (ms, CPU)': `${ms(ours.noopEvent.wall)} (${ms(ours.noopEvent.cpu)})`,
        'MAC change median/max (ms)': `${ms(median(ours.mac.map((t) => t.wall)))} / ${ms(Math.max(...ours.mac.map((t) => t.wall)))}`,
        'its CPU median (ms)': ms(median(ours.mac.map((t) => t.cpu))),
        'node leaves median/max (ms, CPU median)': `${ms(median(ours.leave.map((t) => t.wall)))} / ${ms(Math.max(...ours.leave.map((t) => t.wall)))} (${ms(median(ours.leave.map((t) => t.cpu)))})`,
        'node joins median/max (ms, CPU median)': `${ms(median(ours.join.map((t) => t.wall)))} / ${ms(Math.max(...ours.join.map((t) => t.wall)))} (${ms(median(ours.join.map((t) => t.cpu)))})`,
        'RSS now/peak (MiB)': `${ours.rss.toFixed(0)} / ${ours.peakRss.toFixed(0)}`,
      });
    }
  }
  const resyncRows = [];
  for (const n of ctx.quick ? QUICK_RESYNC_SIZES : RESYNC_SIZES) {
    const ns = `tsfbench${randomBytes(2).toString('hex')}`;
    made.push(ns);
    {
      ctx.log?.(`agent: no-op resync at ${n} peers`);
      const m = await measureResync(ns, n, dir);
      const ms = (s) => (s * 1000).toFixed(0);
      resyncRows.push({
        name: `${n} peers (${3 * n} entries)`,
        'kernel filled by ip -batch (s)': m.fill.toFixed(2),
        'restarted agent\'s first pass (ms, CPU, written)': `${ms(m.first.wall)} (${ms(m.first.cpu)}, ${written(m.first.value)})`,
        'no-op resync median (ms)': ms(median(m.rest.map((t) => t.wall))),
        'its CPU median (ms)': ms(median(m.rest.map((t) => t.cpu))),
        'CPU min/max (ms)': `${ms(Math.min(...m.rest.map((t) => t.cpu)))} / ${ms(Math.max(...m.rest.map((t) => t.cpu)))}`,
        'RSS (MiB)': m.rss.toFixed(0),
      });
    }
  }
  const resync = {
    title: 'tsflanneld VXLAN backend: no-op resync with N peers already in the kernel',
    rows: resyncRows,
    notes: [
      `The kernel is filled first (neighbours, FDB, and routes through nexthop objects of protocol 157, the form tsflanneld writes), then the exact pass runs ${RESYNC_RUNS + 1} times; each must write nothing and count every peer programmed (checked).`,
      'first pass: a new backend (a restarted agent: no plans, no model, no quiet dump) plans every lease and compares every dumped line; the median is over the later passes, the periodic resync of a running agent. CPU = user + system of this process (the shim runs in it).',
      `1-min load average at the end: ${loadavg()[0].toFixed(2)}.`,
    ],
  };
  return [{
    title: 'tsflanneld VXLAN backend: programming N remote nodes (route + neigh + FDB each)',
    rows,
    notes: [
      'iproute2 reference: the same entries in the same form (neighbour, nexthop object, route `nhid I`, FDB) via `ip -batch` + `bridge -batch` in one process each, in the same netns, right after ours.',
      'program all / no-op resync: the exact pass (one dump per table, one batch of writes). The first exact pass after programming is the one right after it (nothing to write: every dumped line compared with what the plans render); the no-op resync is the pass after that (the periodic pass: the dump equals the last quiet one). CPU = user + system time of the agent process, which a loaded machine does not inflate.',
      `Events go through the edge-triggered path (backend.update with the full new lease list, as the agent calls it): from the call to every kernel ack. MAC change = ${EVENTS} events, median / worst; each writes 2 entries; then ${EVENTS} nodes leave (3 deletions counted each, its nexthop deleted with its route) and ${EVENTS} join (3 entries and a nexthop), alternating, median / worst; an exact pass afterwards must write nothing (checked).`,
      'RSS: the bench process (agent code in-process); peak = maxrss so far in the run.',
    ],
  }, resync];
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run({ log: (m) => console.error(m) }).then((rs) => rs.forEach((r) => console.table(r.rows)), (e) => { console.error(e); process.exit(1); });
}
