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
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { installSignalCleanup, onCleanup, runCleanups } from './lib/cleanup.js';
import { tempDir } from './lib/netns.js';
import { childCpuMs, timedSpawn } from './lib/spawn.js';
import { median, percentile, ratio } from './lib/stats.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const REFERENCE = '/usr/lib/cni/bridge';

// The agent's side of PROTOCOL.md reduced to an immediate fixed answer, in
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

/** One timed run that must succeed with the expected output, else the figure would be a lie. */
async function sample(job, expect) {
  const cpu0 = childCpuMs();
  const r = await timedSpawn(job);
  const cpuMs = childCpuMs() - cpu0;
  if (r.code !== 0 || !expect(r)) {
    throw new Error(`${job.cmd} exited ${r.code}: stdout ${JSON.stringify(r.stdout)} stderr ${JSON.stringify(r.stderr)}`);
  }
  return { ms: r.ms, cpuMs };
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

  const versionIn = '{"cniVersion":"1.0.0"}';
  const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'tsfbench', type: 'tsflannel', agentSocket: sock, mtu: 1450 });
  const base = { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_CONTAINERID: 'bench', CNI_NETNS: '/var/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };
  const version = { ...base, CNI_COMMAND: 'VERSION' };
  const isVersion = (r) => r.stdout.includes('"supportedVersions"');
  const variants = {
    'bridge VERSION (reference)': () => sample({ cmd: REFERENCE, env: version, stdin: versionIn }, isVersion),
    'tsflannel-forward VERSION': () => sample({ cmd: forwarder, env: version, stdin: versionIn }, isVersion),
    // /bin/false as the standalone: a fallback would fail the run instead of being timed.
    'tsflannel-forward relay (agent answers at once)': () =>
      sample({ cmd: forwarder, env: { ...base, CNI_COMMAND: 'DEL', TSFLANNEL_STANDALONE: '/bin/false' }, stdin: conf }, (r) => r.stderr === '' && r.stdout === '{"cniVersion":"1.0.0"}\n'),
    ...beforeVariants(process.env.TSFLANNEL_BENCH_FORWARDER_BEFORE, { base, version, versionIn, conf, isVersion }),
    'standalone TypeScript VERSION': () => sample({ cmd: process.execPath, args: [join(repo, 'bin/tsflannel')], env: version, stdin: versionIn }, isVersion),
  };
  const samples = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  ctx.log?.(`forward: ${runs} interleaved runs of ${Object.keys(variants).length} variants`);
  for (let i = 0; i < warmup + runs; i++) {
    for (const [name, fn] of Object.entries(variants)) {
      const s = await fn();
      if (i >= warmup) samples[name].push(s);
    }
  }
  const ref = samples['bridge VERSION (reference)'];
  const refMedian = median(ref.map((s) => s.ms));
  const refCpu = ref.reduce((a, s) => a + s.cpuMs, 0) / ref.length;
  const rows = Object.entries(samples).map(([name, xs]) => {
    const ms = xs.map((s) => s.ms);
    const cpu = xs.reduce((a, s) => a + s.cpuMs, 0) / xs.length;
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
      'Wall time from spawn to exit; CPU/call is the child\'s user+system time from cutime/cstime (10 ms ticks, averaged over all runs).',
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
