// Where one pod's ADD and DEL spend their time inside the handler, as an
// agent's CNI worker runs it (no socket, no forwarder): per call its wall
// and CPU time, each shim op (wall, and the process's CPU during it), and
// the host-local store's locked sections. The transport's share (forwarder
// start-up, socket, framing, worker hand-off) is what bench/cni-path.js's
// agent median adds on top of this one's.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { addNetns, delNetns, nsPath, PREFIX, tempDir } from './lib/netns.js';
import { summarize } from './lib/stats.js';
import { writeSubnetEnv } from './lib/cni.js';

const CHILD = fileURLToPath(new URL('./lib/cni-breakdown-child.js', import.meta.url));
const FULL = 30;
const QUICK = 10;

function rows(calls) {
  const out = [];
  const add = (name, values) => {
    const s = summarize(values);
    out.push({ name, 'median (ms)': s.median, 'p95 (ms)': s.p95 });
  };
  add('whole call, wall', calls.map((c) => c.ms));
  add('whole call, CPU (all threads)', calls.map((c) => c.cpuMs));
  add('  of it system time', calls.map((c) => c.sysMs));
  add('shim ops, wall (sum)', calls.map((c) => c.ops.reduce((s, o) => s + o.ms, 0)));
  add('shim ops, CPU (sum)', calls.map((c) => c.ops.reduce((s, o) => s + o.cpuMs, 0)));
  const perOp = new Map();
  for (const c of calls) {
    const byOp = new Map();
    for (const o of c.ops) {
      const k = `${o.op}${o.netns ? ' (in pod netns)' : ''}`;
      byOp.set(k, (byOp.get(k) ?? 0) + o.ms);
    }
    for (const [k, ms] of byOp) perOp.set(k, [...(perOp.get(k) ?? []), ms]);
  }
  for (const [k, v] of [...perOp].sort((a, b) => summarize(b[1]).median - summarize(a[1]).median)) {
    const n = calls.length ? (calls.reduce((s, c) => s + c.ops.filter((o) => `${o.op}${o.netns ? ' (in pod netns)' : ''}` === k).length, 0) / calls.length) : 0;
    add(`  shim ${k} ×${Number(n.toFixed(2))}, wall`, v);
  }
  const secs = new Map();
  for (const c of calls) for (const s of c.sections) secs.set(s.name, [...(secs.get(s.name) ?? []), s.ms]);
  for (const [k, v] of secs) add(`store section ${k} (lock, read, write), wall`, v);
  add('rest (JavaScript, store locks, files), wall', calls.map((c) => c.ms - c.ops.reduce((s, o) => s + o.ms, 0)));
  return out;
}

export async function run(ctx) {
  const n = ctx.quick ? QUICK : FULL;
  const dir = tempDir('breakdown');
  writeSubnetEnv(`${dir}/subnet.env`);
  const [node] = addNetns(['bnode'], { lo: true });
  const pods = addNetns(Array.from({ length: n + 1 }, (_, i) => `bpod${i}`));
  try {
    const json = execFileSync('ip', ['netns', 'exec', node, ...(process.env.BENCH_BREAKDOWN_WRAP ?? '').split(' ').filter(Boolean), process.execPath, ...(process.env.BENCH_BREAKDOWN_NODE_ARGS ?? '').split(' ').filter(Boolean), CHILD, ctx.repoRoot, dir, `${PREFIX}-bd`, ...pods.map(nsPath)], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    const got = JSON.parse(json);
    const gap = Number(process.env.BENCH_BREAKDOWN_GAP_MS || 0);
    const notes = [
      `${n} ADDs of fresh pods, then their ${n} DELs, in one node process inside a node netns: build/plugin/handler.js as a CNI worker of the agent runs it (modules and shim preloaded; one warm-up ADD/DEL made the bridge).`,
      gap > 0 ? `The process sleeps ${gap} ms before each call (BENCH_BREAKDOWN_GAP_MS), as an agent's worker idles between calls.` : 'Calls back to back (BENCH_BREAKDOWN_GAP_MS=20 puts an idle pause before each, as between two agent calls).',
      'Shim op wall = the FFI call, JSON both ways included (traceShimCalls in src/netlink/ffi.ts); CPU = process.cpuUsage() over the call, every thread (the shim\'s background deletion included).',
    ];
    return [
      { title: 'CNI handler breakdown: one ADD (ms)', rows: rows(got.ADD), notes },
      { title: 'CNI handler breakdown: one DEL (ms)', rows: rows(got.DEL), notes },
    ];
  } finally {
    delNetns([node, ...pods]);
  }
}
