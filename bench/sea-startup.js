#!/usr/bin/env node
// Start-up cost of the single-executable plugin (dist/tsflannel) against the
// same bundle run by the system node (node dist/bundle/tsflannel.cjs), for
// VERSION and for an ADD+DEL pair on private network namespaces. Runs are
// interleaved so a busy machine slows both sides alike; medians are reported.
//
//   node bench/run.js sea-startup          through the runner (bench/run.js)
//   node bench/sea-startup.js [--runs N]   alone (ADD/DEL needs root)
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { installSignalCleanup, runCleanups } from './lib/cleanup.js';
import { addNetns, nsPath, tempDir } from './lib/netns.js';
import { median, percentile, ratio } from './lib/stats.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));

function timed(cmd, args, opts) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr || r.stdout}`);
  return ms;
}

/** Interleaves the variants run by run; returns the samples of each. */
function measure(variants, runs, warmup) {
  const samples = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (let i = 0; i < warmup + runs; i++) {
    for (const [name, fn] of Object.entries(variants)) {
      const ms = fn(i);
      if (i >= warmup) samples[name].push(ms);
    }
  }
  return samples;
}

function versionSamples(paths, runs, env) {
  const input = '{"cniVersion":"1.0.0"}';
  const e = { ...env, CNI_COMMAND: 'VERSION' };
  return measure(
    {
      'node -e 0 (baseline)': () => timed(process.execPath, ['-e', '0'], { env }),
      'single executable': () => timed(paths.sea, [], { input, env: e }),
      'node dist/bundle': () => timed(process.execPath, [paths.bundle], { input, env: e }),
    },
    runs,
    3,
  );
}

/** ADD then DEL of one pod is one sample; `ip netns exec` is part of both sides. */
function addDelSamples(paths, runs, env, work) {
  const [nodeNs, podNs] = addNetns(['seanode', 'seapod'], { lo: true });
  const subnetFile = join(work, 'subnet.env');
  writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'tsfbench', type: 'tsflannel', subnetFile, dataDir: join(work, 'networks') });
  const pair = (argv) => (i) => {
    const cni = { ...env, CNI_CONTAINERID: `bench${i}`, CNI_NETNS: nsPath(podNs), CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' };
    const call = (command) => timed('ip', ['netns', 'exec', nodeNs, ...argv], { input: conf, env: { ...cni, CNI_COMMAND: command } });
    return call('ADD') + call('DEL');
  };
  return measure({ 'single executable': pair([paths.sea]), 'node dist/bundle': pair([process.execPath, paths.bundle]) }, runs, 2);
}

function toResult(title, samples, notes) {
  const rows = Object.entries(samples).map(([name, xs]) => ({ name, median: median(xs), p90: percentile(xs, 90) }));
  const r = ratio(median(samples['single executable']), median(samples['node dist/bundle']));
  return { title, rows, notes: [`single executable / node dist/bundle (medians): ${r.toFixed(2)}`, ...notes] };
}

/** The runner's entry point (see bench/run.js for the contract). */
export async function run(ctx) {
  const repo = ctx.repoRoot ?? REPO;
  const runs = ctx.quick ? 8 : 30;
  ctx.log?.('sea-startup: scripts/package.sh (no-op when dist/ is current)');
  const build = spawnSync('bash', [join(repo, 'scripts/package.sh')], { cwd: repo, stdio: ['ignore', 'ignore', 'inherit'] });
  if (build.status !== 0) throw new Error('scripts/package.sh failed; cannot benchmark the single executable');
  const paths = { sea: join(repo, 'dist/tsflannel'), bundle: join(repo, 'dist/bundle/tsflannel.cjs') };
  const work = tempDir('sea');
  // The single executable extracts its native files here (not /var/lib/tsflannel) in its warm-up runs.
  const env = { PATH: process.env.PATH, TSFLANNEL_CACHE_DIR: join(work, 'cache') };
  const common = [`${runs} interleaved runs per variant after warm-up; node ${process.version}`];
  ctx.log?.('sea-startup: VERSION');
  const results = [toResult('Plugin start-up: VERSION (ms)', versionSamples(paths, runs, env), common)];
  if (process.getuid?.() === 0) {
    ctx.log?.('sea-startup: ADD + DEL');
    results.push(
      toResult('Plugin start-up: ADD + DEL of one pod (ms)', addDelSamples(paths, runs, env, work), [
        ...common,
        'each sample is one ADD and one DEL, each run through `ip netns exec <node>`',
      ]),
    );
  }
  return results;
}

async function main() {
  const i = process.argv.indexOf('--runs');
  const runs = i > 0 ? Number(process.argv[i + 1]) : undefined;
  if (runs !== undefined && (!Number.isInteger(runs) || runs < 1)) throw new Error('--runs wants a positive integer');
  installSignalCleanup();
  try {
    const results = await run({ repoRoot: REPO, quick: runs !== undefined && runs < 30, log: (m) => process.stderr.write(`${m}\n`) });
    for (const r of results) {
      console.log(`\n${r.title}`);
      for (const row of r.rows) console.log(`  ${row.name.padEnd(22)} median ${row.median.toFixed(1).padStart(7)}   p90 ${row.p90.toFixed(1).padStart(7)}`);
      for (const n of r.notes) console.log(`  ${n}`);
    }
  } finally {
    runCleanups();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(`sea-startup: ${err.stack ?? err}`);
    process.exitCode = 1;
  });
}
