// Property-based fuzzing of the real tsflannel binary on a node netns: every
// case is a valid invocation with one mutation (test/fuzz/gen.ts says which
// outcome each mutation must have and why). Per case: the exit status and
// code match the expectation, stdout is exactly one CNI error object (or the
// right success output), no stack trace reaches stdout, and the run is
// bounded in time. Per batch of concurrent cases: the node netns (links,
// addresses, routes), the pods and the whole temp tree are as before, no
// lease is left and nothing is written outside the data dir.
//
// npm test runs 1,000 cases with a fixed seed; `npm run fuzz` (scripts/fuzz.sh)
// takes FUZZ_SEED and FUZZ_CASES for longer runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SUPPORTED_VERSIONS } from '../../src/cni/versions.js';
import { addNetns, cleanupAll, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { spawnPlugin, type SpawnResult } from '../soak/soak.js';
import { caseArb, describeCase, materialize, type Command, type Fixture, type FuzzCase, type Target } from './gen.js';

const SEED = Number(process.env.FUZZ_SEED ?? 424242);
const CASES = Number(process.env.FUZZ_CASES ?? 1000);
const CONCURRENCY = Number(process.env.FUZZ_CONCURRENCY ?? 8);
const BATCH = Number(process.env.FUZZ_BATCH ?? 16);
/** Per-case bound on wall time; the machine may be shared, so it is generous. */
const CASE_MS = Number(process.env.FUZZ_CASE_MS ?? 5000);
const SHRINK = process.env.FUZZ_SHRINK === '1';
/** Collect every problem of the run instead of stopping at the first failing batch. */
const KEEP_GOING = process.env.FUZZ_KEEP_GOING === '1';
/** fast-check's replay path of a failing run (printed with the seed). */
const REPLAY_PATH = process.env.FUZZ_PATH;
const REPORT = process.env.FUZZ_REPORT;
/** Another build of the plugin to fuzz, e.g. the single executable dist/tsflannel. */
const BIN = process.env.FUZZ_BIN;

const LEASE_NAME = /^\d+\.\d+\.\d+\.\d+$/;
/** Anything that looks like a JS stack frame. */
const STACK = /\n\s+at\s|\bat .*\(.*:\d+:\d+\)|file:\/\/|\.js:\d+|\.ts:\d+/;
const ERROR_KEYS = new Set(['cniVersion', 'code', 'msg', 'details']);

interface Stats {
  cases: number;
  batches: number;
  byFamily: Record<string, number>;
  byCommand: Record<string, number>;
  /** observed outcome: "ok" or the CNI code */
  byOutcome: Record<string, number>;
  succeededAdds: number;
  /** cases or batches that broke an invariant */
  problems: number;
  /** cases re-run once because they exceeded the time bound */
  slowRetries: number;
  ms: number[];
  seconds: number;
}

describe.skipIf(requireOrSkip('fuzz', { root: isRoot }))('tsflannel fuzz', () => {
  let node = '';
  let livePod = '';
  const workerPods: string[] = [];
  let fx: Fixture;
  let liveNet = '';
  let workNet = '';
  let liveTarget: Target;
  let liveResult: Record<string, unknown> = {};
  let baseline: Snapshot;
  const stats: Stats = { cases: 0, batches: 0, byFamily: {}, byCommand: {}, byOutcome: {}, succeededAdds: 0, problems: 0, slowRetries: 0, ms: [], seconds: 0 };
  const liveRanges = [{ subnet: '10.244.1.0/24', rangeStart: '10.244.1.2', rangeEnd: '10.244.1.9', gateway: '10.244.1.1' }];
  const workRanges = [{ subnet: '10.244.1.0/24', rangeStart: '10.244.1.10', rangeEnd: '10.244.1.250', gateway: '10.244.1.1' }];

  const conf = (network: string, ranges: object[], extra: Record<string, unknown> = {}) =>
    JSON.stringify({ cniVersion: '1.1.0', name: network, type: 'tsflannel', subnetFile: fx.subnetFile, dataDir: join(fx.tmp, 'data'), ipam: { ranges: [ranges] }, ...extra });
  /** Runs the plugin with exactly `env` (plus PATH, which finds node). */
  const exec = (env: Record<string, string>, stdin: string | Buffer, timeoutMs = 60_000) =>
    spawnPlugin({ nodeNs: node, env, stdin, cwd: join(fx.tmp, 'cwd'), timeoutMs, bin: BIN });
  const run = (env: Record<string, string>, stdin: string | Buffer, timeoutMs = 60_000) => exec({ CNI_PATH: '/opt/cni/bin', ...env }, stdin, timeoutMs);
  const attach = (command: string, id: string, pod: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: nsPath(pod), CNI_IFNAME: 'eth0' });

  beforeAll(async () => {
    node = addNetns('fznode');
    livePod = addNetns('fzlive');
    for (let i = 0; i < CONCURRENCY; i++) workerPods.push(addNetns(`fzw${i}`));
    const tmp = mkdtempSync(join(tmpdir(), 'tsf-fuzz-'));
    fx = {
      tmp,
      subnetFile: join(tmp, 'subnet.env'),
      missingFile: join(tmp, 'missing.env'),
      regularFile: join(tmp, 'regular.txt'),
      directory: join(tmp, 'dir'),
      fifo: join(tmp, 'fifo'),
      emptySubnet: join(tmp, 'empty.env'),
      garbageSubnet: join(tmp, 'garbage.env'),
      badCidrSubnet: join(tmp, 'badcidr.env'),
      badMtuSubnet: join(tmp, 'badmtu.env'),
      nodeNetns: nsPath(node),
    };
    writeFileSync(fx.subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    writeFileSync(fx.regularFile, 'not a namespace\n');
    mkdirSync(fx.directory);
    mkdirSync(join(tmp, 'cwd'));
    execFileSync('mkfifo', [fx.fifo]);
    writeFileSync(fx.emptySubnet, '');
    writeFileSync(fx.garbageSubnet, '\u0000\u00ff{not: env}\n');
    writeFileSync(fx.badCidrSubnet, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/33\nFLANNEL_MTU=1450\n');
    writeFileSync(fx.badMtuSubnet, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=12\n');
    liveNet = `fzlive${process.pid}`;
    workNet = `fzwork${process.pid}`;

    // One live attachment that CHECK inspects and GC must keep, and a warm-up
    // ADD/DEL so the bridge, its gateway and both stores exist in the baseline.
    const live = await run(attach('ADD', 'fuzzlive', livePod), conf(liveNet, liveRanges));
    expect(live.code, live.stdout + live.stderr).toBe(0);
    liveResult = JSON.parse(live.stdout) as Record<string, unknown>;
    liveTarget = {
      network: liveNet,
      ranges: liveRanges,
      containerId: 'fuzzlive',
      netns: nsPath(livePod),
      ifname: 'eth0',
      prevResult: liveResult,
      validAttachments: [{ containerID: 'fuzzlive', ifname: 'eth0' }],
    };
    const warm = await run(attach('ADD', 'fuzzwarm', workerPods[0]!), conf(workNet, workRanges));
    expect(warm.code, warm.stdout + warm.stderr).toBe(0);
    expect((await run(attach('DEL', 'fuzzwarm', workerPods[0]!), conf(workNet, workRanges))).code).toBe(0);
    baseline = snapshot();
  }, 120_000);

  afterAll(async () => {
    if (REPORT) writeFileSync(REPORT, JSON.stringify(summary(), null, 2));
    if (fx) await run(attach('DEL', 'fuzzlive', livePod), conf(liveNet, liveRanges)).catch(() => undefined);
    cleanupAll();
    if (fx) rmSync(fx.tmp, { recursive: true, force: true });
  });

  // -------------------------------------------------------------------------
  // Node state

  interface Snapshot {
    node: unknown;
    pods: Record<string, unknown>;
    tree: Map<string, string>;
    outside: Record<string, boolean>;
  }

  interface IpLink {
    ifname: string;
    mtu: number;
    address?: string;
    master?: string;
    flags: string[];
    linkinfo?: { info_kind?: string };
    addr_info?: { family: string; local: string; prefixlen: number; scope: string }[];
  }

  function nodeState(ns: string): unknown {
    const links = ipJson<IpLink[]>(ns, ['-d', 'link', 'show'])
      .map((l) => ({ n: l.ifname, kind: l.linkinfo?.info_kind ?? '', mtu: l.mtu, mac: l.address ?? '', master: l.master ?? '', up: l.flags.includes('UP') }))
      .sort((a, b) => a.n.localeCompare(b.n));
    // IPv6 link-local addresses come from the kernel, not from the plugin.
    const addrs = ipJson<IpLink[]>(ns, ['addr', 'show'])
      .flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === 'inet' || a.scope !== 'link').map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`))
      .sort();
    const routes = ipJson<Record<string, unknown>[]>(ns, ['-4', 'route', 'show', 'table', 'all'])
      .map((r) => `${r.type ?? ''} ${r.dst} ${r.gateway ?? ''} ${r.dev ?? ''} ${r.table ?? ''} ${r.protocol ?? ''} ${r.scope ?? ''} ${r.prefsrc ?? ''}`)
      .sort();
    return { links, addrs, routes };
  }

  /** Every path under the temp root with its type, mode and content hash. */
  function tree(root: string): Map<string, string> {
    const out = new Map<string, string>();
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        const st = lstatSync(p);
        const rel = p.slice(root.length);
        if (st.isDirectory()) {
          out.set(rel, `dir ${(st.mode & 0o7777).toString(8)}`);
          walk(p);
        } else if (st.isFile()) {
          const hash = createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16);
          out.set(rel, `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${hash}`);
        } else out.set(rel, `other ${st.mode.toString(8)}`);
      }
    };
    walk(root);
    return out;
  }

  /** Default and hostile locations a confused plugin could write to. */
  function outside(): Record<string, boolean> {
    const places = ['/var/lib/cni/networks', '/run/flannel/subnet.env', '/tmp/tsfevil', '/tsfevil', '/etc/tsfevil'];
    for (const net of [liveNet, workNet]) places.push(`/var/lib/cni/networks/${net}`);
    return Object.fromEntries(places.map((p) => [p, existsSync(p)]));
  }

  function snapshot(): Snapshot {
    const pods: Record<string, unknown> = { live: nodeState(livePod) };
    for (const p of workerPods) pods[p] = nodeState(p);
    return { node: nodeState(node), pods, tree: tree(fx.tmp), outside: outside() };
  }

  /** Bookkeeping files a store keeps across successful ADD/DEL pairs; everything else must be unchanged. */
  const volatile = (rel: string) => /^\/data\/[^/]+\/(lock|last_reserved_ip\.\d+)$/.test(rel);

  function compare(before: Snapshot, after: Snapshot): string[] {
    const problems: string[] = [];
    if (JSON.stringify(after.node) !== JSON.stringify(before.node)) {
      problems.push(`node netns changed:\n  before ${JSON.stringify(before.node)}\n  after  ${JSON.stringify(after.node)}`);
    }
    for (const [p, s] of Object.entries(after.pods)) {
      if (JSON.stringify(s) !== JSON.stringify(before.pods[p])) problems.push(`pod netns ${p} changed: ${JSON.stringify(s)}`);
    }
    for (const path of new Set([...before.tree.keys(), ...after.tree.keys()])) {
      if (volatile(path)) continue;
      const a = before.tree.get(path);
      const b = after.tree.get(path);
      if (a !== b) problems.push(`temp tree: ${path}: ${a ?? 'absent'} -> ${b ?? 'absent'}`);
    }
    if (JSON.stringify(after.outside) !== JSON.stringify(before.outside)) {
      problems.push(`outside the temp dir: ${JSON.stringify(before.outside)} -> ${JSON.stringify(after.outside)}`);
    }
    return problems;
  }

  // -------------------------------------------------------------------------
  // One case

  let counter = 0;
  function targetFor(c: FuzzCase, worker: number): Target {
    if (c.command === 'CHECK' || c.command === 'GC') return liveTarget;
    return {
      network: workNet,
      ranges: workRanges,
      containerId: `fz${worker}n${++counter}`,
      netns: nsPath(workerPods[worker]!),
      ifname: 'eth0',
    };
  }

  function checkErrorJson(stdout: string, c: FuzzCase, confVersion: string | undefined): { code?: number; problems: string[] } {
    const problems: string[] = [];
    let body: unknown;
    try {
      body = JSON.parse(stdout);
    } catch {
      return { problems: [`stdout is not one JSON document: ${JSON.stringify(stdout.slice(0, 300))}`] };
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return { problems: [`stdout is not a JSON object: ${stdout.slice(0, 200)}`] };
    const e = body as Record<string, unknown>;
    const extra = Object.keys(e).filter((k) => !ERROR_KEYS.has(k));
    if (extra.length > 0) problems.push(`error object has extra keys ${extra.join(', ')}`);
    if (typeof e.code !== 'number' || !Number.isInteger(e.code)) problems.push(`error code ${JSON.stringify(e.code)} is not an integer`);
    if (typeof e.msg !== 'string' || e.msg === '') problems.push('error msg is missing');
    if (e.details !== undefined && typeof e.details !== 'string') problems.push('error details is not a string');
    // The error speaks the config's version when it could be read, else the plugin's own.
    const allowedVersions = new Set(['1.1.0', ...(confVersion ? [confVersion] : [])]);
    if (typeof e.cniVersion !== 'string' || !allowedVersions.has(e.cniVersion)) {
      problems.push(`error cniVersion ${JSON.stringify(e.cniVersion)}, expected one of ${[...allowedVersions].join(', ')}`);
    }
    if (typeof e.code === 'number' && !c.expect.codes.includes(e.code)) problems.push(`code ${e.code} (${String(e.msg).slice(0, 200)})`);
    return { code: typeof e.code === 'number' ? e.code : undefined, problems };
  }

  function checkSuccess(r: SpawnResult, c: FuzzCase, confVersion: string | undefined): string[] {
    if (c.command === 'VERSION') {
      const v = JSON.parse(r.stdout) as { cniVersion?: string; supportedVersions?: string[] };
      return JSON.stringify(v.supportedVersions) === JSON.stringify(SUPPORTED_VERSIONS) && typeof v.cniVersion === 'string'
        ? []
        : [`bad VERSION answer ${r.stdout.slice(0, 200)}`];
    }
    if (c.command !== 'ADD') return r.stdout === '' ? [] : [`${c.command} succeeded but printed ${JSON.stringify(r.stdout.slice(0, 200))}`];
    const res = JSON.parse(r.stdout) as { cniVersion?: string; ips?: { address: string }[] };
    const ip = res.ips?.[0]?.address ?? '';
    const last = Number(/^10\.244\.1\.(\d+)\/24$/.exec(ip)?.[1] ?? -1);
    const problems: string[] = [];
    if (res.cniVersion !== confVersion) problems.push(`ADD result cniVersion ${res.cniVersion}, config ${confVersion}`);
    if (last < 10 || last > 250) problems.push(`ADD gave ${ip}, outside the work range`);
    return problems;
  }

  interface Run {
    problems: string[];
    /** the only problem is the time bound */
    onlySlow: boolean;
    outcome: string;
    ms: number;
    addSucceeded: boolean;
  }

  async function runOnce(c: FuzzCase, worker: number): Promise<Run> {
    const t = targetFor(c, worker);
    const m = materialize(c, fx, t);
    const r = await exec(m.env, m.stdin, Math.max(CASE_MS * 4, 20_000));
    const problems: string[] = [];
    let outcome = r.signal ?? 'timeout';
    let slow = false;
    if (r.timedOut || r.signal) problems.push(`did not exit normally (${r.signal ?? 'timeout'}) after ${Math.round(r.ms)} ms`);
    if (r.ms > CASE_MS) {
      slow = true;
      problems.push(`took ${Math.round(r.ms)} ms (bound ${CASE_MS} ms)`);
    }
    if (STACK.test(r.stdout)) problems.push(`stack trace on stdout: ${r.stdout.slice(0, 300)}`);
    if (r.code === 0) {
      outcome = 'ok';
      if (!c.expect.okAllowed) problems.push(`succeeded (stdout ${JSON.stringify(r.stdout.slice(0, 160))})`);
      else problems.push(...checkSuccess(r, c, m.confVersion));
      if (c.command === 'ADD') {
        // Valid after all: the runtime DELs what it added, with the same config.
        const d = await exec({ ...m.env, CNI_COMMAND: 'DEL' }, m.stdin);
        if (d.code !== 0) problems.push(`DEL after the successful ADD failed: ${d.stdout.slice(0, 200)}`);
      }
    } else if (r.code !== null) {
      const { code, problems: p } = checkErrorJson(r.stdout, c, m.confVersion);
      outcome = String(code);
      problems.push(...p);
      if (r.code !== 1) problems.push(`exit status ${r.code}`);
    }
    const stderr = r.stderr.trim().split('\n').slice(-3).join(' | ').slice(0, 400);
    return {
      problems: problems.map((p) => `${describeCase(c)}\n    -> ${p}\n    stderr: ${stderr}`),
      onlySlow: slow && problems.length === 1,
      outcome,
      ms: r.ms,
      addSucceeded: c.command === 'ADD' && r.code === 0,
    };
  }

  /**
   * One case. The machine may be shared, so a run over the time bound whose
   * output is otherwise right is repeated once: a hang or a slow path is slow
   * again, a load spike is not.
   */
  async function runCase(c: FuzzCase, worker: number): Promise<string[]> {
    let run = await runOnce(c, worker);
    if (run.onlySlow) {
      stats.slowRetries++;
      run = await runOnce(c, worker);
    }
    stats.cases++;
    stats.ms.push(run.ms);
    stats.byFamily[c.family] = (stats.byFamily[c.family] ?? 0) + 1;
    stats.byCommand[c.command] = (stats.byCommand[c.command] ?? 0) + 1;
    stats.byOutcome[run.outcome] = (stats.byOutcome[run.outcome] ?? 0) + 1;
    if (run.addSucceeded) stats.succeededAdds++;
    return run.problems;
  }

  async function runBatch(cases: FuzzCase[]): Promise<string[]> {
    const problems: string[] = [];
    let next = 0;
    const worker = async (w: number) => {
      while (next < cases.length) {
        const c = cases[next++]!;
        const p = await runCase(c, w);
        if (p.length > 0) stats.problems++;
        problems.push(...p);
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, cases.length) }, (_, w) => worker(w)));
    stats.batches++;
    const after = snapshot();
    const changed = compare(baseline, after);
    if (changed.length > 0) {
      stats.problems++;
      problems.push(`after the batch [${cases.map((c) => `${c.command} ${c.family}`).join('; ')}]:\n  ${changed.join('\n  ')}`);
      baseline = after; // judge later batches on their own changes
    }
    return problems;
  }

  function summary() {
    const ms = [...stats.ms].sort((a, b) => a - b);
    const pct = (p: number) => Math.round(ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))] ?? 0);
    return {
      seed: SEED,
      cases: stats.cases,
      batches: stats.batches,
      concurrency: CONCURRENCY,
      seconds: stats.seconds,
      ms: { p50: pct(50), p95: pct(95), max: Math.round(ms.at(-1) ?? 0) },
      byCommand: stats.byCommand,
      byOutcome: stats.byOutcome,
      succeededAdds: stats.succeededAdds,
      problems: stats.problems,
      slowRetries: stats.slowRetries,
      byFamily: stats.byFamily,
    };
  }

  // -------------------------------------------------------------------------

  it(`${CASES} mutated invocations: right code, one error object, no trace, bounded time, node untouched`, async () => {
    const started = performance.now();
    const allProblems: string[] = [];
    const runs = Math.ceil(CASES / BATCH);
    await fc.assert(
      fc.asyncProperty(fc.array(caseArb, { minLength: BATCH, maxLength: BATCH }), async (cases) => {
        const problems = await runBatch(cases);
        allProblems.push(...problems);
        if (problems.length > 0 && !KEEP_GOING) throw new Error(`${problems.length} problem(s):\n${problems.join('\n')}`);
      }),
      { seed: SEED, numRuns: runs, endOnFailure: !SHRINK, ...(REPLAY_PATH ? { path: REPLAY_PATH } : {}) },
    );
    stats.seconds = Math.round((performance.now() - started) / 1000);
    console.log(`fuzz: ${JSON.stringify(summary())}`);
    if (allProblems.length > 0) throw new Error(`${allProblems.length} problem(s):\n${allProblems.join('\n')}`);
    expect(stats.cases).toBeGreaterThanOrEqual(CASES);
    // The generators reach every command and every outcome class.
    for (const cmd of ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'] as Command[]) expect(stats.byCommand[cmd] ?? 0).toBeGreaterThan(0);
    for (const code of ['ok', '1', '4', '6', '7']) expect(stats.byOutcome[code] ?? 0, `outcome ${code}`).toBeGreaterThan(0);
  }, Math.max(900_000, CASES * 600));

  it('a store lock held by another process gives ADD, DEL and STATUS exactly 11 (try again later) once lockTimeoutMs has passed, and leaves nothing', async () => {
    const before = snapshot();
    const lock = join(fx.tmp, 'data', workNet, 'lock');
    const holder = spawn('flock', [lock, '-c', 'echo locked; sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
      const cfg = conf(workNet, workRanges, { lockTimeoutMs: 300 });
      for (const command of ['ADD', 'DEL', 'STATUS']) {
        const env = command === 'STATUS' ? { CNI_COMMAND: 'STATUS' } : attach(command, 'fzlocked', workerPods[0]!);
        const r = await run(env, cfg);
        expect(r.code, `${command}: ${r.stdout}`).toBe(1);
        expect((JSON.parse(r.stdout) as { code: number }).code, `${command}: ${r.stdout}`).toBe(11);
        // It waited for the lock (the whole lockTimeoutMs) and then gave up, well inside the call bound.
        expect(r.ms, command).toBeGreaterThanOrEqual(300);
        expect(r.ms, command).toBeLessThan(CASE_MS);
      }
    } finally {
      holder.kill('SIGKILL');
    }
    expect(compare(before, snapshot())).toEqual([]);
  });

  it('STATUS answers 50 while the pool is exhausted and 0 once an address is free again', async () => {
    const net = `fzfull${process.pid}`;
    const one = [{ subnet: '10.244.1.0/24', rangeStart: '10.244.1.251', rangeEnd: '10.244.1.251', gateway: '10.244.1.1' }];
    const cfg = conf(net, one);
    expect((await run({ CNI_COMMAND: 'STATUS' }, cfg)).code).toBe(0);
    const add = await run(attach('ADD', 'fzfull', workerPods[0]!), cfg);
    expect(add.code, add.stdout).toBe(0);
    try {
      const full = await run({ CNI_COMMAND: 'STATUS' }, cfg);
      expect(full.code).toBe(1);
      expect(JSON.parse(full.stdout)).toMatchObject({ code: 50 });
      const second = await run(attach('ADD', 'fzfull2', workerPods[1]!), cfg);
      expect(JSON.parse(second.stdout)).toMatchObject({ code: 11 });
    } finally {
      expect((await run(attach('DEL', 'fzfull', workerPods[0]!), cfg)).code).toBe(0);
    }
    expect((await run({ CNI_COMMAND: 'STATUS' }, cfg)).code).toBe(0);
    expect(readdirSync(join(fx.tmp, 'data', net)).filter((f) => LEASE_NAME.test(f))).toEqual([]);
  });
});
