#!/usr/bin/env node
// Start-up cost of the single-executable plugin (dist/tsflannel) against the
// same bundle run by the system node (node dist/bundle/tsflannel.cjs), for
// VERSION and for an ADD+DEL pair on private network namespaces. Runs are
// interleaved so a busy machine slows both sides alike; medians are printed.
//
//   node bench/sea-startup.js [--runs N]      (ADD/DEL needs root)
//
// Also importable: `benchSeaStartup({ runs })` resolves to the results.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const SEA = join(REPO, 'dist/tsflannel');
const BUNDLE = join(REPO, 'dist/bundle/tsflannel.cjs');

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function timed(cmd, args, opts) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr || r.stdout}`);
  }
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

function ip(...args) {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

function versionBench(runs, env) {
  const input = '{"cniVersion":"1.0.0"}';
  const e = { ...env, CNI_COMMAND: 'VERSION' };
  return measure(
    {
      'node -e 0 (baseline)': () => timed(process.execPath, ['-e', '0'], { env }),
      sea: () => timed(SEA, [], { input, env: e }),
      'node bundle': () => timed(process.execPath, [BUNDLE], { input, env: e }),
    },
    runs,
    3,
  );
}

/** ADD then DEL of one pod, as one sample: a full attach/detach per runtime call pair. */
function addDelBench(runs, env, work) {
  const tag = randomBytes(2).toString('hex');
  const nodeNs = `tsfbench${tag}-node`;
  const podNs = `tsfbench${tag}-pod`;
  const created = [];
  try {
    for (const ns of [nodeNs, podNs]) {
      ip('netns', 'add', ns);
      created.push(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    const subnetFile = join(work, 'subnet.env');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'tsfbench', type: 'tsflannel', subnetFile, dataDir: join(work, 'networks') });
    const pair = (argv) => (i) => {
      const cni = { ...env, CNI_CONTAINERID: `bench${i}`, CNI_NETNS: `/var/run/netns/${podNs}`, CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' };
      const run = (command) => timed('ip', ['netns', 'exec', nodeNs, ...argv], { input: conf, env: { ...cni, CNI_COMMAND: command } });
      return run('ADD') + run('DEL');
    };
    return measure({ sea: pair([SEA]), 'node bundle': pair([process.execPath, BUNDLE]) }, runs, 2);
  } finally {
    for (const ns of created) spawnSync('ip', ['netns', 'del', ns]);
  }
}

export async function benchSeaStartup({ runs = 20 } = {}) {
  const build = spawnSync('bash', [join(REPO, 'scripts/package.sh')], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
  if (build.status !== 0) throw new Error('scripts/package.sh failed; cannot benchmark the single executable');
  const work = mkdtempSync(join(tmpdir(), 'tsf-bench-sea-'));
  // The SEA extracts its native files here (not /var/lib/tsflannel) on the first, warm-up, run.
  const env = { PATH: process.env.PATH, TSFLANNEL_CACHE_DIR: join(work, 'cache') };
  try {
    const results = { version: versionBench(runs, env) };
    if (process.geteuid?.() === 0) results.addDel = addDelBench(runs, env, work);
    return results;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function report(title, samples) {
  console.log(`\n${title} (median of ${Object.values(samples)[0].length} runs, ms)`);
  for (const [name, xs] of Object.entries(samples)) console.log(`  ${name.padEnd(22)} ${median(xs).toFixed(1).padStart(8)}`);
  const ratio = median(samples.sea) / median(samples['node bundle']);
  console.log(`  sea / node bundle      ${ratio.toFixed(2).padStart(8)}`);
}

async function main() {
  const i = process.argv.indexOf('--runs');
  const runs = i > 0 ? Number(process.argv[i + 1]) : 20;
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs wants a positive integer');
  const results = await benchSeaStartup({ runs });
  console.log(`tsflannel start-up: single executable vs node ${process.version} running the same bundle`);
  report('VERSION', results.version);
  if (results.addDel) report('ADD + DEL of one pod (ip netns exec included)', results.addDel);
  else console.log('\nADD + DEL skipped: needs root for network namespaces');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(`sea-startup: ${err.stack ?? err}`);
    process.exitCode = 1;
  });
}
