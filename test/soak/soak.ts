// A soak run of the real tsflannel binary, as a container runtime would drive
// it on a busy node: many ADD/CHECK/DEL in flight at once on short-lived
// containers, a share of plugin processes SIGKILLed at random moments, and a
// runtime that keeps its own ledger of live containers. While it runs, the
// IPAM store and the pods' eth0 addresses are sampled for duplicate IPs; at
// the end the runtime cleans up (DEL of everything it ever started, then GC
// with the containers it keeps) and the node must hold exactly what is kept.
//
// Also home of spawnPlugin, the process runner the fuzz and security suites
// share: full control over the environment (a variable can be absent),
// bytes on stdin, a deadline and a SIGKILL at a chosen moment.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as nl from '../../src/netlink/index.js';
import { addNetns, delNetns, nsPath } from '../helpers/netns.js';

export const PLUGIN_BIN = fileURLToPath(new URL('../../bin/tsflannel', import.meta.url));

// ---------------------------------------------------------------------------
// Running the plugin

export interface SpawnOptions {
  /** node netns to run in (ip netns exec); absent = this namespace */
  nodeNs?: string;
  /** the complete CNI environment; PATH is added from this process when absent */
  env: Record<string, string>;
  stdin: string | Buffer;
  cwd?: string;
  /** SIGKILL after this long and report timedOut (a hang guard, not a kill test) */
  timeoutMs?: number;
  /** SIGKILL after this long and report killed, if the process still runs */
  killAfterMs?: number;
  bin?: string;
  /** argv before the binary, e.g. ['strace', ...] (runs inside the node netns) */
  wrapper?: string[];
}

export interface SpawnResult {
  /** exit code, null when a signal ended the process */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** wall time from spawn to close */
  ms: number;
  /** we sent the SIGKILL of killAfterMs and it ended the process */
  killed: boolean;
  timedOut: boolean;
}

export function spawnPlugin(o: SpawnOptions): Promise<SpawnResult> {
  const env = { ...o.env };
  if (env.PATH === undefined) env.PATH = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin';
  const target = [...(o.wrapper ?? []), o.bin ?? PLUGIN_BIN];
  const [cmd, args] = o.nodeNs ? ['ip', ['netns', 'exec', o.nodeNs, ...target]] : [target[0]!, target.slice(1)];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    // `ip netns exec` execs the binary in place, so SIGKILL to this pid
    // kills the plugin itself.
    const child = spawn(cmd, args, { env, cwd: o.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let killSent = false;
    let timedOut = false;
    const timers: NodeJS.Timeout[] = [];
    if (o.killAfterMs !== undefined) {
      timers.push(
        setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) killSent = child.kill('SIGKILL');
        }, o.killAfterMs),
      );
    }
    if (o.timeoutMs !== undefined) {
      timers.push(
        setTimeout(() => {
          if (child.exitCode === null && child.signalCode === null) {
            timedOut = true;
            child.kill('SIGKILL');
          }
        }, o.timeoutMs),
      );
    }
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    // A plugin that refuses oversized stdin stops reading: EPIPE is expected.
    child.stdin.on('error', () => undefined);
    child.on('error', (e) => {
      for (const t of timers) clearTimeout(t);
      reject(e);
    });
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ms: performance.now() - started,
        killed: killSent && signal === 'SIGKILL' && !timedOut,
        timedOut,
      });
    });
    child.stdin.end(o.stdin);
  });
}

/** An attachment's lock file name, as src/ipam/store.ts derives it (recomputed here on purpose). */
export function expectedAttachmentLock(containerId: string, ifname: string): string {
  return `${createHash('sha256').update(`${containerId}\n${ifname}`).digest('hex').slice(0, 32)}.lock`;
}

/** The host end of a pod's veth, as src/plugin/names.ts derives it (recomputed here on purpose). */
export function expectedHostVeth(containerId: string, ifname: string): string {
  return `veth${createHash('sha256').update(`${containerId}\n${ifname}`).digest('hex').slice(0, 8)}`;
}

// ---------------------------------------------------------------------------
// The soak run

export interface SoakOptions {
  /** how long to keep operations going */
  seconds: number;
  /** operations kept in flight at every moment (default 20) */
  inFlight?: number;
  /** pod netns pool, one per container slot (default 3 x inFlight) */
  pods?: number;
  /** share of plugin processes SIGKILLed at a random moment (default 0.1) */
  killShare?: number;
  /** live containers the runtime keeps at the end and passes to GC (default 3) */
  keep?: number;
  /** share of operations on a live container that are CHECK rather than DEL (default 0.2) */
  checkShare?: number;
  /** sampling period (default 1000 ms) */
  sampleMs?: number;
  /**
   * share of ADDs run as a same-attachment race (default 0.1): half of them
   * 2-5 identical ADDs at once, half an ADD with a DEL of the same
   * attachment started a random moment later
   */
  raceShare?: number;
  /** share of ADDs preceded by one hostile invocation that must fail cleanly (default 0.1) */
  hostileShare?: number;
  /** node subnet: the gateway with its prefix (default 10.244.9.1/24) */
  subnet?: string;
  log?: (msg: string) => void;
}

export interface SoakReport {
  seconds: number;
  operations: { add: number; del: number; check: number; total: number };
  succeeded: number;
  /** processes that died of our SIGKILL */
  killed: number;
  /** non-zero exits that were not kills, with their CNI codes */
  failures: { op: string; id: string; code: number | null; msg: string }[];
  samples: number;
  maxLive: number;
  /** fewest ADD/DEL in flight seen whenever the scheduler topped up (the pool allowing) */
  minMutatingInFlight?: number;
  /** sampling points at which two live containers shared an IP (store, results or eth0) */
  duplicates: number;
  /** same-attachment races run: N identical ADDs at once, and an ADD racing a DEL */
  races: { sameIdAdds: number; addDel: number };
  /** hostile invocations mixed in (issue 11's classes), per class: calls, and calls answered wrongly */
  hostile: Record<string, { calls: number; wrong: number }>;
  /** slowest hostile invocation (they fail before any lock, so they stay fast under load) */
  hostileMaxMs: number;
  /** what the final clean-up left that it should not have */
  leaks: {
    /** leases and veths beyond the kept ones once every DEL is done, before GC (containerd never sends GC) */
    leasesAfterDel: string[];
    vethsAfterDel: string[];
    /** ... and after GC */
    leases: string[];
    veths: string[];
    podInterfaces: string[];
    files: string[];
    /** node links other than lo, cni0 and the kept veths (a bridge named by a `%` pattern, say) */
    nodeLinks: string[];
  };
  kept: { id: string; ip: string }[];
  /** DEL and GC of the final clean-up that failed */
  cleanupFailures: string[];
  gatewayOk: boolean;
  /** every invariant violation seen, in words */
  problems: string[];
  opMs: { p50: number; p95: number; max: number };
}

type SlotState = 'free' | 'live' | 'dirty';

interface Container {
  id: string;
  /**
   * Its pod netns while the runtime holds one for it. After a successful DEL
   * the runtime would destroy the netns; here it goes back to the pool, so
   * later DELs of this container carry no CNI_NETNS (like containerd's
   * second DEL) and never name a netns another container now uses.
   */
  ns: string;
  ip?: string;
  /** the address with its prefix, as ADD returned it */
  cidr?: string;
  result?: Record<string, unknown>;
  /** performance.now() when the runtime stopped counting it as live (DEL started) */
  liveUntil?: number;
  liveSince?: number;
}

/** The part of an ADD result the soak reads. */
type AddResult = { ips?: { address: string }[] };

interface Slot {
  ns: string;
  state: SlotState;
  busy: boolean;
  container?: Container;
}

const LEASE_NAME = /^\d+\.\d+\.\d+\.\d+$/;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function errorOf(stdout: string): { code: number | null; msg: string } {
  try {
    const e = JSON.parse(stdout) as { code?: number; msg?: string };
    return { code: typeof e.code === 'number' ? e.code : null, msg: String(e.msg ?? stdout).slice(0, 300) };
  } catch {
    return { code: null, msg: stdout.slice(0, 300) };
  }
}

export async function runSoak(opts: SoakOptions): Promise<SoakReport> {
  const inFlight = opts.inFlight ?? 20;
  const podCount = opts.pods ?? inFlight * 3;
  const killShare = opts.killShare ?? 0.1;
  const keep = opts.keep ?? 3;
  const checkShare = opts.checkShare ?? 0.2;
  const sampleMs = opts.sampleMs ?? 1000;
  const raceShare = opts.raceShare ?? 0.1;
  const hostileShare = opts.hostileShare ?? 0.1;
  const gatewayCidr = opts.subnet ?? '10.244.9.1/24';
  const log = opts.log ?? (() => undefined);

  const made: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'tsf-soak-'));
  const network = `soak${process.pid}${randomBytes(2).toString('hex')}`;
  const subnetFile = join(dir, 'subnet.env');
  const dataDir = join(dir, 'data');
  const storeDir = join(dataDir, network);
  writeFileSync(subnetFile, `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${gatewayCidr}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n`);
  const hostileCases = makeHostileCases(dir);
  const conf = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({ cniVersion: '1.1.0', name: network, type: 'tsflannel', subnetFile, dataDir, ...extra });

  const report: SoakReport = {
    seconds: opts.seconds,
    operations: { add: 0, del: 0, check: 0, total: 0 },
    succeeded: 0,
    killed: 0,
    failures: [],
    samples: 0,
    maxLive: 0,
    duplicates: 0,
    races: { sameIdAdds: 0, addDel: 0 },
    hostile: {},
    hostileMaxMs: 0,
    leaks: { leasesAfterDel: [], vethsAfterDel: [], leases: [], veths: [], podInterfaces: [], files: [], nodeLinks: [] },
    kept: [],
    cleanupFailures: [],
    gatewayOk: false,
    problems: [],
    opMs: { p50: 0, p95: 0, max: 0 },
  };
  const durations: number[] = [];

  try {
    const node = addNetns(`soak${randomBytes(2).toString('hex')}`);
    made.push(node);
    const slots: Slot[] = [];
    for (let i = 0; i < podCount; i++) {
      const ns = addNetns(`sk${i}-${randomBytes(2).toString('hex')}`);
      made.push(ns);
      slots.push({ ns, state: 'free', busy: false });
    }
    const started = new Map<string, Container>();
    const live = new Map<string, Container>();

    const call = (command: string, c: Container, extra: Partial<SpawnOptions> = {}, stdin = conf()) =>
      spawnPlugin({
        nodeNs: node,
        env: { CNI_COMMAND: command, CNI_CONTAINERID: c.id, CNI_NETNS: c.ns ? nsPath(c.ns) : '', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' },
        stdin,
        cwd: dir,
        timeoutMs: 120_000,
        ...extra,
      });

    // Kill moments spread over a typical operation, learned as we go.
    let typicalMs = 400;
    // Every k-th process is a kill target, so the share is exact; the moment is random.
    const killEvery = killShare > 0 ? Math.max(1, Math.round(1 / killShare)) : 0;
    let spawned = 0;
    const killPlan = (): number | undefined =>
      killEvery > 0 && ++spawned % killEvery === 0 ? Math.random() * typicalMs * 1.2 : undefined;

    type Op = 'ADD' | 'DEL' | 'CHECK';
    /** A successful ADD: the container is live with the address its result names. */
    const markLive = (slot: Slot, c: Container, result: AddResult): void => {
      c.result = result as Record<string, unknown>;
      c.cidr = result.ips?.[0]?.address;
      c.ip = c.cidr?.split('/')[0];
      c.liveSince = performance.now();
      c.liveUntil = undefined;
      live.set(c.id, c);
      slot.state = 'live';
      report.maxLive = Math.max(report.maxLive, live.size);
    };

    const nextOp = (slot: Slot): Op =>
      slot.state === 'free' ? 'ADD' : slot.state === 'live' && Math.random() < checkShare ? 'CHECK' : 'DEL';

    const raceEvery = raceShare > 0 ? Math.max(1, Math.round(1 / raceShare)) : 0;
    const hostileEvery = hostileShare > 0 ? Math.max(1, Math.round(1 / hostileShare)) : 0;
    let addsStarted = 0;
    let racesRun = 0;
    let hostileRun = 0;

    /** One hostile invocation on a free slot's netns: one error JSON with a fitting code, and nothing created. */
    const runHostile = async (slot: Slot): Promise<void> => {
      // In turn, so even a short run reaches several classes.
      const h = hostileCases[hostileRun++ % hostileCases.length]!;
      const tally = (report.hostile[h.cls] ??= { calls: 0, wrong: 0 });
      tally.calls++;
      const id = `soak-h-${randomBytes(6).toString('hex')}`;
      const r = await spawnPlugin({
        nodeNs: node,
        env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_NETNS: nsPath(slot.ns), CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin', ...h.env },
        stdin: conf(h.conf),
        cwd: dir,
        timeoutMs: 120_000,
      });
      report.hostileMaxMs = Math.max(report.hostileMaxMs, Math.round(r.ms));
      const e = errorOf(r.stdout);
      const wrong: string[] = [];
      if (r.code !== 1 || e.code === null || !h.codes.includes(e.code)) wrong.push(`answered exit ${r.code} ${r.stdout.slice(0, 200)}`);
      if (Buffer.byteLength(r.stdout) > 4096) wrong.push(`printed ${Buffer.byteLength(r.stdout)} bytes`);
      if (r.timedOut) wrong.push('did not finish within 120 s');
      if (podAddresses(slot.ns).length > 0 || nl.linkByName('eth0', { netns: nsPath(slot.ns) })) wrong.push('left an eth0 in the pod');
      if (wrong.length > 0) {
        tally.wrong++;
        report.problems.push(`hostile ADD (${h.what}, want code ${h.codes.join('/')}): ${wrong.join('; ')}`);
      }
    };

    /**
     * A same-attachment race in place of one ADD. Identical ADDs must give
     * identical results (or 11); after an ADD racing a DEL the container holds
     * at most the one lease its ADD reported, and the slot goes to DEL next.
     */
    const runRace = async (slot: Slot, c: Container): Promise<void> => {
      const withDel = racesRun++ % 2 === 1;
      const n = withDel ? 1 : 2 + Math.floor(Math.random() * 4);
      if (withDel) report.races.addDel++;
      else report.races.sameIdAdds++;
      const adds = Array.from({ length: n }, () => call('ADD', c));
      let del: Promise<SpawnResult> | undefined;
      if (withDel) {
        await new Promise((r) => setTimeout(r, Math.random() * typicalMs));
        del = call('DEL', c);
      }
      const rs = await Promise.all(adds);
      const d = del ? await del : undefined;
      report.operations.add += n;
      report.operations.total += n + (d ? 1 : 0);
      if (d) report.operations.del++;
      for (const r of [...rs, ...(d ? [d] : [])]) durations.push(r.ms);
      const oks = rs.filter((r) => r.code === 0);
      report.succeeded += oks.length + (d?.code === 0 ? 1 : 0);
      for (const r of rs) {
        if (r.code === 0) continue;
        const e = errorOf(r.stdout);
        if (e.code !== 11) {
          report.failures.push({ op: 'ADD (race)', id: c.id, ...e });
          report.problems.push(`racing ADD ${c.id} failed: ${e.code} ${e.msg}`);
        }
      }
      if (d && d.code !== 0) report.problems.push(`DEL racing an ADD of ${c.id} failed: ${d.stdout.slice(0, 300)}`);
      const results = new Set(oks.map((r) => r.stdout.trim()));
      if (results.size > 1) report.problems.push(`${oks.length} identical ADDs of ${c.id} gave ${results.size} different results`);
      const first = oks[0] ? (JSON.parse(oks[0].stdout) as AddResult) : undefined;
      if (!withDel && first) {
        markLive(slot, c, first);
        return;
      }
      if (withDel) {
        const held = safeReaddir(storeDir).filter((f) => LEASE_NAME.test(f) && readLease(join(storeDir, f)) === `${c.id}\r\neth0`);
        const ip = first?.ips?.[0]?.address.split('/')[0];
        if (held.length > 1 || (held.length === 1 && held[0] !== ip)) {
          report.problems.push(`after an ADD racing a DEL, ${c.id} holds leases [${held.join(', ')}] (its ADD reported ${ip ?? 'nothing'})`);
        }
      }
      slot.state = 'dirty';
    };

    const runOp = async (slot: Slot, op: Op): Promise<void> => {
      if (op === 'ADD') {
        addsStarted++;
        // Every k-th ADD, like the kills, so the shares are exact.
        if (hostileEvery > 0 && addsStarted % hostileEvery === 0) await runHostile(slot);
        const fresh: Container = { id: `soak-${randomBytes(6).toString('hex')}`, ns: slot.ns };
        slot.container = fresh;
        started.set(fresh.id, fresh);
        if (raceEvery > 0 && addsStarted % raceEvery === Math.floor(raceEvery / 2)) return runRace(slot, fresh);
      }
      const c = slot.container!;
      if (op === 'DEL' && live.has(c.id)) {
        // The runtime forgets the container the moment it starts tearing it down.
        c.liveUntil = performance.now();
        live.delete(c.id);
      }
      const killAfterMs = killPlan();
      const stdin = op === 'CHECK' ? conf({ prevResult: c.result }) : conf();
      const r = await call(op, c, killAfterMs === undefined ? {} : { killAfterMs }, stdin);
      report.operations[op === 'ADD' ? 'add' : op === 'DEL' ? 'del' : 'check']++;
      report.operations.total++;
      if (!r.killed) {
        durations.push(r.ms);
        typicalMs = typicalMs * 0.95 + r.ms * 0.05;
      }
      if (r.timedOut) report.problems.push(`${op} ${c.id} did not finish within 120 s`);
      if (r.killed) report.killed++;
      const ok = r.code === 0;
      if (ok) report.succeeded++;
      else if (!r.killed) {
        const e = errorOf(r.stdout);
        report.failures.push({ op, id: c.id, ...e });
        report.problems.push(`${op} ${c.id} failed without being killed: ${e.code} ${e.msg}`);
      }
      if (op === 'ADD') {
        if (ok) {
          markLive(slot, c, JSON.parse(r.stdout) as AddResult);
        } else {
          // A failed or interrupted ADD is followed by a DEL, as CRI runtimes do.
          slot.state = 'dirty';
        }
      } else if (op === 'DEL') {
        if (ok) {
          slot.state = 'free';
          slot.container = undefined;
          c.ns = '';
        } else slot.state = 'dirty';
      } else if (!ok && !r.killed) {
        slot.state = 'dirty';
        c.liveUntil = performance.now();
        live.delete(c.id);
      }
    };

    const sample = (): void => {
      const t0 = performance.now();
      const candidates = [...live.values()];
      const leases = new Map<string, string>();
      for (const name of safeReaddir(storeDir)) {
        if (!LEASE_NAME.test(name)) continue;
        try {
          leases.set(name, readFileSync(join(storeDir, name), 'utf8'));
        } catch {
          // released between readdir and read
        }
      }
      const eth0 = new Map<string, string[]>();
      for (const c of candidates) eth0.set(c.id, podAddresses(c.ns));
      // Only containers live for the whole sample count: a DEL that started
      // meanwhile may legitimately have removed its lease and interface.
      const steady = candidates.filter((c) => c.liveUntil === undefined && (c.liveSince ?? 0) < t0);
      report.samples++;
      const problems: string[] = [];
      const byIp = new Map<string, string[]>();
      const note = (ip: string, who: string) => byIp.set(ip, [...(byIp.get(ip) ?? []), who]);
      for (const c of steady) {
        const key = `${c.id}\r\neth0`;
        const held = [...leases].filter(([, v]) => v.trim() === key).map(([ip]) => ip);
        if (held.length !== 1 || held[0] !== c.ip) problems.push(`live ${c.id} (${c.ip}) holds leases [${held.join(', ')}]`);
        const addrs = eth0.get(c.id) ?? [];
        if (addrs.length !== 1 || addrs[0] !== c.cidr) problems.push(`live ${c.id} (${c.ip}) has eth0 addresses [${addrs.join(', ')}]`);
        if (c.ip) note(c.ip, `${c.id} result`);
        for (const a of addrs) if (a.split('/')[0] !== c.ip) note(a.split('/')[0]!, `${c.id} eth0`);
      }
      const dups = [...byIp].filter(([, who]) => new Set(who.map((w) => w.split(' ')[0])).size > 1);
      if (dups.length > 0) {
        report.duplicates++;
        problems.push(...dups.map(([ip, who]) => `IP ${ip} shared by ${who.join(', ')}`));
      }
      report.problems.push(...problems.map((p) => `sample ${report.samples}: ${p}`));
      log(`sample ${report.samples}: ${live.size} live, ${leases.size} leases, ${report.operations.total} ops, ${report.killed} killed`);
    };

    // Keep `inFlight` ADD/DEL going until the deadline; CHECKs run on top.
    const deadline = performance.now() + opts.seconds * 1000;
    const pending = new Set<Promise<void>>();
    let mutating = 0;
    const sampler = setInterval(() => {
      try {
        sample();
      } catch (err) {
        report.problems.push(`sampling failed: ${(err as Error).message}`);
      }
    }, sampleMs);
    try {
      while (performance.now() < deadline) {
        while (mutating < inFlight && pending.size < inFlight * 2) {
          const free = slots.filter((s) => !s.busy);
          if (free.length === 0) break;
          const slot = free[Math.floor(Math.random() * free.length)]!;
          const op = nextOp(slot);
          const counts = op !== 'CHECK';
          slot.busy = true;
          if (counts) mutating++;
          const p: Promise<void> = runOp(slot, op)
            .catch((err: Error) => {
              report.problems.push(`operation crashed the harness: ${err.message}`);
            })
            .finally(() => {
              slot.busy = false;
              if (counts) mutating--;
              pending.delete(p);
            });
          pending.add(p);
        }
        report.minMutatingInFlight = Math.min(report.minMutatingInFlight ?? mutating, mutating);
        await Promise.race(pending);
      }
      await Promise.all(pending);
    } finally {
      clearInterval(sampler);
    }
    sample();

    // The runtime's clean-up: keep a few live containers, DEL everything else
    // it ever started (DEL is idempotent, so already deleted ones too; those
    // whose netns still exists get it), then GC with the kept ones as the
    // valid set.
    const keptList = [...live.values()].slice(0, keep);
    const keptIds = new Set(keptList.map((c) => c.id));
    report.kept = keptList.map((c) => ({ id: c.id, ip: c.ip ?? '' }));
    const toDelete = [...started.values()].filter((c) => !keptIds.has(c.id));
    for (let i = 0; i < toDelete.length; i += inFlight) {
      const batch = toDelete.slice(i, i + inFlight);
      const dels = await Promise.all(batch.map((c) => call('DEL', c)));
      dels.forEach((r, j) => {
        if (r.code !== 0) report.cleanupFailures.push(`DEL ${batch[j]!.id}: ${r.code} ${r.stdout.slice(0, 300)}`);
      });
    }
    const keptKeys = new Map(keptList.map((c) => [c.ip ?? '', `${c.id}\r\neth0`]));
    const wantVeths = new Set(keptList.map((c) => expectedHostVeth(c.id, 'eth0')));
    const hostVeths = () => nl.linkList({ netns: nsPath(node) }).filter((l) => l.type === 'veth').map((l) => l.name);
    const strayLeases = () =>
      safeReaddir(storeDir)
        .filter((f) => LEASE_NAME.test(f))
        .map((f) => [f, readFileSync(join(storeDir, f), 'utf8')] as const)
        .filter(([f, content]) => keptKeys.get(f) !== content)
        .map(([f, content]) => `${f}=${JSON.stringify(content)}`);
    report.leaks.leasesAfterDel = strayLeases();
    report.leaks.vethsAfterDel = hostVeths().filter((v) => !wantVeths.has(v));

    const gc = await spawnPlugin({
      nodeNs: node,
      env: { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' },
      stdin: conf({ 'cni.dev/valid-attachments': keptList.map((c) => ({ containerID: c.id, ifname: 'eth0' })) }),
      cwd: dir,
      timeoutMs: 120_000,
    });
    if (gc.code !== 0) report.cleanupFailures.push(`GC: ${gc.code} ${gc.stdout.slice(0, 300)}`);

    // What must remain: the kept leases, their host veths, their pods' eth0.
    const files = safeReaddir(storeDir);
    const leaseFiles = files.filter((f) => LEASE_NAME.test(f));
    report.leaks.leases = strayLeases();
    for (const [ip, key] of keptKeys) {
      if (!leaseFiles.includes(ip)) report.problems.push(`kept ${key.split('\r\n')[0]} lost its lease ${ip}`);
    }
    report.leaks.files = files.filter((f) => !LEASE_NAME.test(f) && f !== 'lock' && f !== 'attachments' && !/^last_reserved_ip\.\d+$/.test(f));
    // Per-attachment lock files: after GC only the kept attachments may have one.
    const keptLocks = new Set(keptList.map((c) => expectedAttachmentLock(c.id, 'eth0')));
    report.leaks.files.push(...safeReaddir(join(storeDir, 'attachments')).filter((f) => !keptLocks.has(f)).map((f) => `attachments/${f}`));
    const veths = hostVeths();
    report.leaks.veths = veths.filter((v) => !wantVeths.has(v));
    report.leaks.nodeLinks = nl
      .linkList({ netns: nsPath(node) })
      .filter((l) => l.type !== 'veth' && l.name !== 'lo' && l.name !== 'cni0')
      .map((l) => `${l.name} (${l.type})`);
    for (const v of wantVeths) if (!veths.includes(v)) report.problems.push(`kept veth ${v} is gone`);
    for (const s of slots) {
      const kept = keptList.find((c) => c.ns === s.ns);
      const addrs = podAddresses(s.ns);
      const others = nl.linkList({ netns: nsPath(s.ns) }).filter((l) => l.name !== 'lo').map((l) => l.name);
      if (kept) {
        if (addrs.join() !== kept.cidr) report.problems.push(`kept ${kept.id} has eth0 addresses [${addrs.join(', ')}]`);
      } else if (others.length > 0) report.leaks.podInterfaces.push(`${s.ns}: ${others.join(', ')}`);
    }
    const bridgeAddrs = nl.addrList({ dev: 'cni0', family: 'inet', netns: nsPath(node) }).map((a) => a.cidr);
    report.gatewayOk = bridgeAddrs.includes(gatewayCidr);
    if (!report.gatewayOk) report.problems.push(`cni0 lost its gateway: [${bridgeAddrs.join(', ')}]`);
    const leakCount = Object.values(report.leaks).reduce((n, list) => n + list.length, 0);
    if (leakCount > 0) report.problems.push(`leaks: ${JSON.stringify(report.leaks)}`);
    report.problems.push(...report.cleanupFailures.map((f) => `clean-up: ${f}`));
  } finally {
    for (const ns of made.reverse()) delNetns(ns);
    spawnSync('chattr', ['-i', join(dir, 'immutable.d')]);
    rmSync(dir, { recursive: true, force: true });
  }
  const sorted = [...durations].sort((a, b) => a - b);
  report.opMs = { p50: Math.round(percentile(sorted, 50)), p95: Math.round(percentile(sorted, 95)), max: Math.round(sorted.at(-1) ?? 0) };
  return report;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** IPv4 addresses on eth0 in a pod netns; none when eth0 is absent. */
function podAddresses(ns: string): string[] {
  const netns = nsPath(ns);
  if (!nl.linkByName('eth0', { netns })) return [];
  try {
    return nl.addrList({ dev: 'eth0', family: 'inet', netns }).map((a) => a.cidr);
  } catch (err) {
    if (nl.isNotFound(err)) return [];
    throw err;
  }
}

function readLease(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

interface HostileCase {
  cls: string;
  what: string;
  env?: Record<string, string>;
  conf?: Record<string, unknown>;
  /** the fitting CNI codes */
  codes: number[];
}

/**
 * Invocations of issue 11's classes that must fail at once, before the
 * store's lock, whatever else is in flight: `%` in names, config paths that
 * are a FIFO, a file, /proc, a symlink loop or immutable, an oversize value.
 * The fixtures live in the soak's temp dir.
 */
function makeHostileCases(dir: string): HostileCase[] {
  const fifo = join(dir, 'fifo');
  spawnSync('mkfifo', [fifo]);
  const file = join(dir, 'regular');
  writeFileSync(file, 'x\n');
  const loop = join(dir, 'loop-a');
  symlinkSync(join(dir, 'loop-b'), loop);
  symlinkSync(loop, join(dir, 'loop-b'));
  let immutable = join(dir, 'immutable.d');
  mkdirSync(immutable);
  if (spawnSync('chattr', ['+i', immutable]).status !== 0) immutable = '/sys/kernel';
  // Ordered so that the first calls of a short run reach different classes.
  return [
    { cls: 'name.percent', what: 'bridge br%d', conf: { bridge: 'br%d' }, codes: [7] },
    { cls: 'path.fifo', what: 'subnetFile a FIFO', conf: { subnetFile: fifo }, codes: [7] },
    { cls: 'path.procSys', what: 'dataDir /proc', conf: { dataDir: '/proc' }, codes: [5, 7] },
    { cls: 'value.oversize', what: 'bridge of 300,000 characters', conf: { bridge: 'b'.repeat(300_000) }, codes: [7] },
    { cls: 'path.symlink', what: 'subnetFile a symlink loop', conf: { subnetFile: loop }, codes: [5, 7] },
    { cls: 'path.unwritable', what: 'dataDir immutable', conf: { dataDir: immutable }, codes: [5, 7] },
    { cls: 'path.directory', what: 'dataDir a regular file', conf: { dataDir: file }, codes: [5, 7] },
    { cls: 'name.percent', what: 'CNI_IFNAME eth%d', env: { CNI_IFNAME: 'eth%d' }, codes: [4] },
    { cls: 'path.fifo', what: 'dataDir a FIFO', conf: { dataDir: fifo }, codes: [5, 7] },
    { cls: 'path.procSys', what: 'dataDir /sys/kernel', conf: { dataDir: '/sys/kernel' }, codes: [5, 7] },
  ];
}
