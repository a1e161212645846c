// The two CNI paths of tsflannel against the reference chain Debian ships
// (/usr/lib/cni/bridge delegating to host-local), in one interleaved run:
//
//   agent       the static forwarder (what `tsflannel install` puts in
//               /opt/cni/bin) handing each call to tsflanneld's CNI socket
//   reference   /usr/lib/cni/bridge + host-local
//   standalone  the forwarder finding no agent and exec'ing the standalone
//               plugin (the fallback a node takes while its agent restarts)
//
// Every call is a process exec'd by a driver inside one node netns with only
// PATH and CNI_* (plus TSFLANNEL_STANDALONE) in its environment, spawn to
// exit. CPU per call is the called process tree's (the driver's
// getrusage(RUSAGE_CHILDREN)) plus, on the agent path, the agent's share: the
// growth of its process CPU clock (all threads, exact) over the batch, less what
// the agent spends idle in that time (its rate measured in an idle window
// before the batches: timers and metrics, paid whether or not calls come),
// divided by the agent calls in it; the agent's share is also split by
// thread (event loop, CNI workers, other threads, threads that ended). The
// contenders alternate within each batch (A R S, S R A, ...), and the
// concurrent runs go in A R S S R A blocks.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describeFailure, pluginJob, writeSubnetEnv } from './lib/cni.js';
import { agentCommand, agentCpuSnapshot, agentCpuSplit, startCniAgent } from './lib/cni-agent.js';
import { addNetns, delNetns, nsPath, PREFIX, tempDir } from './lib/netns.js';
import { startNsDriver } from './lib/ns-driver.js';
import { ratio, summarize } from './lib/stats.js';

const REF_BIN = '/usr/lib/cni/bridge';
const CNI_PATH = '/usr/lib/cni';
const CALLERS = 10;
// warm: untimed ADD/DEL pairs on the agent path between the fresh agent's
// first sequential calls and the measured ones (see run()).
const FULL = { seq: 30, conc: 60, version: 30, idleMs: 3000, warm: 40 };
const QUICK = { seq: 8, conc: 20, version: 8, idleMs: 1000, warm: 10 };

const TARGETS = {
  median: 0.6,
  p95: 1.0,
  cpu: 0.5,
  throughput: 1.5,
  standalone: 3.0,
};

/** The shipped binaries when packaged, else the repository's builds; TSFLANNEL_BENCH_FORWARDER names another forwarder. */
function binaries(repoRoot) {
  const pick = (...candidates) => candidates.find((p) => existsSync(p));
  const forwarder = pick(process.env.TSFLANNEL_BENCH_FORWARDER || join(repoRoot, 'dist', 'tsflannel-forward'), join(repoRoot, 'native', 'build', 'tsflannel-forward'));
  const standalone = pick(join(repoRoot, 'dist', 'tsflannel'), join(repoRoot, 'bin', 'tsflannel'));
  const agent = agentCommand(repoRoot);
  if (!forwarder) throw new Error('no forwarder (run scripts/setup.sh, which runs scripts/build-forward.sh)');
  return { forwarder, standalone, agent };
}

/**
 * The agent's CPU over one batch: its whole share less the idle rate times
 * the batch's wall time (the idle work would have run without the calls),
 * with the split by thread, added into `into` (per contender A).
 */
function chargeAgent(into, agent, before, wallMs) {
  const split = agentCpuSplit(agent.pid, before, agentCpuSnapshot(agent.pid));
  const idle = Math.min(split.total, agent.idleRate * wallMs);
  into.cpuMs += split.total - idle;
  into.agent ??= { total: 0, main: 0, workers: 0, other: 0, ended: 0, idle: 0 };
  for (const k of ['total', 'main', 'workers', 'other', 'ended']) into.agent[k] += split[k];
  into.agent.idle += idle;
}

/** The agent's CPU per ms of wall time while no call comes (timers, metrics, GC). */
async function idleRate(pid, ms) {
  const before = agentCpuSnapshot(pid);
  await new Promise((r) => setTimeout(r, ms));
  const after = agentCpuSnapshot(pid);
  const split = agentCpuSplit(pid, before, after);
  return { rate: split.total / (after.at - before.at), split, ms: after.at - before.at };
}

function contenders(bins, dir) {
  const subnetFile = join(dir, 'subnet.env');
  writeSubnetEnv(subnetFile);
  const tsfConf = (agentSocket) => ({
    cniVersion: '1.0.0', name: `${PREFIX}-tsf`, type: 'tsflannel', subnetFile, dataDir: join(dir, 'tsf-ipam'), agentSocket,
  });
  const extraEnv = { TSFLANNEL_STANDALONE: bins.standalone };
  const socket = join(dir, 'run', 'cni.sock');
  return {
    socket,
    list: [
      { key: 'A', label: 'agent', bin: bins.forwarder, conf: tsfConf(socket), extraEnv, subnetPrefix: '10.244.1.', forwards: true },
      {
        key: 'R',
        label: 'reference',
        bin: REF_BIN,
        extraEnv: {},
        conf: {
          cniVersion: '1.0.0', name: `${PREFIX}-ref`, type: 'bridge', bridge: 'refbr0', isGateway: true, isDefaultGateway: true,
          hairpinMode: true, mtu: 1450,
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.2.0/24' }]], routes: [{ dst: '10.244.0.0/16' }], dataDir: join(dir, 'ref-ipam') },
        },
        subnetPrefix: '10.244.2.',
      },
      // Shares the agent's bridge, subnet and store: a socket path nobody serves.
      { key: 'S', label: 'standalone', bin: bins.forwarder, conf: tsfConf(join(dir, 'no-agent', 'cni.sock')), extraEnv, subnetPrefix: '10.244.1.', fallsBack: true },
    ],
  };
}

const podOf = (c, label) => ({ label: `${c.key.toLowerCase()}-${label}`, id: `${PREFIX}-${c.key.toLowerCase()}-${label}` });

function job(c, command, pod) {
  const j = pluginJob(c.bin, { command, containerId: pod.id, netns: nsPath(pod.ns), ifname: 'eth0', path: CNI_PATH }, c.conf);
  j.env = { ...j.env, ...c.extraEnv };
  return j;
}

function versionJob(c) {
  const j = pluginJob(c.bin, { command: 'VERSION', netns: 'dummy', ifname: 'dummy', path: 'dummy' }, '{"cniVersion":"1.0.0"}');
  j.env = { ...j.env, ...c.extraEnv };
  return j;
}

/** A batch over failed calls, or over calls that took the wrong path, means nothing. */
function requireOk(what, c, results, isAdd) {
  const bad = [];
  results.forEach((r, i) => {
    let complaint = r.code !== 0 ? describeFailure(r) : undefined;
    if (!complaint && c.forwards && r.stderr.includes('running standalone')) complaint = `fell back: ${r.stderr.trim()}`;
    if (!complaint && c.fallsBack && isAdd && !r.stderr.includes('running standalone')) complaint = 'did not take the standalone path';
    if (!complaint && isAdd) {
      const ip = JSON.parse(r.stdout).ips?.[0]?.address ?? '';
      if (!ip.startsWith(c.subnetPrefix)) complaint = `unexpected address "${ip}"`;
    }
    if (complaint) bad.push(`#${i}: ${complaint}`);
  });
  if (bad.length) throw new Error(`${what} ${c.label}: ${bad.length}/${results.length} failed; ${bad.slice(0, 3).join('; ')}`);
}

/** All contenders in one batch, one caller, order rotating per round; agent CPU measured around it. */
async function sequential(driver, cs, agent, jobFor, n) {
  const order = [];
  for (let i = 0; i < n; i++) for (const c of i % 2 === 0 ? cs : [...cs].reverse()) order.push({ c, i });
  const before = agentCpuSnapshot(agent.pid);
  const { results, wallMs } = await driver.run(order.map(({ c, i }) => jobFor(c, i)), 1);
  const by = Object.fromEntries(cs.map((c) => [c.key, { results: [], cpuMs: 0, callerMs: 0 }]));
  order.forEach(({ c }, k) => {
    by[c.key].results.push(results[k]);
    by[c.key].cpuMs += results[k].cpuMs ?? NaN;
    by[c.key].callerMs += results[k].cpuMs ?? NaN;
  });
  chargeAgent(by.A, agent, before, wallMs);
  return by;
}

/** `n` sequential ADDs of `podFor(c, i)` per contender, then their DELs, each checked (`what` names them in errors). */
async function sequentialAddDel(driver, cs, agent, podFor, n, what) {
  const add = await sequential(driver, cs, agent, (c, i) => job(c, 'ADD', podFor(c, i)), n);
  for (const c of cs) requireOk(`${what} ADD`, c, add[c.key].results, true);
  const del = await sequential(driver, cs, agent, (c, i) => job(c, 'DEL', podFor(c, i)), n);
  for (const c of cs) requireOk(`${what} DEL`, c, del[c.key].results, false);
  return [add, del];
}

/** `n` calls per contender with CALLERS callers, in A R S S R A blocks of n/2. */
async function concurrent(driver, cs, agent, jobFor, n) {
  const half = Math.ceil(n / 2);
  const blocks = [...cs.map((c) => [c, 0, half]), ...[...cs].reverse().map((c) => [c, half, n])];
  const out = Object.fromEntries(cs.map((c) => [c.key, { results: [], wallMs: 0, cpuMs: 0, callerMs: 0 }]));
  for (const [c, from, to] of blocks) {
    const jobs = [];
    for (let i = from; i < to; i++) jobs.push(jobFor(c, i));
    const before = agentCpuSnapshot(agent.pid);
    const { results, wallMs, cpuMs } = await driver.run(jobs, CALLERS);
    out[c.key].results.push(...results);
    out[c.key].wallMs += wallMs;
    out[c.key].cpuMs += cpuMs;
    out[c.key].callerMs += cpuMs;
    // The agent's CPU counts only for calls it served; in other blocks it idles.
    if (c.key === 'A') chargeAgent(out.A, agent, before, wallMs);
  }
  return out;
}

const ms = (rs) => rs.map((r) => r.ms);
const yes = (ok) => (ok ? 'yes' : 'NO');

function latencyRow(name, by) {
  const s = Object.fromEntries(Object.entries(by).map(([k, v]) => [k, summarize(ms(v.results))]));
  return {
    name,
    n: s.A.n,
    'agent median': s.A.median,
    'agent p95': s.A.p95,
    'ref median': s.R.median,
    'ref p95': s.R.p95,
    'standalone median': s.S.median,
    'standalone p95': s.S.p95,
    'agent/ref median': ratio(s.A.median, s.R.median),
    'agent/ref p95': ratio(s.A.p95, s.R.p95),
    'standalone/ref median': ratio(s.S.median, s.R.median),
  };
}

function cpuRow(name, by) {
  const per = (k) => by[k].cpuMs / by[k].results.length;
  const a = by.A.agent;
  const perA = (v) => v / by.A.results.length;
  return {
    name,
    'agent path CPU/call': per('A'),
    'ref CPU/call': per('R'),
    'standalone CPU/call': per('S'),
    'agent/ref': ratio(per('A'), per('R')),
    'standalone/ref': ratio(per('S'), per('R')),
    forwarder: perA(by.A.callerMs),
    'agent main': perA(a.main),
    'agent workers': perA(a.workers),
    'agent other': perA(a.other),
    'agent ended threads': perA(a.ended),
    'idle share (not counted)': perA(a.idle),
  };
}

function leasesIn(dataDir, network) {
  const d = join(dataDir, network);
  return existsSync(d) ? readdirSync(d).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
}

export async function run(ctx) {
  const N = ctx.quick ? QUICK : FULL;
  const started = Date.now();
  for (const f of [REF_BIN, join(CNI_PATH, 'host-local')]) if (!existsSync(f)) throw new Error(`${f} is missing (run scripts/setup.sh)`);
  const bins = binaries(ctx.repoRoot);
  const dir = tempDir('cnipath');
  const { socket, list: cs } = contenders(bins, dir);
  const [nodeNs] = addNetns(['node'], { lo: true });
  const pods = {};
  const all = [];
  for (const c of cs) {
    pods[c.key] = { warm: podOf(c, 'warm'), seq: [], conc: [] };
    for (let i = 0; i < N.seq; i++) pods[c.key].seq.push(podOf(c, `s${i}`));
    for (let i = 0; i < N.conc; i++) pods[c.key].conc.push(podOf(c, `c${i}`));
    all.push(pods[c.key].warm, ...pods[c.key].seq, ...pods[c.key].conc);
  }
  const podNs = addNetns(all.map((p) => p.label));
  all.forEach((p, i) => (p.ns = podNs[i]));
  ctx.log(`node netns ${nodeNs}, ${podNs.length} pod netns; agent ${bins.agent.join(' ')}, standalone ${bins.standalone}`);

  const workers = Number(process.env.TSFLANNEL_BENCH_CNI_WORKERS || 0) || undefined;
  // The agent's own --cni-workers default unless TSFLANNEL_BENCH_CNI_WORKERS is set.
  const agent = await startCniAgent(bins.agent, nodeNs, socket, workers);
  const driver = startNsDriver(nodeNs);
  try {
    for (const c of cs) {
      const { results: [a] } = await driver.run([job(c, 'ADD', pods[c.key].warm)]);
      requireOk('warm-up ADD', c, [a], true);
      const { results: [d] } = await driver.run([job(c, 'DEL', pods[c.key].warm)]);
      requireOk('warm-up DEL', c, [d], false);
    }
    const idle = await idleRate(agent.pid, N.idleMs);
    agent.idleRate = idle.rate;
    ctx.log(`agent idle: ${(idle.rate * 1000).toFixed(1)} ms CPU per second over ${idle.ms} ms (main ${idle.split.main.toFixed(1)}, workers ${idle.split.workers.toFixed(1)}, other ${idle.split.other.toFixed(1)} ms)`);

    ctx.log(`VERSION ×${N.version}, a fresh agent's sequential ADD/DEL ×${N.seq} per path`);
    const ver = await sequential(driver, cs, agent, (c) => versionJob(c), N.version);
    // A fresh agent's first calls run its handler while V8 is still
    // compiling it (the CPU per ADD falls by about 40 % over the first 40 or
    // so calls, then stays); a node's agent serves most of its pods warm.
    // Both are measured: the fresh agent's first calls, then, after more
    // untimed calls, the running agent's, which the targets are judged on.
    const freshPod = (c, i) => ({ ...pods[c.key].seq[i], id: `${pods[c.key].seq[i].id}-f` });
    const [freshAdd, freshDel] = await sequentialAddDel(driver, cs, agent, freshPod, N.seq, 'fresh sequential');
    const agentPath = cs.find((c) => c.key === 'A');
    for (let i = 0; i < N.warm; i++) {
      const pod = { ...pods.A.warm, id: `${pods.A.warm.id}-${i}` };
      const { results } = await driver.run([job(agentPath, 'ADD', pod), job(agentPath, 'DEL', pod)]);
      requireOk('warm-up ADD/DEL', agentPath, results.slice(0, 1), true);
      requireOk('warm-up ADD/DEL', agentPath, results.slice(1), false);
    }
    ctx.log(`${N.warm} more untimed ADD/DEL pairs on the agent path; sequential ADD/DEL ×${N.seq} per path`);
    const [seqAdd, seqDel] = await sequentialAddDel(driver, cs, agent, (c, i) => pods[c.key].seq[i], N.seq, 'sequential');

    ctx.log(`${CALLERS} concurrent callers, ADD/DEL ×${N.conc} per path`);
    const concAdd = await concurrent(driver, cs, agent, (c, i) => job(c, 'ADD', pods[c.key].conc[i]), N.conc);
    for (const c of cs) requireOk('concurrent ADD', c, concAdd[c.key].results, true);
    const tsfIps = ['A', 'S'].flatMap((k) => concAdd[k].results.map((r) => JSON.parse(r.stdout).ips[0].address));
    if (new Set(tsfIps).size !== tsfIps.length) throw new Error('an address was handed out twice across the agent and standalone paths');
    const concDel = await concurrent(driver, cs, agent, (c, i) => job(c, 'DEL', pods[c.key].conc[i]), N.conc);
    for (const c of cs) requireOk('concurrent DEL', c, concDel[c.key].results, false);

    const left = [...leasesIn(join(dir, 'tsf-ipam'), `${PREFIX}-tsf`), ...leasesIn(join(dir, 'ref-ipam'), `${PREFIX}-ref`)];
    if (left.length) throw new Error(`leases left after DEL: ${left}`);

    const latency = [
      latencyRow('VERSION, sequential', ver),
      latencyRow('ADD, sequential', seqAdd),
      latencyRow('DEL, sequential', seqDel),
      latencyRow(`ADD, ${CALLERS} concurrent callers`, concAdd),
      latencyRow(`DEL, ${CALLERS} concurrent callers`, concDel),
      latencyRow('ADD, sequential, a fresh agent\'s first calls', freshAdd),
      latencyRow('DEL, sequential, a fresh agent\'s first calls', freshDel),
    ];
    const cpu = [cpuRow('ADD, sequential', seqAdd), cpuRow('DEL, sequential', seqDel), cpuRow(`ADD, ${CALLERS} callers`, concAdd), cpuRow(`DEL, ${CALLERS} callers`, concDel), cpuRow('ADD, sequential, fresh agent', freshAdd), cpuRow('DEL, sequential, fresh agent', freshDel)];
    const tput = (x) => (x.results.length / x.wallMs) * 1000;
    const throughput = ['ADD', 'DEL'].map((op) => {
      const by = op === 'ADD' ? concAdd : concDel;
      return {
        name: `${op}, ${CALLERS} callers (ops/s)`,
        agent: tput(by.A),
        ref: tput(by.R),
        standalone: tput(by.S),
        'agent/ref': ratio(tput(by.A), tput(by.R)),
        'standalone/ref': ratio(tput(by.S), tput(by.R)),
      };
    });

    const targets = [];
    const target = (name, want, got, ok) => targets.push({ name, target: want, measured: got, met: yes(ok) });
    for (const [row, op] of [[latency[1], 'ADD'], [latency[2], 'DEL']]) {
      target(`${op} median agent/ref`, `≤ ${TARGETS.median}`, row['agent/ref median'], row['agent/ref median'] <= TARGETS.median);
      target(`${op} p95 agent/ref`, `≤ ${TARGETS.p95}`, row['agent/ref p95'], row['agent/ref p95'] <= TARGETS.p95);
      target(`${op} median standalone/ref`, `≤ ${TARGETS.standalone}`, row['standalone/ref median'], row['standalone/ref median'] <= TARGETS.standalone);
    }
    for (const row of cpu.slice(0, 2)) target(`CPU/call agent/ref, ${row.name}`, `≤ ${TARGETS.cpu}`, row['agent/ref'], row['agent/ref'] <= TARGETS.cpu);
    for (const row of throughput) target(`throughput agent/ref, ${row.name}`, `≥ ${TARGETS.throughput}`, row['agent/ref'], row['agent/ref'] >= TARGETS.throughput);

    return [
      {
        title: 'CNI paths: latency (ms, spawn to exit): agent-served vs bridge+host-local vs standalone fallback',
        rows: latency,
        notes: [
          `One node netns; bridges cni0 (tsflannel, 10.244.1.0/24, shared by the agent and standalone paths and their one host-local store) and refbr0 (reference, 10.244.2.0/24), both MTU 1450, hairpin, default gateway; both exist before timing (one untimed warm-up ADD/DEL per path).`,
          `agent = ${bins.forwarder} → ${bins.agent.join(' ')} --cni-only (${workers ?? 'its default number of, one per CPU from 2 to 4,'} CNI worker threads); standalone = the same forwarder with agentSocket naming an unserved path, exec'ing ${bins.standalone}.`,
          `Sequential: ${N.seq} ADDs then ${N.seq} DELs per path, rotating order (A R S, S R A), first right after the agent's start ("a fresh agent's first calls": only VERSIONs and one ADD/DEL before them), then after ${N.warm} more untimed ADD/DEL pairs on the agent path (the rows without that note, which the targets are judged on). Concurrent (after those): ${N.conc} per path with ${CALLERS} callers in A R S S R A blocks. Every call checked: exit 0, address in its subnet, the path it was meant to take; no address twice; no lease left.`,
        ],
      },
      {
        title: 'CNI paths: CPU per call (ms, user+system)',
        rows: cpu,
        notes: [
          'Called process tree from each called process\'s own rusage (the driver, bench/driver) over the batch; the agent path adds the growth of the agent\'s process CPU clock over the batch (every thread, those that ended too; both exact, bench/lib/cpu-clock.js) divided by its calls in that batch, less its idle rate times the batch\'s wall time (the idle share column; the rate is measured in a quiet window before the batches).',
          `The agent path's CPU split per call: forwarder (the called process), agent main (the event loop: nothing per call since the workers serve the socket themselves; metrics and the once-a-second sweep), agent workers (threads tsf-cni-*: accept, frame, the handler and the shim calls made on them), agent other (V8's compiler and GC helpers, libuv, the Go runtime), agent ended threads (threads that exited during the batch: mostly the shim's throw-away threads that enter the pod's netns, with the kernel work done there). Idle rate ${(agent.idleRate * 1000).toFixed(1)} ms per second.`,
        ],
      },
      { title: `CNI paths: throughput (${CALLERS} concurrent callers)`, rows: throughput },
      {
        title: 'CNI paths: targets of issue 13',
        rows: targets,
        notes: [`Whole module took ${((Date.now() - started) / 1000).toFixed(0)} s.`],
      },
    ];
  } finally {
    await driver.close();
    agent.stop();
    delNetns([nodeNs, ...podNs]);
  }
}
