// The CNI serving logic with fake connections and handlers, in one thread:
// calls for one
// attachment run one after another across workers while other pods run
// alongside, a slow call gets "try again" at its deadline (from the
// worker's timer, or from the event loop's sweep when the worker is stuck),
// a call that waited past its deadline never starts, counters and
// durations reach the event loop, and a serving thread that dies is
// replaced with its call answered. No root, no kernel.
import { afterEach, describe, expect, it } from 'vitest';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { callDeadlineMs, serveConnection, type CallConnection, type CallContext } from '../../../src/daemon/cni-call.js';
import { decodeResponse, FrameError } from '../../../src/daemon/cni-frame.js';
import { WorkerPool } from '../../../src/daemon/cni-pool.js';
import { CniServer } from '../../../src/daemon/cni-server.js';
import { CniShared } from '../../../src/daemon/cni-shared.js';
import type { CniResponse } from '../../../src/plugin/handler.js';

const dirs: string[] = [];
const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tsf-cnisrv-'));
  dirs.push(d);
  return d;
}

const ok = (text: string): CniResponse => ({ stdout: Buffer.from(text), exitCode: 0, stderr: '' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface FakeCall {
  /** the answer as the forwarder would decode it, once one was written */
  answered: Promise<CniResponse>;
  /** what serveConnection resolved with (the worker is free again) */
  done: Promise<void>;
  answers: number;
}

let nextFd = 1000;

/** Runs one request on worker `worker` through serveConnection with a fake connection. */
function call(ctx: Omit<CallContext, 'worker'>, worker: number, env: Record<string, string>, body?: Buffer | Error): FakeCall {
  let resolve: (r: CniResponse) => void = () => undefined;
  const answered = new Promise<CniResponse>((r) => (resolve = r));
  const fake: FakeCall = { answered, done: Promise.resolve(), answers: 0 };
  const conn: CallConnection = {
    readFrame() {
      if (body instanceof Error) throw body;
      return body ?? Buffer.from(JSON.stringify({ v: 1, env, stdin: '' }));
    },
    answer(bytes) {
      fake.answers += 1;
      resolve(decodeResponse(bytes.subarray(4)));
    },
    peerGone: () => false,
  };
  fake.done = serveConnection({ ...ctx, worker }, nextFd++, conn);
  return fake;
}

function context(run: CallContext['run'], callTimeoutMs = 50_000, workers = 4): Omit<CallContext, 'worker'> {
  return { shared: new CniShared(workers), run, logger: pino({ level: 'silent' }), frameTimeoutMs: 10_000, callTimeoutMs };
}

/** A context whose handler records each command it starts and holds every ADD for `addMs`. */
function holdingAdd(addMs: number, callTimeoutMs: number): { ctx: Omit<CallContext, 'worker'>; started: string[] } {
  const started: string[] = [];
  const ctx = context(async (env) => {
    started.push(env.CNI_COMMAND!);
    if (env.CNI_COMMAND === 'ADD') await sleep(addMs);
    return ok(env.CNI_COMMAND!);
  }, callTimeoutMs);
  return { ctx, started };
}

const codeOf = (r: CniResponse) => (JSON.parse(r.stdout.toString()) as { code: number; msg: string });

/**
 * A WorkerPool of one fake worker thread (module `script(startsFile)`, the
 * file's path as a JSON string, for the module to record starts in) over a
 * CniShared of `slots` slots; closed after the test.
 */
async function fakePool(script: (starts: string) => string, opts: { slots: number; spares?: number; spareIdleMs?: number }) {
  const dir = tempDir();
  const startsFile = join(dir, 'starts');
  writeFileSync(startsFile, '');
  const file = join(dir, 'worker.mjs');
  writeFileSync(file, script(JSON.stringify(startsFile)));
  const shared = new CniShared(opts.slots);
  const warnings: string[] = [];
  const pool = new WorkerPool({
    size: 1,
    ...(opts.spares === undefined ? {} : { spares: opts.spares }),
    ...(opts.spareIdleMs === undefined ? {} : { spareIdleMs: opts.spareIdleMs }),
    shared,
    start: { shared: shared.buffers, listenFd: -1, frameTimeoutMs: 1000, callTimeoutMs: 1000, log: { level: 'silent' as 'fatal', format: 'json' } },
    script: pathToFileURL(file),
    onWarning: (w) => warnings.push(w),
  });
  stops.push(() => pool.close());
  const worker = (i: number) => (pool as unknown as { slots: ({ worker: { postMessage(m: string): void } } | undefined)[] }).slots[i]!.worker;
  const starts = () => readFileSync(startsFile, 'utf8').trim().split('\n');
  return { dir, pool, shared, warnings, worker, starts };
}

/**
 * A real CNI server with one worker (the serving thread as built by
 * scripts/setup.sh) and its spares (ending after `spareIdleMs` idle when
 * given); a VERSION call to it.
 */
async function oneWorkerServer(opts: { frameTimeoutMs?: number; spareIdleMs?: number } = {}): Promise<{ server: CniServer; path: string; version: () => Promise<CniResponse> }> {
  const path = join(tempDir(), 'cni.sock');
  const server = new CniServer({
    path,
    workers: 1,
    logger: pino({ level: 'silent' }),
    log: { level: 'fatal', format: 'json' },
    frameTimeoutMs: opts.frameTimeoutMs ?? 8000,
    ...(opts.spareIdleMs === undefined ? {} : { spareIdleMs: opts.spareIdleMs }),
    workerScript: new URL('../../../build/daemon/cni-worker.js', import.meta.url),
  });
  await server.start();
  stops.push(() => server.stop());
  await server.ready();
  const version = () =>
    new Promise<CniResponse>((resolve, reject) => {
      const c = createConnection(path);
      const chunks: Buffer[] = [];
      c.on('data', (d: Buffer) => chunks.push(d));
      c.on('error', reject);
      c.on('end', () => resolve(decodeResponse(Buffer.concat(chunks).subarray(4))));
      const body = Buffer.from(JSON.stringify({ v: 1, env: { CNI_COMMAND: 'VERSION' }, stdin: Buffer.from('{"cniVersion":"1.0.0"}').toString('base64') }));
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length);
      c.end(Buffer.concat([head, body]));
    });
  return { server, path, version };
}

describe('CNI threads\' shared state', () => {
  it('lets exactly one party claim a call: the worker or the deadline sweep', () => {
    const s = new CniShared(2);
    const a = s.accepted(0, 11);
    const b = s.accepted(1, 12);
    s.beginCall(0, a, Date.now() - 1, 500);
    s.beginCall(1, b, Date.now() + 60_000, 50_000);
    expect(s.claimExpired(Date.now())).toEqual([[0, 11, 500]]);
    expect(s.claimCall(0, a)).toBe(false); // the worker finishing later must not touch fd 11
    expect(s.claimExpired(Date.now())).toEqual([]);
    expect(s.claimCall(1, b)).toBe(true);
    expect(s.claimCurrent(1)).toBeUndefined();
  });

  it('lets the deadline sweep claim only the expired call it saw, never the next call its worker took on the same descriptor number', async () => {
    // The worker thread (the build's shared state) answers calls as fast as
    // it can, each time on descriptor 7, as a connection closed and the next
    // accepted get the same lowest free number: one past its deadline, the
    // next far from it. This thread sweeps meanwhile.
    const s = new CniShared(1);
    const flag = new Int32Array(new SharedArrayBuffer(8));
    const shared = new URL('../../../build/daemon/cni-shared.js', import.meta.url).href;
    const worker = new Worker(
      `
      const { workerData } = require('node:worker_threads');
      import(${JSON.stringify(shared)}).then(({ CniShared }) => {
        const s = new CniShared(workerData.buffers);
        const flag = new Int32Array(workerData.flag);
        let stolen = 0;
        while (Atomics.load(flag, 0) === 0) {
          const late = s.accepted(0, 7);
          s.beginCall(0, late, 0, 1); // past its deadline: the sweep may take it
          s.claimCall(0, late); // answered by its worker, unless the sweep took it
          const next = s.accepted(0, 7);
          s.beginCall(0, next, Infinity, 2); // the next call on descriptor 7, never expired
          if (!s.claimCall(0, next)) stolen++;
        }
        Atomics.store(flag, 1, stolen);
      });`,
      { eval: true, workerData: { buffers: s.buffers, flag: flag.buffer } },
    );
    const exited = new Promise((r) => worker.once('exit', r));
    await sleep(200);
    let claims = 0;
    const limits = new Set<number>();
    for (const until = Date.now() + 800; Date.now() < until; ) {
      for (const [, fd, limit] of s.claimExpired(Date.now())) {
        claims++;
        limits.add(limit);
        expect(fd).toBe(7);
      }
    }
    Atomics.store(flag, 0, 1);
    await exited;
    expect(claims).toBeGreaterThan(0);
    expect({ stolen: Atomics.load(flag, 1), limits: [...limits] }).toEqual({ stolen: 0, limits: [1] });
  });

  it('counts calls per command and outcome and queues their durations for the event loop', () => {
    const s = new CniShared(2);
    s.record(0, 'ADD', true, 0.01);
    s.record(1, 'DEL', false, 0.02);
    s.record(1, 'invalid', false, 0.03);
    s.add('refused');
    const seen: string[] = [];
    s.drain((c, okay, sec) => seen.push(`${c} ${okay} ${sec}`));
    expect(seen).toEqual(['ADD true 0.01', 'DEL false 0.02', 'invalid false 0.03']);
    s.drain(() => seen.push('again'));
    expect(seen).toHaveLength(3);
    const m = s.metrics();
    expect(Object.fromEntries(m.calls)).toEqual({ ADD: { ok: 1, error: 0 }, DEL: { ok: 0, error: 1 }, invalid: { ok: 0, error: 1 } });
    expect(m.refused).toBe(1);
  });

  it('does not let a call into its attachment once its deadline has passed, even when the holder left while the waiter\'s thread was busy', async () => {
    const s = new CniShared(2);
    expect(await s.enter(0, 'pod\neth0', Date.now() + 1000)).toBe(true);
    const deadline = Date.now() + 50;
    const waiting = s.enter(1, 'pod\neth0', deadline);
    // The waiter's thread is busy past its deadline (a synchronous call, a
    // loaded machine); the holder leaves before the waiter's timeout is seen.
    while (Date.now() < deadline + 30);
    s.leave(0);
    expect(await waiting).toBe(false);
    // and the attachment stays free for the next call
    expect(await s.enter(0, 'pod\neth0', Date.now() + 100)).toBe(true);
  });

  it('marks a worker stalled while its call waits for its attachment\'s earlier call, and tells its thread once', async () => {
    const s = new CniShared(2);
    const told: number[] = [];
    s.onStall = (i) => told.push(i);
    expect(await s.enter(0, 'pod\neth0', Date.now() + 1000)).toBe(true);
    expect(s.isStalled(0)).toBe(false); // a free attachment: no mark, no message
    const waiting = s.enter(1, 'pod\neth0', Date.now() + 2000);
    await sleep(50);
    expect(s.isStalled(1)).toBe(true);
    s.leave(0);
    expect(await waiting).toBe(true);
    expect(s.isStalled(1)).toBe(false);
    expect(told).toEqual([1]);
  });
});

describe('CNI call serving', () => {
  it('runs calls for one attachment one after another across workers, and other pods alongside', async () => {
    const log: string[] = [];
    const ctx = context(async (env) => {
      const tag = `${env.CNI_CONTAINERID}/${env.CNI_IFNAME}`;
      log.push(`start ${tag}`);
      await sleep(150);
      log.push(`end ${tag}`);
      return ok(tag);
    });
    const env = (id: string, ifname = 'eth0') => ({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_IFNAME: ifname });
    const calls = [call(ctx, 0, env('a')), call(ctx, 1, env('a')), call(ctx, 2, env('b')), call(ctx, 3, env('a', 'net1'))];
    const answers = await Promise.all(calls.map((c) => c.answered));
    expect(answers.map((a) => a.stdout.toString())).toEqual(['a/eth0', 'a/eth0', 'b/eth0', 'a/net1']);
    const firstEnd = log.indexOf('end a/eth0');
    expect(log.filter((l) => l === 'start a/eth0')).toHaveLength(2);
    expect(log.lastIndexOf('start a/eth0')).toBeGreaterThan(firstEnd);
    expect(log.indexOf('start b/eth0')).toBeLessThan(firstEnd);
    expect(log.indexOf('start a/net1')).toBeLessThan(firstEnd);
    await Promise.all(calls.map((c) => c.done));
    expect(calls.map((c) => c.answers)).toEqual([1, 1, 1, 1]);
    expect(ctx.shared.metrics().calls.get('ADD')).toEqual({ ok: 4, error: 0 });
    expect(ctx.shared.metrics().inFlight).toBe(0);
  });

  it('answers "try again" (code 11) at the call deadline once, and serves the next call', async () => {
    const ctx = context(async (env) => {
      if (env.CNI_CONTAINERID === 'slow') await sleep(1500);
      return ok('done');
    }, 300);
    const t0 = Date.now();
    const slow = call(ctx, 0, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'slow', CNI_IFNAME: 'eth0' });
    const answer = await slow.answered;
    expect(Date.now() - t0).toBeLessThan(1200);
    expect(answer.exitCode).toBe(1);
    expect(codeOf(answer)).toMatchObject({ code: 11, msg: expect.stringMatching(/300 ms/) });
    const next = call(ctx, 1, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'fast', CNI_IFNAME: 'eth0' });
    expect((await next.answered).stdout.toString()).toBe('done');
    await slow.done; // the handler ended later: its result reached nobody, and nothing was written twice
    expect(slow.answers).toBe(1);
    expect(ctx.shared.metrics().timeouts).toBe(1);
    expect(ctx.shared.metrics().calls.get('ADD')).toEqual({ ok: 1, error: 1 });
  });

  it('never starts a call that waited past its deadline behind its attachment\'s earlier call (the runtime has retried it elsewhere by then)', async () => {
    const { ctx, started } = holdingAdd(1500, 400);
    const env = (command: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'stuck', CNI_IFNAME: 'eth0' });
    const add = call(ctx, 0, env('ADD'));
    await sleep(100);
    const del = call(ctx, 1, env('DEL')); // on another worker, behind the ADD
    expect(codeOf(await del.answered)).toMatchObject({ code: 11 });
    expect(codeOf(await add.answered)).toMatchObject({ code: 11 });
    await add.done;
    await del.done;
    await sleep(100);
    expect(started).toEqual(['ADD']);
  });

  it('takes the forwarder\'s shorter TSFLANNEL_FORWARD_TIMEOUT_MS as the deadline (1 s less), so a queued call it gave up on never starts', async () => {
    const { ctx, started } = holdingAdd(4000, 30_000);
    const env = (command: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'fwd', CNI_IFNAME: 'eth0', TSFLANNEL_FORWARD_TIMEOUT_MS: '3000' });
    const add = call(ctx, 0, env('ADD'));
    await sleep(100);
    const t0 = Date.now();
    const del = call(ctx, 1, env('DEL'));
    const delAnswer = await del.answered;
    expect(codeOf(delAnswer)).toMatchObject({ code: 11, msg: expect.stringMatching(/2000 ms/) });
    expect(Date.now() - t0).toBeLessThan(2900); // before this forwarder (3000 ms, started ~100 ms earlier) gave up
    expect(codeOf(await add.answered)).toMatchObject({ code: 11 });
    await add.done;
    await sleep(200);
    expect(started).toEqual(['ADD']);
  });

  it('takes the deadline the forwarder sends with its frame, less 1 s: a call that waited in the listen queue is answered before its forwarder gives up, or never starts', async () => {
    const started: string[] = [];
    const ctx = context(async (env) => {
      started.push(env.CNI_CONTAINERID!);
      await sleep(2000);
      return ok('done');
    }, 30_000);
    const frame = (id: string, deadline: unknown) =>
      Buffer.from(JSON.stringify({ v: 1, env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_IFNAME: 'eth0' }, stdin: '', deadline }));
    const t0 = Date.now();
    // its forwarder gives up 1.5 s from now (it connected long ago)
    const late = call(ctx, 0, {}, frame('soon', t0 + 1500));
    expect(codeOf(await late.answered)).toMatchObject({ code: 11 });
    expect(Date.now() - t0).toBeLessThan(1300);
    // its forwarder gives up within the margin: the call never starts
    const gone = call(ctx, 1, {}, frame('gone', Date.now() + 500));
    expect(codeOf(await gone.answered)).toMatchObject({ code: 11 });
    await Promise.all([late.done, gone.done]);
    expect(started).toEqual(['soon']);
    const bad = call(ctx, 2, {}, frame('bad', 'tomorrow'));
    expect(codeOf(await bad.answered)).toMatchObject({ code: 4, msg: expect.stringContaining('"deadline"') });
  });

  it('answers a bad or late frame with CNI error 4 and counts it', async () => {
    const ctx = context(async () => ok('never'));
    const garbage = call(ctx, 0, {}, Buffer.from('\u0000not json'));
    expect(codeOf(await garbage.answered)).toMatchObject({ code: 4, msg: expect.stringContaining('not JSON') });
    const late = call(ctx, 0, {}, new FrameError('late'));
    expect(codeOf(await late.answered)).toMatchObject({ code: 4, msg: 'tsflannel agent: the request frame did not arrive in time' });
    expect(ctx.shared.metrics().badFrames).toBe(2);
  });
});

describe('call deadline from the forwarder\'s TSFLANNEL_FORWARD_TIMEOUT_MS', () => {
  it('is the agent\'s own unless the forwarder\'s valid positive value, less 1 s (half below 2 s), is shorter', () => {
    const d = (value: string | undefined, agent = 50_000) => callDeadlineMs(value === undefined ? {} : { TSFLANNEL_FORWARD_TIMEOUT_MS: value }, agent);
    expect(d(undefined)).toBe(50_000);
    expect(d('55000')).toBe(50_000); // the documented default: the agent's 50 s stays
    expect(d('20000')).toBe(19_000);
    expect(d('+20000')).toBe(19_000); // the forwarder parses as strconv.Atoi does
    expect(d('1500')).toBe(750);
    expect(d('1')).toBe(1);
    expect(d('120000', 5_000)).toBe(5_000);
    // what the forwarder ignores (its 55 s default then applies) changes nothing
    for (const bad of ['', '0', '-5000', '5s', '1e3', ' 3000', '3000.5', '99999999999999999999999']) expect(d(bad)).toBe(50_000);
  });
});

describe('CNI thread pool', () => {
  it('answers and closes a connection whose worker died while reading its request frame, and counts no call in flight after', async () => {
    const { server, path } = await oneWorkerServer({ frameTimeoutMs: 1500 });
    // A caller that connects and has not sent its frame yet.
    const client = createConnection(path);
    const chunks: Buffer[] = [];
    client.on('data', (d: Buffer) => chunks.push(d));
    const ended = new Promise<string>((resolve) => {
      client.on('end', () => resolve('end'));
      client.on('error', (e) => resolve(`error ${e.message}`));
      setTimeout(() => resolve('no answer'), 6000);
    });
    for (let i = 0; i < 50 && server.metrics.inFlight === 0; i++) await sleep(20);
    expect(server.metrics.inFlight).toBe(1);
    // The thread dies while it waits for the frame (it ends when its read returns).
    const pool = (server as unknown as { pool: { slots: { worker: { terminate(): Promise<number> } }[] } }).pool;
    await pool.slots[0]!.worker.terminate();
    expect(await ended).toBe('end');
    const answer = decodeResponse(Buffer.concat(chunks).subarray(4));
    expect(codeOf(answer)).toMatchObject({ code: 999, msg: expect.stringMatching(/CNI worker exited/) });
    expect(server.metrics.inFlight).toBe(0);
    client.destroy();
  }, 20_000);

  it('keeps its process alive while a worker that died at once waits to be replaced (the socket is no event-loop handle)', async () => {
    const dir = tempDir();
    const script = join(dir, 'worker.mjs');
    writeFileSync(script, 'process.exit(3);\n'); // dies at start: replaced only after a pause
    const server = new URL('../../../build/daemon/cni-server.js', import.meta.url).href;
    // A process that only serves CNI calls, as tsflanneld --cni-only without /healthz.
    const program = `
      const { CniServer } = await import(${JSON.stringify(server)});
      const pino = (await import('pino')).default;
      const s = new CniServer({ path: ${JSON.stringify(join(dir, 'cni.sock'))}, workers: 1, logger: pino({ level: 'silent' }),
        log: { level: 'fatal', format: 'json' }, workerScript: new URL(${JSON.stringify(pathToFileURL(script).href)}) });
      await s.start();
      process.stdout.write('started\\n');
      process.on('SIGTERM', () => s.stop().then(() => process.exit(0)));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', program], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    stops.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    });
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    const early = await Promise.race([exited.then((code) => `exited with code ${code}`), sleep(3000).then(() => 'alive')]);
    expect(early).toBe('alive');
  }, 20_000);

  it('replaces a worker that dies, answers the call it had in hand and frees its attachment', async () => {
    // A worker 0 that dies when told; every start is recorded.
    const { dir, pool, shared, warnings, worker, starts } = await fakePool(
      (startsFile) => `
      import { appendFileSync } from 'node:fs';
      import { parentPort, workerData } from 'node:worker_threads';
      appendFileSync(${startsFile}, 'worker' + workerData.index + '\\n');
      parentPort.postMessage({ ready: true });
      parentPort.on('message', (m) => { if (m === 'die') process.exit(3); });
    `,
      { slots: 2 },
    );
    await pool.ready();
    // Worker 0 holds an attachment and serves a call on this descriptor (a file stands in for the connection).
    expect(await shared.enter(0, 'pod\neth0', Date.now() + 1000)).toBe(true);
    const answerFile = join(dir, 'answer');
    const fd = openSync(answerFile, 'w');
    shared.beginCall(0, shared.accepted(0, fd), Date.now() + 60_000, 50_000);
    worker(0).postMessage('die');
    for (let i = 0; i < 50 && starts().filter((l) => l === 'worker0').length < 2; i++) await sleep(100);
    expect(starts().filter((l) => l === 'worker0')).toHaveLength(2);
    expect(warnings.join()).toMatch(/CNI worker died .*exited with code 3.*starting another/);
    expect(await shared.enter(1, 'pod\neth0', Date.now() + 100)).toBe(true); // the dead worker's attachment is free
    const bytes = readFileSync(answerFile);
    const answer = decodeResponse(bytes.subarray(4));
    expect(codeOf(answer)).toMatchObject({ code: 999, msg: 'tsflannel agent: CNI worker exited with code 3' });
    expect(shared.metrics().inFlight).toBe(0);

    // A call answered "try again" at its deadline by the event loop's sweep
    // while its worker was stuck; then that worker dies: nothing to answer,
    // and the call no longer counts as in flight.
    const fd2 = openSync(join(dir, 'answer2'), 'w');
    shared.beginCall(0, shared.accepted(0, fd2), Date.now() - 1, 500);
    expect(shared.claimExpired(Date.now())).toEqual([[0, fd2, 500]]);
    closeSync(fd2); // as the sweep does once it has answered
    worker(0).postMessage('die');
    for (let i = 0; i < 50 && starts().filter((l) => l === 'worker0').length < 3; i++) await sleep(100);
    expect(starts().filter((l) => l === 'worker0')).toHaveLength(3);
    expect(readFileSync(join(dir, 'answer2'))).toHaveLength(0); // the sweep's to answer, not the pool's
    expect(shared.metrics().inFlight).toBe(0);
  });

  it('starts a spare thread only while every thread is busy and fewer spares run than threads are stalled, up to its bound; a spare that ends by itself (code 0) frees its slot, with no warning and no replacement', async () => {
    // Records its start; says it stalled when told; a spare ends (code 0) after its idle time.
    const { pool, shared, warnings, worker, starts: started } = await fakePool(
      (startsFile) => `
      import { appendFileSync } from 'node:fs';
      import { parentPort, workerData } from 'node:worker_threads';
      appendFileSync(${startsFile}, workerData.index + (workerData.idleExitMs === undefined ? '' : ' spare ' + workerData.idleExitMs) + '\\n');
      parentPort.postMessage({ ready: true });
      parentPort.on('message', (m) => {
        if (m === 'stalled') parentPort.postMessage({ stalled: true });
        if (m === 'retire') process.exit(0);
      });
    `,
      { slots: 3, spares: 2, spareIdleMs: 12_345 },
    );
    await pool.ready();
    const m = shared.metrics();
    expect({ threads: m.threads, spares: m.sparesStarted }).toEqual({ threads: 1, spares: 0 });

    // Busy but not stalled (a call at work): no spare, whatever it says.
    shared.accepted(0, 100);
    worker(0).postMessage('stalled');
    await sleep(300);
    expect(started()).toEqual(['0']);
    // Stalled and no thread free: a spare, told its idle time.
    shared.stall(0);
    worker(0).postMessage('stalled');
    for (let i = 0; i < 50 && started().length < 2; i++) await sleep(50);
    expect(started()).toEqual(['0', '1 spare 12345']);
    await sleep(300);
    expect(started()).toHaveLength(2); // the spare is free: nothing more
    // The spare becomes busy with work while worker 0 is still stalled: no
    // second spare (threads at work: as many as --cni-workers already).
    shared.accepted(1, 101);
    await sleep(300);
    expect(started()).toHaveLength(2);
    // Its call stalls too: the pool's check (it goes on while a thread is
    // stalled, without a message) starts the second spare.
    shared.stall(1);
    for (let i = 0; i < 50 && started().length < 3; i++) await sleep(50);
    expect(started()).toEqual(['0', '1 spare 12345', '2 spare 12345']);
    shared.accepted(2, 102);
    shared.stall(2);
    await sleep(300);
    expect(started()).toHaveLength(3); // at its bound
    expect({ threads: m.threads, spares: m.sparesStarted }).toEqual({ threads: 3, spares: 2 });

    // A spare that retires (code 0) frees its slot: no warning, no replacement while nothing stalls.
    for (const i of [0, 1, 2]) shared.unstall(i);
    shared.served(1);
    shared.served(2);
    worker(1).postMessage('retire');
    worker(2).postMessage('retire');
    for (let i = 0; i < 50 && m.threads > 1; i++) await sleep(50);
    expect(m.threads).toBe(1);
    await sleep(300);
    expect(started()).toHaveLength(3);
    expect(warnings).toEqual([]);
  });

  it('with its only worker reading a silent caller\'s frame, serves another call on a spare thread, which ends by itself once idle', async () => {
    const { server, path, version } = await oneWorkerServer({ spareIdleMs: 1500 });
    const m = server.metrics;
    expect(m.threads).toBe(1);
    const silent = createConnection(path);
    silent.on('error', () => undefined);
    for (let i = 0; i < 50 && m.inFlight === 0; i++) await sleep(20);
    const t0 = Date.now();
    const answer = await version();
    const ms = Date.now() - t0;
    expect(answer.exitCode, answer.stdout.toString()).toBe(0);
    expect(ms).toBeLessThan(3000); // not the silent caller's 8 s frame bound
    expect({ threads: m.threads, spares: m.sparesStarted }).toEqual({ threads: 2, spares: 1 });
    silent.destroy();
    // Idle for 1.5 s (checked at its once-a-second turn): the spare ends; the base worker stays.
    for (let i = 0; i < 100 && m.threads > 1; i++) await sleep(50);
    expect(m.threads).toBe(1);
    expect((await version()).exitCode).toBe(0);
  }, 30_000);

  it('after a base thread was replaced while a spare ran, calls go to the base thread again and the spare ends once idle (it queues on the socket behind the replacement)', async () => {
    const { server, path, version } = await oneWorkerServer({ spareIdleMs: 3000 });
    const m = server.metrics;
    // The base thread reads a silent caller's frame: a spare serves a call meanwhile.
    const silent = createConnection(path);
    silent.on('error', () => undefined);
    for (let i = 0; i < 50 && m.inFlight === 0; i++) await sleep(20);
    expect((await version()).exitCode).toBe(0);
    expect({ threads: m.threads, spares: m.sparesStarted }).toEqual({ threads: 2, spares: 1 });
    silent.destroy();
    for (let i = 0; i < 50 && m.inFlight > 0; i++) await sleep(20);
    // The base thread dies (between calls) and is replaced while the spare runs.
    type PoolSlot = { worker: { terminate(): Promise<number> }; up: boolean };
    const slots = (server as unknown as { pool: { slots: (PoolSlot | undefined)[] } }).pool.slots;
    const base = slots[0]!;
    await base.worker.terminate();
    for (let i = 0; i < 100 && (slots[0] === base || !slots[0]?.up); i++) await sleep(50);
    expect(slots[0]).not.toBe(base);
    expect(m.threads).toBe(2); // the spare is still there
    await sleep(100); // the replacement waits on the socket now
    // A call every 250 ms, far less than the spare's idle time apart: the
    // replacement takes them (the spare at most one), so the spare is idle
    // and ends (checked at its once-a-second turn).
    let calling = true;
    const answers: number[] = [];
    const caller = (async () => {
      while (calling) {
        answers.push((await version()).exitCode);
        await sleep(250);
      }
    })();
    const until = Date.now() + 8000;
    while (m.threads > 1 && Date.now() < until) await sleep(50);
    calling = false;
    await caller;
    expect(m.threads).toBe(1);
    expect(m.sparesStarted).toBe(1);
    expect(answers.length).toBeGreaterThan(4);
    expect(answers.every((c) => c === 0)).toBe(true);
  }, 30_000);

  it('answers "try again" for a call whose worker is stuck at its deadline, not up to a second after it (the once-a-second sweep)', async () => {
    const dir = tempDir();
    const script = join(dir, 'worker.mjs');
    // A thread that says it is ready and then serves nothing: its call is "stuck".
    writeFileSync(script, `import { parentPort } from 'node:worker_threads'; parentPort.postMessage({ ready: true }); setInterval(() => {}, 1000);`);
    const server = new CniServer({
      path: join(dir, 'cni.sock'),
      workers: 1,
      logger: pino({ level: 'silent' }),
      log: { level: 'fatal', format: 'json' },
      callTimeoutMs: 2000,
      workerScript: pathToFileURL(script),
    });
    await server.start();
    const t = Date.now(); // the sweeps run near t + k s
    stops.push(() => server.stop());
    await server.ready();
    const shared = (server as unknown as { shared: CniShared }).shared;
    // The call starts just after a sweep; its deadline falls 0.3 s after
    // the next one, which sees it still running: the one after would
    // answer it 0.7 s late.
    await sleep(t + 1100 - Date.now());
    const answerFile = join(dir, 'answer');
    const fd = openSync(answerFile, 'w');
    const deadline = t + 2300;
    shared.beginCall(0, shared.accepted(0, fd), deadline, 1200);
    while (readFileSync(answerFile).length === 0 && Date.now() < t + 4000) await sleep(10);
    const late = Date.now() - deadline;
    expect(codeOf(decodeResponse(readFileSync(answerFile).subarray(4)))).toMatchObject({ code: 11, msg: expect.stringMatching(/1200 ms/) });
    expect(late).toBeLessThan(250);
    expect(server.metrics.timeouts).toBe(1);
  }, 20_000);

  it('counts a call answered for a dead worker in the call counters and durations: as an error of its command, or "invalid" when its frame was not read yet', async () => {
    const dir = tempDir();
    const script = join(dir, 'worker.mjs');
    writeFileSync(script, `
      import { parentPort } from 'node:worker_threads';
      parentPort.postMessage({ ready: true });
      parentPort.on('message', (m) => { if (m === 'die') process.exit(3); });
    `);
    const shared = new CniShared(1);
    const pool = new WorkerPool({
      size: 1,
      shared,
      start: { shared: shared.buffers, listenFd: -1, frameTimeoutMs: 1000, callTimeoutMs: 1000, log: { level: 'silent' as 'fatal', format: 'json' } },
      script: pathToFileURL(script),
    });
    stops.push(() => pool.close());
    type Slot = { worker: { postMessage(m: string): void }; exited: Promise<void>; ready: Promise<void> };
    let last: Slot | undefined;
    const die = async () => {
      const slots = (pool as unknown as { slots: Slot[] }).slots;
      for (let i = 0; i < 100 && slots[0] === last; i++) await sleep(50); // its replacement
      const slot = slots[0]!;
      last = slot;
      await slot.ready;
      slot.worker.postMessage('die');
      await slot.exited;
      await sleep(50);
    };
    // An ADD that has run 0.3 s when its worker dies.
    const fd = openSync(join(dir, 'answer'), 'w');
    shared.beginCall(0, shared.accepted(0, fd), Date.now() + 49_700, 50_000, 'ADD');
    await die();
    expect(codeOf(decodeResponse(readFileSync(join(dir, 'answer')).subarray(4)))).toMatchObject({ code: 999 });
    // A connection whose frame its worker was still reading.
    const fd2 = openSync(join(dir, 'answer2'), 'w');
    shared.accepted(0, fd2);
    await die();
    expect(codeOf(decodeResponse(readFileSync(join(dir, 'answer2')).subarray(4)))).toMatchObject({ code: 999 });
    expect(Object.fromEntries(shared.metrics().calls)).toEqual({ ADD: { ok: 0, error: 1 }, invalid: { ok: 0, error: 1 } });
    const seen: [string, boolean, number][] = [];
    shared.drain((c, okay, sec) => seen.push([c, okay, sec]));
    expect(seen.map(([c, okay]) => `${c} ${okay}`)).toEqual(['ADD false', 'invalid false']);
    expect(seen[0]![2]).toBeGreaterThanOrEqual(0.3);
    expect(seen[0]![2]).toBeLessThan(5);
  }, 20_000);

  it('does not start spare threads in a loop when each dies at once: one a second while the stall lasts', async () => {
    // The base worker says it stalled when told; every spare dies at start.
    const { pool, shared, warnings, worker, starts } = await fakePool(
      (startsFile) => `
      import { appendFileSync } from 'node:fs';
      import { parentPort, workerData } from 'node:worker_threads';
      appendFileSync(${startsFile}, workerData.index + '\\n');
      if (workerData.idleExitMs !== undefined) process.exit(3);
      parentPort.postMessage({ ready: true });
      parentPort.on('message', (m) => { if (m === 'stalled') parentPort.postMessage({ stalled: true }); });
    `,
      { slots: 2, spares: 1 },
    );
    await pool.ready();
    shared.accepted(0, 100);
    shared.stall(0);
    worker(0).postMessage('stalled');
    await sleep(2500);
    shared.unstall(0);
    const spares = starts().filter((l) => l === '1').length;
    expect(spares).toBeGreaterThanOrEqual(2);
    expect(spares).toBeLessThanOrEqual(4);
    expect(warnings[0]).toMatch(/CNI spare worker died .*code 3/);
  }, 20_000);
});
