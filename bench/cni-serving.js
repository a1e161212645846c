// How the agent's way of serving a CNI call costs against the alternatives,
// in one interleaved run: the same handler behind the serving designs of
// bench/lib/cni-serving-server.js (agent: the agent's own CNI service, its
// workers accepting and serving calls themselves; hop4: the design before,
// the event loop handing each call to one of four worker threads; single:
// one worker thread with node:net; bare: one worker blocked in accept(2)
// with nothing else, the floor), each called through the static forwarder.
// BENCH_SERVING_DESIGNS picks them (hop1 too); BENCH_SERVING_SEQ sets the
// sequential calls per design. Sequential calls rotate the designs call by
// call; 10-caller batches alternate them. CPU per call is the server
// process's utime + stime growth (every thread) plus the forwarder's, over
// the calls; ratios are against hop4.
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeFailure, pluginJob, writeSubnetEnv } from './lib/cni.js';
import { processCpuMs } from './lib/cpu-clock.js';
import { onCleanup } from './lib/cleanup.js';
import { addNetns, delNetns, nsPath, PREFIX, tempDir } from './lib/netns.js';
import { startNsDriver } from './lib/ns-driver.js';
import { ratio, summarize } from './lib/stats.js';

const SERVER = fileURLToPath(new URL('./lib/cni-serving-server.js', import.meta.url));
const DESIGNS = (process.env.BENCH_SERVING_DESIGNS ?? 'agent,hop4,single,bare').split(',');
const CALLERS = 10;
const FULL = { seq: Number(process.env.BENCH_SERVING_SEQ ?? 40), conc: 60, rounds: 4 };
const QUICK = { seq: 10, conc: 20, rounds: 2 };

/** A design's name as a netns and container ID part: 'agent+single-threaded-gc' → 'agentsinglethreadedgc'. */
const tag = (d) => d.replace(/[^A-Za-z0-9]/g, '');

function startServer(design, nodeNs, socket, repoRoot) {
  const child = spawn('ip', ['netns', 'exec', nodeNs, process.execPath, SERVER, design, socket, repoRoot], { stdio: ['ignore', 'ignore', 'pipe'] });
  const stop = onCleanup(`cni-serving ${design}`, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr.on('data', (d) => {
      err += d;
      if (err.includes('ready\n')) resolve({ pid: child.pid, stop });
    });
    child.on('exit', (code) => reject(new Error(`${design} server exited with ${code}: ${err.trim()}`)));
  });
}

function checked(design, results) {
  const bad = results.filter((r) => r.code !== 0 || r.stderr.includes('running standalone'));
  if (bad.length) throw new Error(`${design}: ${bad.length}/${results.length} calls failed or fell back; ${describeFailure(bad[0])} ${bad[0].stderr.trim()}`);
}

export async function run(ctx) {
  const n = ctx.quick ? QUICK : FULL;
  const forwarder = [join(ctx.repoRoot, 'dist', 'tsflannel-forward'), join(ctx.repoRoot, 'native', 'build', 'tsflannel-forward')].find((p) => existsSync(p));
  if (!forwarder) throw new Error('no forwarder (run scripts/setup.sh)');
  const dir = tempDir('serving');
  const subnetFile = join(dir, 'subnet.env');
  writeSubnetEnv(subnetFile, '10.244.16.1/20');
  const pods = Math.max(n.seq, n.conc) + 1;
  const [nodeNs] = addNetns(['snode'], { lo: true });
  const podNs = Object.fromEntries(DESIGNS.map((d) => [d, addNetns(Array.from({ length: pods }, (_, i) => `s${tag(d)}-${i}`))]));
  const servers = {};
  const driver = startNsDriver(nodeNs);
  try {
    for (const d of DESIGNS) servers[d] = await startServer(d, nodeNs, join(dir, `${tag(d)}.sock`), ctx.repoRoot);
    const conf = (d) => ({ cniVersion: '1.0.0', name: `${PREFIX}-serving`, type: 'tsflannel', subnetFile, dataDir: join(dir, 'ipam'), agentSocket: join(dir, `${tag(d)}.sock`) });
    const job = (d, command, i) => {
      const j = pluginJob(forwarder, { command, containerId: `${PREFIX}-${tag(d)}-${i}`, netns: nsPath(podNs[d][i]), ifname: 'eth0' }, conf(d));
      j.env = { ...j.env, TSFLANNEL_STANDALONE: join(ctx.repoRoot, 'dist', 'tsflannel') };
      return j;
    };
    // Each design's handler is warm once before timing (it made cni0 on the first).
    for (const d of DESIGNS) {
      for (const command of ['ADD', 'DEL']) checked(d, (await driver.run([job(d, command, pods - 1)])).results);
    }
    const out = Object.fromEntries(DESIGNS.map((d) => [d, { ADD: { ms: [], cpu: 0 }, DEL: { ms: [], cpu: 0 }, conc: { ADD: [], DEL: [] } }]));
    ctx.log(`sequential: ${n.seq} ADDs then ${n.seq} DELs per design, rotating ${DESIGNS.join(' ')}`);
    for (const command of ['ADD', 'DEL']) {
      for (let i = 0; i < n.seq; i++) {
        const order = DESIGNS.map((_, k) => DESIGNS[(i + k) % DESIGNS.length]);
        for (const d of order) {
          const before = processCpuMs(servers[d].pid);
          const got = await driver.run([job(d, command, i)]);
          checked(d, got.results);
          out[d][command].ms.push(got.results[0].ms);
          out[d][command].cpu += processCpuMs(servers[d].pid) - before + got.cpuMs;
        }
      }
    }
    ctx.log(`${CALLERS} callers: ${n.conc} ADDs then ${n.conc} DELs per design and round, ${n.rounds} rounds`);
    for (let r = 0; r < n.rounds; r++) {
      const order = r % 2 ? [...DESIGNS].reverse() : DESIGNS;
      for (const command of ['ADD', 'DEL']) {
        for (const d of order) {
          const before = processCpuMs(servers[d].pid);
          const got = await driver.run(Array.from({ length: n.conc }, (_, i) => job(d, command, i)), CALLERS);
          checked(d, got.results);
          out[d].conc[command].push({ opsPerSec: (n.conc / got.wallMs) * 1000, cpu: (processCpuMs(servers[d].pid) - before + got.cpuMs) / n.conc });
        }
      }
    }
    const mean = (xs, k) => xs.reduce((s, x) => s + x[k], 0) / xs.length;
    const base = out.hop4 ?? out[DESIGNS[0]];
    const rows = DESIGNS.map((d) => {
      const o = out[d];
      const addMs = summarize(o.ADD.ms).median;
      const cpuAdd = o.ADD.cpu / n.seq;
      const ops = mean(o.conc.ADD, 'opsPerSec');
      return {
        name: d,
        'ADD median': addMs,
        'DEL median': summarize(o.DEL.ms).median,
        'CPU/ADD': cpuAdd,
        'CPU/DEL': o.DEL.cpu / n.seq,
        'ADD/s x10': ops,
        'DEL/s x10': mean(o.conc.DEL, 'opsPerSec'),
        'CPU/ADD x10': mean(o.conc.ADD, 'cpu'),
        'ADD median /hop4': ratio(addMs, summarize(base.ADD.ms).median),
        'CPU/ADD /hop4': ratio(cpuAdd, base.ADD.cpu / n.seq),
        'ADD/s x10 /hop4': ratio(ops, mean(base.conc.ADD, 'opsPerSec')),
        'CPU/ADD x10 /hop4': ratio(mean(o.conc.ADD, 'cpu'), mean(base.conc.ADD, 'cpu')),
      };
    });
    return {
      title: 'CNI serving designs: the agent\'s workers serving the socket themselves (agent) against the event loop\'s hop to a worker (hop4), one node:net worker (single) and the floor (bare)',
      rows,
      notes: [
        `Each design a process in one node netns serving build/plugin/handler.js, called through ${forwarder}; one store and one cni0 for all.`,
        `Sequential: ${n.seq} ADDs then ${n.seq} DELs per design, rotating the designs call by call. ${CALLERS} callers: ${n.conc} calls per batch, ${n.rounds} rounds alternating the order; ops/s and CPU are means over the rounds.`,
        'CPU (ms) = the server process\'s CPU clock growth (exact, every thread, those that ended too) plus the forwarder\'s, per call; no idle rate is subtracted (every design idles alike).',
      ],
    };
  } finally {
    await driver.close();
    for (const d of DESIGNS) servers[d]?.stop();
    delNetns([nodeNs, ...DESIGNS.flatMap((d) => podNs[d])]);
  }
}
