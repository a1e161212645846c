#!/usr/bin/env node
// The forwarder's own cost (native/build/tsflannel-forward, installed as
// /opt/cni/bin/tsflannel when the agent serves CNI calls): process start and
// VERSION, against the reference Go plugin /usr/lib/cni/bridge answering
// VERSION, and one forwarded call to an agent stand-in that answers at once,
// so the transport's overhead shows apart from the CNI work (bench/plugin.js
// measures ADD and DEL). The standalone TypeScript plugin's VERSION is the
// third column: what every call cost before the forwarder. Runs interleave.
//
//   node bench/run.js forward            through the runner (bench/run.js)
//   node bench/forward.js [--runs N]     alone
//
// TSFLANNEL_BENCH_FORWARDER_BEFORE=<path> adds another forwarder build (an
// older one, e.g. main's built into /tmp) as two more interleaved variants, so
// a change to the forwarder is compared within one run.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { installSignalCleanup, onCleanup, runCleanups } from './lib/cleanup.js';
import { tempDir } from './lib/netns.js';
import { timedSpawn } from './lib/spawn.js';
import { median, percentile, ratio } from './lib/stats.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const REFERENCE = '/usr/lib/cni/bridge';

// The agent's side of the socket protocol (docs/architecture-cni-path.md) reduced to an immediate fixed answer, in
// its own process as the real agent is.
const STAND_IN = `
const net = require('net');
const answer = Buffer.from(JSON.stringify({ v: 1, stdout: Buffer.from('{"cniVersion":"1.0.0"}\\n').toString('base64'), exitCode: 0, stderr: '' }));
const head = Buffer.alloc(4); head.writeUInt32BE(answer.length);
net.createServer((s) => {
  let buf = Buffer.alloc(0);
  s.on('error', () => {});
  s.on('data', (c) => {
    buf = Buffer.concat([buf, c]);
    if (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) s.end(Buffer.concat([head, answer]));
  });
}).listen(process.argv[1], () => process.stdout.write('up\\n'));
`;

async function startStandIn(sock) {
  const child = spawn(process.execPath, ['-e', STAND_IN, sock], { stdio: ['ignore', 'pipe', 'inherit'] });
  onCleanup(`agent stand-in ${child.pid}`, () => child.kill('SIGKILL'));
  await once(child.stdout, 'data');
  return child;
}

/**
 * CPU per call (ms) of `n` runs of a job in a row, from bash's `times`
 * (getrusage of its children: microseconds, where cutime counts 10 ms ticks
 * that a sub-millisecond program mostly never reaches). Not interleaved, so
 * it is apart from the timed runs; CPU time barely moves with other load.
 */
function batchCpuMs(job, n, work, name) {
  const input = join(work, `${name.replace(/[^a-z0-9]+/gi, '-')}.stdin`);
  writeFileSync(input, job.stdin ?? '');
  const loop = 'i=0; while [ "$i" -lt "$1" ]; do "${@:3}" < "$2" > /dev/null 2>&1 || exit 1; i=$((i+1)); done; times';
  const r = spawnSync('bash', ['-c', loop, 'bash', String(n), input, job.cmd, ...(job.args ?? [])], { env: job.env, encoding: 'utf8' });
  const children = r.stdout.trim().split('\n')[1] ?? '';
  const secs = [...children.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  if (r.status !== 0 || secs.length !== 2) throw new Error(`${name}: batch of ${n} failed (exit ${r.status}): ${r.stderr}`);
  return ((secs[0] + secs[1]) * 1000) / n;
}

/** One timed run that must succeed with the expected output, else the figure would be a lie. */
async function sample(job, expect) {
  const r = await timedSpawn(job);
  if (r.code !== 0 || !expect(r)) {
    throw new Error(`${job.cmd} exited ${r.code}: stdout ${JSON.stringify(r.stdout)} stderr ${JSON.stringify(r.stderr)}`);
  }
  return { ms: r.ms };
}

/** The VERSION and relay variants for another forwarder build at `bin` (none when unset). */
function beforeVariants(bin, { base, version, versionIn, conf, isVersion }) {
  if (!bin) return {};
  if (!existsSync(bin)) throw new Error(`TSFLANNEL_BENCH_FORWARDER_BEFORE=${bin}: no such file`);
  return {
    'before: VERSION': () => sample({ cmd: bin, env: version, stdin: versionIn }, isVersion),
    'before: relay (agent answers at once)': () =>
      sample({ cmd: bin, env: { ...base, CNI_COMMAND: 'DEL', TSFLANNEL_STANDALONE: '/bin/false' }, stdin: conf }, (r) => r.stderr === '' && r.stdout === '{"cniVersion":"1.0.0"}\n'),
  };
}

export async function run(ctx) {
  const repo = ctx.repoRoot ?? REPO;
  // ctx.runs: only when run alone with --runs.
  const runs = ctx.runs ?? (ctx.quick ? 15 : 100);
  const warmup = 3;
  ctx.log?.('forward: scripts/build-forward.sh (no-op when current)');
  const build = spawnSync('bash', [join(repo, 'scripts/build-forward.sh')], { cwd: repo, stdio: ['ignore', 'ignore', 'inherit'] });
  if (build.status !== 0) throw new Error('scripts/build-forward.sh failed');
  const forwarder = join(repo, 'native/build/tsflannel-forward');
  if (!existsSync(REFERENCE)) throw new Error(`${REFERENCE} missing (containernetworking-plugins)`);
  const work = tempDir('forward');
  const sock = join(work, 'cni.sock');
  await startStandIn(sock);

  // The floor every exec'ed program pays (fork, exec, a static binary's
  // start and exit): a static C program that exits at once.
  const floor = join(work, 'exit0');
  const cc = spawnSync('gcc', ['-O2', '-static', '-x', 'c', '-', '-o', floor], { input: 'int main(void) { return 0; }\n' });
  if (cc.status !== 0) throw new Error(`gcc (the floor program): ${cc.stderr}`);

  const versionIn = '{"cniVersion":"1.0.0"}';
  const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'tsfbench', type: 'tsflannel', agentSocket: sock, mtu: 1450 });
  const base = { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_CONTAINERID: 'bench', CNI_NETNS: '/var/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };
  const version = { ...base, CNI_COMMAND: 'VERSION' };
  const isVersion = (r) => r.stdout.includes('"supportedVersions"');
  const jobs = {};
  const variants = {
    'bridge VERSION (reference)': () => sample({ cmd: REFERENCE, env: version, stdin: versionIn }, isVersion),
    'floor: static C program exiting at once': () => sample({ cmd: floor, env: version, stdin: versionIn }, () => true),
    'tsflannel-forward VERSION': () => sample({ cmd: forwarder, env: version, stdin: versionIn }, isVersion),
    // /bin/false as the standalone: a fallback would fail the run instead of being timed.
    'tsflannel-forward relay (agent answers at once)': () =>
      sample({ cmd: forwarder, env: { ...base, CNI_COMMAND: 'DEL', TSFLANNEL_STANDALONE: '/bin/false' }, stdin: conf }, (r) => r.stderr === '' && r.stdout === '{"cniVersion":"1.0.0"}\n'),
    ...beforeVariants(process.env.TSFLANNEL_BENCH_FORWARDER_BEFORE, { base, version, versionIn, conf, isVersion }),
    'standalone TypeScript VERSION': () => sample({ cmd: process.execPath, args: [join(repo, 'bin/tsflannel')], env: version, stdin: versionIn }, isVersion),
  };
  const samples = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  // Each variant's job, for the CPU batches: the variants are closures over them.
  const jobOf = {
    'bridge VERSION (reference)': { cmd: REFERENCE, env: version, stdin: versionIn },
    'floor: static C program exiting at once': { cmd: floor, env: version, stdin: versionIn },
    'tsflannel-forward VERSION': { cmd: forwarder, env: version, stdin: versionIn },
    'tsflannel-forward relay (agent answers at once)': { cmd: forwarder, env: { ...base, CNI_COMMAND: 'DEL', TSFLANNEL_STANDALONE: '/bin/false' }, stdin: conf },
    'standalone TypeScript VERSION': { cmd: process.execPath, args: [join(repo, 'bin/tsflannel')], env: version, stdin: versionIn },
  };
  const before = process.env.TSFLANNEL_BENCH_FORWARDER_BEFORE;
  if (before) {
    jobOf['before: VERSION'] = { ...jobOf['tsflannel-forward VERSION'], cmd: before };
    jobOf['before: relay (agent answers at once)'] = { ...jobOf['tsflannel-forward relay (agent answers at once)'], cmd: before };
  }
  ctx.log?.(`forward: ${runs} interleaved runs of ${Object.keys(variants).length} variants`);
  for (let i = 0; i < warmup + runs; i++) {
    for (const [name, fn] of Object.entries(variants)) {
      const s = await fn();
      if (i >= warmup) samples[name].push(s);
    }
  }
  const batch = ctx.quick ? 100 : 500;
  ctx.log?.(`forward: CPU per call from batches of ${batch} (${batch / 10} for the standalone)`);
  const cpuOf = Object.fromEntries(
    Object.keys(samples).map((name) => [name, batchCpuMs(jobOf[name], name.startsWith('standalone') ? batch / 10 : batch, work, name)]),
  );
  const ref = samples['bridge VERSION (reference)'];
  const refMedian = median(ref.map((s) => s.ms));
  const refCpu = cpuOf['bridge VERSION (reference)'];
  const rows = Object.entries(samples).map(([name, xs]) => {
    const ms = xs.map((s) => s.ms);
    const cpu = cpuOf[name];
    return {
      name,
      median: median(ms),
      p95: percentile(ms, 95),
      'ratio median vs bridge': ratio(median(ms), refMedian),
      'CPU/call (ms)': cpu,
      'ratio CPU vs bridge': ratio(cpu, refCpu),
    };
  });
  return {
    title: 'CNI forwarder start-up: VERSION and one relayed call vs the reference Go plugin (ms)',
    rows,
    notes: [
      `${runs} interleaved runs per variant after ${warmup} warm-up rounds; node ${process.version}.`,
      ...(process.env.TSFLANNEL_BENCH_FORWARDER_BEFORE ? [`"before" rows: ${process.env.TSFLANNEL_BENCH_FORWARDER_BEFORE} (TSFLANNEL_BENCH_FORWARDER_BEFORE).`] : []),
      `Wall time from spawn to exit. CPU/call: user+system time of ${batch} runs in a row (${batch / 10} of the standalone) under bash, from its \`times\` (getrusage of its children), divided by the count.`,
      'The relay row adds connect + one frame each way to an agent stand-in (separate node process answering at once, its CPU not counted): the forwarder\'s transport overhead, without any CNI work.',
    ],
  };
}

async function main() {
  const i = process.argv.indexOf('--runs');
  const runs = i > 0 ? Number(process.argv[i + 1]) : undefined;
  if (runs !== undefined && (!Number.isInteger(runs) || runs < 1)) throw new Error('--runs wants a positive integer');
  installSignalCleanup();
  try {
    const r = await run({ repoRoot: REPO, quick: false, runs, log: (m) => process.stderr.write(`${m}\n`) });
    console.log(`\n${r.title}`);
    for (const row of r.rows) {
      console.log(
        `  ${row.name.padEnd(48)} median ${row.median.toFixed(2).padStart(7)}  p95 ${row.p95.toFixed(2).padStart(7)}  ×bridge ${row['ratio median vs bridge'].toFixed(2)}  CPU ${row['CPU/call (ms)'].toFixed(2)}`,
      );
    }
    for (const n of r.notes) console.log(`  ${n}`);
  } finally {
    runCleanups();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(`forward: ${err.stack ?? err}`);
    process.exitCode = 1;
  });
}
