// The tsflannel CNI plugin against the reference chain Debian ships
// (/usr/lib/cni/bridge delegating to host-local), both called the way a
// runtime calls them: the binary exec'd with CNI_* env and the config on
// stdin. Everything happens in one private node netns (the bridges, the
// host veths, ip_forward) plus one fresh pod netns per ADD, all made before
// timing starts. A driver process inside the node netns spawns the plugins,
// so each figure is one plugin process from spawn to exit and nothing else.
//
// The two plugins are interleaved so machine noise (2 cores, other work)
// hits both alike: sequential calls alternate T R R T ..., and the
// concurrent runs go in ABBA blocks. Ratios are tsflannel / reference.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describeFailure, pluginJob, writeSubnetEnv } from './lib/cni.js';
import { addNetns, delNetns, nsPath, PREFIX, tempDir } from './lib/netns.js';
import { startNsDriver } from './lib/ns-driver.js';
import { ratio, summarize } from './lib/stats.js';

const REF_BIN = '/usr/lib/cni/bridge';
const CNI_PATH = '/usr/lib/cni';
const CALLERS = 10;

const FULL = { seq: 30, conc: 50, version: 30, startup: 20 };
const QUICK = { seq: 5, conc: 20, version: 5, startup: 5 };

/**
 * @typedef {import('./lib/spawn.js').Job} Job
 * @typedef {import('./lib/spawn.js').JobResult} JobResult
 * @typedef {import('./lib/ns-driver.js').NsDriver} NsDriver
 * @typedef {{ key: 'T' | 'R', label: string, bin: string, conf: object, subnetPrefix: string }} Contender
 */

/** The two contenders with their configs; the reference mirrors tsflannel's settings. */
function contenders(repoRoot, dir) {
  const subnetFile = join(dir, 'subnet.env');
  writeSubnetEnv(subnetFile);
  /** @type {Contender} */
  const tsf = {
    key: 'T',
    label: 'tsflannel',
    bin: join(repoRoot, 'bin', 'tsflannel'),
    conf: { cniVersion: '1.0.0', name: `${PREFIX}-tsf`, type: 'tsflannel', subnetFile, dataDir: join(dir, 'tsf-ipam') },
    subnetPrefix: '10.244.1.',
  };
  /** @type {Contender} */
  const ref = {
    key: 'R',
    label: 'bridge+host-local',
    bin: REF_BIN,
    conf: {
      cniVersion: '1.0.0',
      name: `${PREFIX}-ref`,
      type: 'bridge',
      bridge: 'refbr0',
      isGateway: true,
      isDefaultGateway: true,
      hairpinMode: true,
      mtu: 1450,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: '10.244.2.0/24' }]],
        routes: [{ dst: '10.244.0.0/16' }],
        dataDir: join(dir, 'ref-ipam'),
      },
    },
    subnetPrefix: '10.244.2.',
  };
  return [tsf, ref];
}

/** One pod: its netns and container id. */
function podOf(c, label) {
  return { label: `${c.key.toLowerCase()}-${label}`, id: `${PREFIX}-${c.key.toLowerCase()}-${label}` };
}

function addJob(c, pod) {
  return pluginJob(c.bin, { command: 'ADD', containerId: pod.id, netns: nsPath(pod.ns), ifname: 'eth0', path: CNI_PATH }, c.conf);
}

function delJob(c, pod) {
  return pluginJob(c.bin, { command: 'DEL', containerId: pod.id, netns: nsPath(pod.ns), ifname: 'eth0', path: CNI_PATH }, c.conf);
}

/** VERSION as podman sends it: dummy values in the other variables. */
function versionJob(bin) {
  return pluginJob(bin, { command: 'VERSION', netns: 'dummy', ifname: 'dummy', path: 'dummy' }, '{"cniVersion":"1.0.0"}');
}

/**
 * Checks every result of a batch; a benchmark over failed calls means
 * nothing, so any failure aborts with the first few reasons.
 * @param {string} what
 * @param {JobResult[]} results
 * @param {(r: JobResult) => string | undefined} [validate] extra check, returns a complaint
 */
function requireOk(what, results, validate) {
  const bad = [];
  results.forEach((r, i) => {
    const complaint = r.code !== 0 ? describeFailure(r) : validate?.(r);
    if (complaint) bad.push(`#${i}: ${complaint}`);
  });
  if (bad.length) throw new Error(`${what}: ${bad.length}/${results.length} calls failed; ${bad.slice(0, 3).join('; ')}`);
}

/** An ADD result must give the pod an address from the contender's subnet. */
function addValidator(c) {
  return (r) => {
    try {
      const ip = JSON.parse(r.stdout).ips?.[0]?.address ?? '';
      return ip.startsWith(c.subnetPrefix) ? undefined : `unexpected address "${ip}"`;
    } catch {
      return `stdout is not a result: ${r.stdout.slice(0, 120)}`;
    }
  };
}

/**
 * Sequential calls, alternating the contenders and who goes first (A B B A),
 * all in one driver batch with a single caller.
 * @param {NsDriver} driver
 * @param {Contender[]} cs
 * @param {(c: Contender, i: number) => Job} jobFor
 * @param {number} n calls per contender
 * @returns {Promise<Record<string, JobResult[]>>}
 */
async function sequential(driver, cs, jobFor, n) {
  const order = [];
  for (let i = 0; i < n; i++) {
    const pair = i % 2 === 0 ? cs : [...cs].reverse();
    for (const c of pair) order.push({ c, i });
  }
  const { results } = await driver.run(order.map(({ c, i }) => jobFor(c, i)), 1);
  const byKey = Object.fromEntries(cs.map((c) => [c.key, []]));
  order.forEach(({ c }, k) => byKey[c.key].push(results[k]));
  return byKey;
}

/**
 * `n` calls per contender with CALLERS concurrent callers, as two blocks of
 * n/2 in ABBA order so drift in machine load cancels out. Returns each
 * contender's results and its summed wall time (for throughput).
 * @param {NsDriver} driver
 * @param {Contender[]} cs
 * @param {(c: Contender, i: number) => Job} jobFor
 * @param {number} n
 */
async function concurrent(driver, cs, jobFor, n) {
  const half = Math.ceil(n / 2);
  const blocks = [
    [cs[0], 0, half],
    [cs[1], 0, half],
    [cs[1], half, n],
    [cs[0], half, n],
  ];
  const out = Object.fromEntries(cs.map((c) => [c.key, { results: [], wallMs: 0, cpuMs: 0 }]));
  for (const [c, from, to] of blocks) {
    const jobs = [];
    for (let i = from; i < to; i++) jobs.push(jobFor(c, i));
    const { results, wallMs, cpuMs } = await driver.run(jobs, CALLERS);
    out[c.key].results.push(...results);
    out[c.key].wallMs += wallMs;
    out[c.key].cpuMs += cpuMs;
  }
  return out;
}

const ms = (rs) => rs.map((r) => r.ms);

/** Mean CPU ms per call of a sequential batch (each result has its own cpuMs). */
const cpuPerCall = (rs) => rs.reduce((a, r) => a + (r.cpuMs ?? NaN), 0) / rs.length;

/**
 * One comparison row: medians, p95s, CPU per call and their ratios.
 * @param {{ T: number, R: number }} cpu mean CPU ms per call of each contender
 */
function compareRow(name, tRes, rRes, cs, cpu) {
  const t = summarize(ms(tRes));
  const r = summarize(ms(rRes));
  return {
    name,
    n: t.n,
    [`${cs[0].label} median`]: t.median,
    [`${cs[0].label} p95`]: t.p95,
    [`${cs[1].label} median`]: r.median,
    [`${cs[1].label} p95`]: r.p95,
    'ratio median': ratio(t.median, r.median),
    'ratio p95': ratio(t.p95, r.p95),
    [`${cs[0].label} CPU/call`]: cpu.T,
    [`${cs[1].label} CPU/call`]: cpu.R,
    'ratio CPU': ratio(cpu.T, cpu.R),
  };
}

const seqCpu = (byKey) => ({ T: cpuPerCall(byKey.T), R: cpuPerCall(byKey.R) });
const concCpu = (out) => ({ T: out.T.cpuMs / out.T.results.length, R: out.R.cpuMs / out.R.results.length });

/** Links of a kind left in the node netns, e.g. veths after every DEL. */
function linksOfType(nodeNs, type) {
  const out = execFileSync('ip', ['-n', nodeNs, '-j', 'link', 'show', 'type', type], { encoding: 'utf8' });
  return (JSON.parse(out || '[]')).map((l) => l.ifname);
}

/** host-local style leases (one file per IP) still held under a data dir. */
function leasesIn(dataDir, network) {
  const dir = join(dataDir, network);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
}

/** Address of eth0 in a pod netns, to prove an ADD did its work. */
function podAddress(ns) {
  const out = execFileSync('ip', ['-n', ns, '-j', '-4', 'addr', 'show', 'dev', 'eth0'], { encoding: 'utf8' });
  return JSON.parse(out)[0]?.addr_info?.[0]?.local;
}

/**
 * Where a plugin's start-up time goes. Each variant runs `n` times,
 * round-robin so noise spreads evenly; import-probe.js reports, from inside
 * the process, when user code started and how long an import took.
 */
async function startupBreakdown(driver, repoRoot, n) {
  const node = process.execPath;
  const probe = join(repoRoot, 'bench', 'lib', 'import-probe.js');
  const build = (p) => join(repoRoot, 'build', p);
  const tsfBin = join(repoRoot, 'bin', 'tsflannel');
  const versionEnv = versionJob(tsfBin);
  // Only PATH, like the plugin calls: the shell's environment can slow Node
  // down (NODE_EXTRA_CA_CERTS makes every start read a CA bundle).
  const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  const nodeJob = (args, extra = {}) => ({ cmd: node, args, env: { ...env, ...extra } });
  /** @type {{ name: string, job: Job, probe?: boolean }[]} */
  const variants = [
    { name: 'fork+exec /bin/true', job: { cmd: '/bin/true', env } },
    { name: 'reference bridge VERSION (Go)', job: versionJob(REF_BIN) },
    { name: 'node -e 0', job: nodeJob(['-e', '0']) },
    { name: 'node, empty ES module', job: nodeJob([probe]), probe: true },
    { name: 'node bin/tsflannel VERSION', job: { ...versionEnv, cmd: node, args: [tsfBin] } },
    { name: 'bin/tsflannel VERSION (#! /usr/bin/env node)', job: versionEnv },
    { name: 'import build/plugin/main.js (VERSION path)', job: nodeJob([probe, build('plugin/main.js')]), probe: true },
    { name: 'import pino', job: nodeJob([probe, 'pino']), probe: true },
    { name: 'import build/ipam/index.js', job: nodeJob([probe, build('ipam/index.js')]), probe: true },
    { name: 'import build/netlink/index.js + first call', job: nodeJob([probe, build('netlink/index.js'), 'netlink']), probe: true },
    { name: 'import build/plugin/commands.js (ADD path)', job: nodeJob([probe, build('plugin/commands.js')]), probe: true },
  ];
  const caCerts = process.env.NODE_EXTRA_CA_CERTS;
  if (caCerts) variants.push({ name: `node -e 0 with NODE_EXTRA_CA_CERTS=${caCerts}`, job: nodeJob(['-e', '0'], { NODE_EXTRA_CA_CERTS: caCerts }) });
  const order = [];
  for (let i = 0; i < n; i++) for (const v of variants) order.push(v);
  const { results } = await driver.run(order.map((v) => v.job), 1);
  const by = new Map(variants.map((v) => [v, []]));
  order.forEach((v, k) => by.get(v).push(results[k]));

  const base = summarize(ms(by.get(variants[2]))).median;
  return variants.map((v) => {
    const rs = by.get(v);
    requireOk(`start-up: ${v.name}`, rs);
    const s = summarize(ms(rs));
    const row = { name: v.name, n: s.n, median: s.median, p95: s.p95, 'median − node -e 0': s.median - base };
    if (v.probe) {
      const probes = rs.map((r) => JSON.parse(r.stdout));
      row['in-process: boot'] = summarize(probes.map((p) => p.bootMs)).median;
      row['in-process: import'] = summarize(probes.map((p) => p.importMs)).median;
      const call = summarize(probes.map((p) => p.callMs)).median;
      if (call > 0) row['in-process: 1st netlink call'] = call;
    }
    return row;
  });
}

export async function run(ctx) {
  const N = ctx.quick ? QUICK : FULL;
  const started = Date.now();
  for (const f of [REF_BIN, join(CNI_PATH, 'host-local'), join(ctx.repoRoot, 'bin', 'tsflannel'), join(ctx.repoRoot, 'build', 'plugin', 'main.js')]) {
    if (!existsSync(f)) throw new Error(`${f} is missing (run scripts/setup.sh)`);
  }
  const dir = tempDir('plugin');
  const cs = contenders(ctx.repoRoot, dir);
  const [tsf, ref] = cs;

  // Every namespace up front: node, one warm-up pod and one pod per ADD per contender.
  const [nodeNs] = addNetns(['node'], { lo: true });
  const pods = {};
  const podLabels = [];
  for (const c of cs) {
    pods[c.key] = { warm: podOf(c, 'warm'), seq: [], conc: [] };
    for (let i = 0; i < N.seq; i++) pods[c.key].seq.push(podOf(c, `s${i}`));
    for (let i = 0; i < N.conc; i++) pods[c.key].conc.push(podOf(c, `c${i}`));
    for (const p of [pods[c.key].warm, ...pods[c.key].seq, ...pods[c.key].conc]) podLabels.push(p);
  }
  const podNs = addNetns(podLabels.map((p) => p.label));
  podLabels.forEach((p, i) => (p.ns = podNs[i]));
  ctx.log(`node netns ${nodeNs}, ${podNs.length} pod netns ready`);

  const driver = startNsDriver(nodeNs);
  try {
    // Warm-up (untimed): makes both bridges, so every timed ADD is steady
    // state as in the reference notes, and warms the page cache.
    for (const c of cs) {
      const { results: [a] } = await driver.run([addJob(c, pods[c.key].warm)]);
      requireOk(`warm-up ADD ${c.label}`, [a], addValidator(c));
      const ip = podAddress(pods[c.key].warm.ns);
      if (!ip?.startsWith(c.subnetPrefix)) throw new Error(`warm-up ${c.label}: pod eth0 has ${ip}`);
      const { results: [d] } = await driver.run([delJob(c, pods[c.key].warm)]);
      requireOk(`warm-up DEL ${c.label}`, [d]);
    }
    const bridges = linksOfType(nodeNs, 'bridge').sort();
    if (bridges.join() !== 'cni0,refbr0') throw new Error(`expected bridges cni0 and refbr0 in the node netns, found ${bridges}`);

    ctx.log(`VERSION ×${N.version} each`);
    const ver = await sequential(driver, cs, (c) => versionJob(c.bin), N.version);
    for (const c of cs) {
      requireOk(`VERSION ${c.label}`, ver[c.key], (r) => (JSON.parse(r.stdout).supportedVersions?.includes('1.0.0') ? undefined : r.stdout));
    }

    ctx.log(`sequential ADD/DEL ×${N.seq} each`);
    const seqAdd = await sequential(driver, cs, (c, i) => addJob(c, pods[c.key].seq[i]), N.seq);
    for (const c of cs) requireOk(`sequential ADD ${c.label}`, seqAdd[c.key], addValidator(c));
    for (const c of cs) {
      const last = pods[c.key].seq[N.seq - 1];
      const ip = podAddress(last.ns);
      if (!ip?.startsWith(c.subnetPrefix)) throw new Error(`${c.label}: pod ${last.ns} eth0 has ${ip}`);
    }
    const seqDel = await sequential(driver, cs, (c, i) => delJob(c, pods[c.key].seq[i]), N.seq);
    for (const c of cs) requireOk(`sequential DEL ${c.label}`, seqDel[c.key]);

    ctx.log(`${CALLERS} concurrent callers, ADD/DEL ×${N.conc} each`);
    const concAdd = await concurrent(driver, cs, (c, i) => addJob(c, pods[c.key].conc[i]), N.conc);
    for (const c of cs) requireOk(`concurrent ADD ${c.label}`, concAdd[c.key].results, addValidator(c));
    for (const c of cs) {
      const ips = new Set(concAdd[c.key].results.map((r) => JSON.parse(r.stdout).ips[0].address));
      if (ips.size !== N.conc) throw new Error(`${c.label}: ${N.conc} concurrent ADDs gave only ${ips.size} distinct addresses`);
    }
    const concDel = await concurrent(driver, cs, (c, i) => delJob(c, pods[c.key].conc[i]), N.conc);
    for (const c of cs) requireOk(`concurrent DEL ${c.label}`, concDel[c.key].results);

    // Every DEL must have undone its ADD: no host veth, no lease left.
    const veths = linksOfType(nodeNs, 'veth');
    const leases = [...leasesIn(tsf.conf.dataDir, tsf.conf.name), ...leasesIn(ref.conf.ipam.dataDir, ref.conf.name)];
    if (veths.length || leases.length) throw new Error(`left after DEL: veths [${veths}], leases [${leases}]`);

    ctx.log(`start-up breakdown ×${N.startup}`);
    const startup = await startupBreakdown(driver, ctx.repoRoot, N.startup);

    const rows = [
      compareRow('VERSION, sequential', ver.T, ver.R, cs, seqCpu(ver)),
      compareRow('ADD, sequential', seqAdd.T, seqAdd.R, cs, seqCpu(seqAdd)),
      compareRow('DEL, sequential', seqDel.T, seqDel.R, cs, seqCpu(seqDel)),
      compareRow(`ADD, ${CALLERS} concurrent callers`, concAdd.T.results, concAdd.R.results, cs, concCpu(concAdd)),
      compareRow(`DEL, ${CALLERS} concurrent callers`, concDel.T.results, concDel.R.results, cs, concCpu(concDel)),
    ];
    const tput = (x) => (N.conc / x.wallMs) * 1000;
    const throughput = {
      name: `throughput, ${CALLERS} concurrent callers (ops/s)`,
      n: N.conc,
      [`${tsf.label} ADD`]: tput(concAdd.T),
      [`${ref.label} ADD`]: tput(concAdd.R),
      [`${tsf.label} DEL`]: tput(concDel.T),
      [`${ref.label} DEL`]: tput(concDel.R),
      'ratio ADD': ratio(tput(concAdd.T), tput(concAdd.R)),
      'ratio DEL': ratio(tput(concDel.T), tput(concDel.R)),
    };
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    const caCertsNote = process.env.NODE_EXTRA_CA_CERTS
      ? `This shell sets NODE_EXTRA_CA_CERTS, which makes every Node start read a CA bundle (last row); a runtime that passes its environment on to plugins would add that to every call of a Node plugin it runs directly (the forwarder drops NODE_* for its fallback: docs/configuration.md#environment-variables).`
      : undefined;
    return [
      {
        title: 'CNI plugin latency: tsflannel vs bridge+host-local (ms, spawn to exit)',
        rows,
        notes: [
          `One node netns; bridges cni0 (tsflannel, 10.244.1.0/24) and refbr0 (reference, 10.244.2.0/24), both MTU 1450, hairpin, default gateway, route 10.244.0.0/16; both already exist (one untimed warm-up ADD/DEL each).`,
          `Each ADD gets a fresh pod netns made before timing. A driver inside the node netns execs the plugin binary directly (bin/tsflannel via its #!/usr/bin/env node line), as a runtime does, with only PATH and CNI_* in its environment; the time is spawn() to exit.`,
          `Sequential: ${N.seq} ADDs then ${N.seq} DELs per plugin, alternating plugins (ABBA). VERSION: ${N.version} per plugin with podman's dummy env.`,
          `Concurrent: ${N.conc} ops per plugin with ${CALLERS} callers, run as two blocks of ${Math.ceil(N.conc / 2)} in ABBA order.`,
          `CPU/call = mean user+system ms of the plugin process and its children (each called process's own rusage (the driver, bench/driver) over the batch); unlike wall time it barely moves with other load on the machine.`,
          `Ratio = tsflannel / reference. Checked: every call exit 0, each ADD's address in its subnet, distinct addresses under concurrency, no veth or lease left after the DELs.`,
        ],
      },
      { title: `Concurrent throughput (${CALLERS} callers)`, rows: [throughput] },
      {
        title: 'tsflannel start-up breakdown (ms)',
        rows: startup,
        notes: [
          `${N.startup} runs each, round-robin, in the same node netns, environment PATH only (plus CNI_* for VERSION). "boot" is process start to the probe's first line (Node + ESM loader start-up), "import" the in-process time of one dynamic import (bench/lib/import-probe.js), "1st netlink call" loading koffi and the Go shim.`,
          ...(caCertsNote ? [caCertsNote] : []),
          `Whole plugin bench took ${seconds} s.`,
        ],
      },
    ];
  } finally {
    await driver.close();
    delNetns([nodeNs, ...podNs]);
  }
}
