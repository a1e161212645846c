// The CNI socket server's own logic with a fake handler pool: calls for one
// attachment run one after another, calls for different pods overlap, a
// slow call gets "try again" at the deadline, and a worker that dies fails
// its calls and is replaced. No root, no kernel.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { callDeadlineMs, CniServer, newCniServerMetrics } from '../../../src/daemon/cni-server.js';
import { WorkerPool } from '../../../src/daemon/cni-pool.js';
import type { CniResponse } from '../../../src/plugin/handler.js';
import { socketCall } from '../../helpers/cni-agent.js';

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

async function serve(run: (env: Record<string, string>) => Promise<CniResponse>, callTimeoutMs?: number) {
  const path = join(tempDir(), 'run', 'cni.sock');
  const server = new CniServer({
    path,
    pool: { run: (env) => run(env) },
    peerCred: () => ({ pid: 1, uid: 0, gid: 0 }),
    logger: pino({ level: 'silent' }),
    metrics: newCniServerMetrics(),
    ...(callTimeoutMs ? { callTimeoutMs } : {}),
  });
  await server.start();
  stops.push(() => server.stop());
  return path;
}

/** A server whose handler records each command it starts and holds every ADD for `addMs`. */
async function serveHoldingAdd(addMs: number, callTimeoutMs: number): Promise<{ path: string; started: string[] }> {
  const started: string[] = [];
  const path = await serve(async (env) => {
    started.push(env.CNI_COMMAND!);
    if (env.CNI_COMMAND === 'ADD') await sleep(addMs);
    return ok(env.CNI_COMMAND!);
  }, callTimeoutMs);
  return { path, started };
}

describe('CNI socket server', () => {
  it('runs calls for one attachment one after another, and other pods alongside', async () => {
    const log: string[] = [];
    const path = await serve(async (env) => {
      const tag = `${env.CNI_CONTAINERID}/${env.CNI_IFNAME}`;
      log.push(`start ${tag}`);
      await sleep(150);
      log.push(`end ${tag}`);
      return ok(tag);
    });
    const call = (id: string, ifname = 'eth0') => socketCall(path, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: id, CNI_IFNAME: ifname }, '{}');
    await Promise.all([call('a'), call('a'), call('b'), call('a', 'net1')]);
    // a/eth0 twice, in order; b and a/net1 started before the first a/eth0 ended
    const firstEnd = log.indexOf('end a/eth0');
    expect(log.filter((l) => l === 'start a/eth0')).toHaveLength(2);
    expect(log.lastIndexOf('start a/eth0')).toBeGreaterThan(firstEnd);
    expect(log.indexOf('start b/eth0')).toBeLessThan(firstEnd);
    expect(log.indexOf('start a/net1')).toBeLessThan(firstEnd);
  });

  it('answers "try again" (code 11) at the call deadline and serves the next call', async () => {
    const path = await serve(async (env) => {
      if (env.CNI_CONTAINERID === 'slow') await sleep(1500);
      return ok('done');
    }, 300);
    const slow = await socketCall(path, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'slow', CNI_IFNAME: 'eth0' }, '{}');
    expect(slow.exitCode).toBe(1);
    expect(slow.json).toMatchObject({ code: 11 });
    const next = await socketCall(path, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'fast', CNI_IFNAME: 'eth0' }, '{}');
    expect(next.stdout).toBe('done');
  });

  it('never starts a call that waited past its deadline behind its attachment\'s earlier call (the runtime has retried it elsewhere by then)', async () => {
    const { path, started } = await serveHoldingAdd(1500, 400);
    const env = (command: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'stuck', CNI_IFNAME: 'eth0' });
    const add = socketCall(path, env('ADD'), '{}');
    await sleep(100);
    // Queued behind the ADD, which holds the attachment past both deadlines.
    const del = await socketCall(path, env('DEL'), '{}');
    expect(del.json).toMatchObject({ code: 11 });
    expect((await add).json).toMatchObject({ code: 11 });
    await sleep(1600); // the ADD's handler ends; the expired DEL must not start after it
    expect(started).toEqual(['ADD']);
  });

  it('takes the forwarder\'s shorter TSFLANNEL_FORWARD_TIMEOUT_MS as the deadline (1 s less), so a queued call it gave up on never starts', async () => {
    // The agent's own deadline (30 s here) is far off; the forwarder sent 3000 ms and runs the standalone
    // plugin then, so the agent answers by 2000 ms and never starts the queued call afterwards.
    const { path, started } = await serveHoldingAdd(4000, 30_000);
    const env = (command: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'fwd', CNI_IFNAME: 'eth0', TSFLANNEL_FORWARD_TIMEOUT_MS: '3000' });
    const add = socketCall(path, env('ADD'), '{}');
    await sleep(100);
    const t0 = Date.now();
    const del = await socketCall(path, env('DEL'), '{}');
    const waited = Date.now() - t0;
    expect(del.json).toMatchObject({ code: 11, msg: expect.stringMatching(/2000 ms/) });
    expect(waited).toBeLessThan(2900); // answered before this forwarder (3000 ms, started ~100 ms earlier) gave up
    expect((await add).json).toMatchObject({ code: 11 });
    await sleep(4000 - (Date.now() - t0) + 300); // the ADD's handler ends; the DEL must not start after it
    expect(started).toEqual(['ADD']);
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

describe('CNI worker pool', () => {
  it('fails the calls of a worker that dies, and replaces it', async () => {
    const script = join(tempDir(), 'worker.mjs');
    writeFileSync(script, `
      import { parentPort } from 'node:worker_threads';
      parentPort.on('message', (m) => {
        if (m.env.CRASH) process.exit(3);
        parentPort.postMessage({ id: m.id, stdout: new TextEncoder().encode(m.env.CNI_COMMAND), exitCode: 0, stderr: '' });
      });
      parentPort.postMessage({ ready: true });
    `);
    const warnings: string[] = [];
    const pool = new WorkerPool({ size: 1, script: pathToFileURL(script), onWarning: (w) => warnings.push(w) });
    stops.push(() => pool.close());
    await pool.ready();
    expect((await pool.run({ CNI_COMMAND: 'ADD' }, Buffer.alloc(0))).stdout.toString()).toBe('ADD');
    await expect(pool.run({ CNI_COMMAND: 'ADD', CRASH: '1' }, Buffer.alloc(0))).rejects.toThrow(/exited with code 3/);
    expect(warnings.join()).toContain('starting another');
    let answer = '';
    for (let i = 0; i < 50 && !answer; i++) {
      answer = await pool.run({ CNI_COMMAND: 'DEL' }, Buffer.alloc(0)).then((r) => r.stdout.toString(), () => '');
      if (!answer) await sleep(100);
    }
    expect(answer).toBe('DEL');
  });
});
