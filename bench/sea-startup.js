#!/usr/bin/env node
// Start-up cost of the single-executable plugin (dist/tsflannel, run as
// tsflannel-standalone: the forwarder's fallback) against the same bundle run
// by the system node (node dist/bundle/tsflannel.cjs) and the reference
// bridge+host-local, for VERSION and for ADD and DEL on private network
// namespaces. Runs are interleaved so a busy machine slows all sides alike;
// medians are reported.
//
//   node bench/run.js sea-startup          through the runner (bench/run.js)
//   node bench/sea-startup.js [--runs N]   alone (ADD/DEL needs root)
import { spawnSync } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { installSignalCleanup, runCleanups } from './lib/cleanup.js';
import { describeFailure, pluginJob, writeSubnetEnv } from './lib/cni.js';
import { addNetns, nsPath, tempDir } from './lib/netns.js';
import { startNsDriver } from './lib/ns-driver.js';
import { median, percentile, ratio } from './lib/stats.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const REF_BIN = '/usr/lib/cni/bridge';

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
      'reference bridge': () => timed(REF_BIN, [], { input, env: e }),
    },
    runs,
    3,
  );
}

/**
 * ADD and DEL of the standalone plugin (the forwarder's fallback: the single
 * executable under the name tsflannel-standalone, as `tsflannel install`
 * puts it), the same bundle run by node, and the reference chain Debian
 * ships (bridge + host-local), each call spawned directly inside one node
 * netns by a driver there (no `ip netns exec` in the figures). Every ADD gets
 * a fresh pod netns; the variants rotate each round. Samples per variant:
 * { add, del, addCpu, delCpu } in ms.
 */
async function addDelSamples(paths, runs, env, work) {
  const warmup = 2;
  const rounds = warmup + runs;
  const [nodeNs] = addNetns(['seanode'], { lo: true });
  const names = ['standalone (single executable)', 'node dist/bundle', 'reference bridge+host-local'];
  const pods = addNetns(names.flatMap((_, v) => Array.from({ length: rounds }, (__, i) => `seapod${v}x${i}`)));
  const subnetFile = join(work, 'subnet.env');
  writeSubnetEnv(subnetFile, '10.244.3.1/24');
  // The standalone never tries the agent: no agentSocket, as on a node whose agent is down.
  const tsfConf = { cniVersion: '1.0.0', name: 'tsfbench', type: 'tsflannel', subnetFile, dataDir: join(work, 'networks'), agentSocket: '' };
  const refConf = {
    cniVersion: '1.0.0', name: 'tsfbenchref', type: 'bridge', bridge: 'refbr0', isGateway: true, isDefaultGateway: true,
    hairpinMode: true, mtu: 1450,
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.4.0/24' }]], routes: [{ dst: '10.244.0.0/16' }], dataDir: join(work, 'ref-ipam') },
  };
  const variants = [
    { name: names[0], bin: paths.standalone, conf: tsfConf },
    { name: names[1], bin: process.execPath, args: [paths.bundle], conf: tsfConf },
    { name: names[2], bin: REF_BIN, conf: refConf },
  ];
  const driver = startNsDriver(nodeNs);
  const samples = Object.fromEntries(names.map((n) => [n, { add: [], del: [], addCpu: [], delCpu: [] }]));
  try {
    for (let i = 0; i < rounds; i++) {
      for (let k = 0; k < variants.length; k++) {
        const vi = (i + k) % variants.length;
        const v = variants[vi];
        const netns = nsPath(pods[vi * rounds + i]);
        const call = async (command) => {
          const job = pluginJob(v.bin, { command, containerId: `seabench${vi}x${i}`, netns, ifname: 'eth0' }, v.conf);
          if (v.args) job.args = v.args;
          job.env = { ...job.env, ...env };
          const { results } = await driver.run([job]);
          const r = results[0];
          if (r.code !== 0) throw new Error(`${v.name} ${command}: ${describeFailure(r)}`);
          return r;
        };
        const add = await call('ADD');
        const del = await call('DEL');
        if (i < warmup) continue;
        const s = samples[v.name];
        s.add.push(add.ms);
        s.del.push(del.ms);
        s.addCpu.push(add.cpuMs);
        s.delCpu.push(del.cpuMs);
      }
    }
  } finally {
    await driver.close();
  }
  return samples;
}

function toResult(title, samples, notes) {
  const rows = Object.entries(samples).map(([name, xs]) => ({ name, median: median(xs), p90: percentile(xs, 90) }));
  const r = ratio(median(samples['single executable']), median(samples['node dist/bundle']));
  const ref = ratio(median(samples['single executable']), median(samples['reference bridge']));
  return { title, rows, notes: [`single executable / node dist/bundle (medians): ${r.toFixed(2)}; / reference bridge: ${ref.toFixed(2)}`, ...notes] };
}

function addDelResult(samples, notes) {
  const ref = samples['reference bridge+host-local'];
  const rows = Object.entries(samples).map(([name, s]) => ({
    name,
    'ADD median': median(s.add),
    'ADD p95': percentile(s.add, 95),
    'DEL median': median(s.del),
    'DEL p95': percentile(s.del, 95),
    'CPU/call (ms)': (s.addCpu.reduce((a, b) => a + b, 0) + s.delCpu.reduce((a, b) => a + b, 0)) / (s.addCpu.length + s.delCpu.length),
    'ratio ADD': ratio(median(s.add), median(ref.add)),
    'ratio DEL': ratio(median(s.del), median(ref.del)),
  }));
  return { title: 'Standalone plugin (the forwarder\'s fallback): ADD and DEL against bridge+host-local (ms)', rows, notes };
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
  // The name the forwarder execs it by (src/main/dispatch.ts picks the plugin by it).
  paths.standalone = join(work, 'tsflannel-standalone');
  symlinkSync(paths.sea, paths.standalone);
  // The single executable extracts its native files here (not /var/lib/tsflannel) in its warm-up runs.
  const env = { PATH: process.env.PATH, TSFLANNEL_CACHE_DIR: join(work, 'cache') };
  const common = [`${runs} interleaved runs per variant after warm-up; node ${process.version}`];
  ctx.log?.('sea-startup: VERSION');
  const results = [toResult('Plugin start-up: VERSION (ms)', versionSamples(paths, runs, env), common)];
  if (process.getuid?.() === 0) {
    ctx.log?.('sea-startup: ADD and DEL against the reference');
    results.push(
      addDelResult(await addDelSamples(paths, runs, env, work), [
        ...common,
        'each round: ADD then DEL per variant, rotating the order; a fresh pod netns per ADD; spawned by a driver inside the node netns with PATH and CNI_* only',
        'CPU/call: user+system of the plugin process and its children; ratios are medians against bridge+host-local',
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
      for (const { name, ...figures } of r.rows) {
        console.log(`  ${name.padEnd(32)} ${Object.entries(figures).map(([k, v]) => `${k} ${v.toFixed(k.startsWith('ratio') ? 2 : 1)}`).join('  ')}`);
      }
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
