// The CNI thread pool when the kernel will not make another thread: a node
// at its task limit (a pids cgroup, RLIMIT_NPROC) makes `new Worker` throw
// ERR_WORKER_INIT_FAILED (EAGAIN) at once, in the caller. The pool starts
// spare threads exactly when the node is strained, so it must take that
// without ending the agent, and start the spare once the kernel lets it.
// Real: a process of user nobody, its RLIMIT_NPROC set with prlimit(1).
import { afterEach, describe, expect, it } from 'vitest';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isRoot } from '../../helpers/netns.js';
import { requireOrSkip } from '../../helpers/require.js';

const NOBODY = 65534;
const havePrlimit = existsSync('/usr/bin/prlimit');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Threads (tasks) of user nobody now: what RLIMIT_NPROC counts. */
/** Runs the script `main` as nobody (registered for clean-up), collecting its output. */
function spawnAsNobody(main: string, dir: string, stdin: 'pipe' | 'ignore') {
  const child = spawn(process.execPath, [main], { uid: NOBODY, gid: NOBODY, cwd: dir, stdio: [stdin, 'pipe', 'pipe'] });
  children.push(child);
  const output = { out: '', err: '' };
  child.stdout!.on('data', (d: Buffer) => (output.out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output.err += d.toString()));
  return { child, output };
}

function nobodyTasks(): number {
  return execFileSync('ps', ['-L', '-u', String(NOBODY), '--no-headers'], { encoding: 'utf8' }).split('\n').filter(Boolean).length;
}

/**
 * Sets the soft RLIMIT_NPROC of process `pid` (user nobody), as nobody: a
 * process may change its own user's processes' limits below their hard one
 * (this root may lack CAP_SYS_RESOURCE, which changing them as root needs).
 */
function setNproc(pid: number, soft: string): void {
  execFileSync('prlimit', ['--pid', String(pid), `--nproc=${soft}`], { uid: NOBODY, gid: NOBODY });
}

/** The hard RLIMIT_NPROC of process `pid`, as prlimit(1) writes it. */
function hardNproc(pid: number): string {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max processes'));
  return line!.split(/\s{2,}/)[2]!;
}

interface PoolProcess {
  child: ChildProcess;
  /** worker slots started so far, in order */
  starts: () => string[];
  /** the pool's warnings so far */
  warnings: () => string[];
  /** resolves with how the process ended */
  exited: Promise<string>;
  /** "stall": the base thread's call stalls; "die": the base thread exits (code 3) */
  send: (command: 'stall' | 'die') => void;
}

/**
 * A process of user nobody running a WorkerPool from build/ as the agent's
 * (one base thread, one spare slot) with a worker script that records each
 * start and stalls or dies when told.
 */
async function poolProcess(): Promise<PoolProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'tsf-cnilimit-'));
  dirs.push(dir);
  chmodSync(dir, 0o777);
  const starts = join(dir, 'starts');
  writeFileSync(starts, '');
  chmodSync(starts, 0o666);
  const script = join(dir, 'worker.mjs');
  writeFileSync(script, `
    import { appendFileSync } from 'node:fs';
    import { parentPort, workerData } from 'node:worker_threads';
    appendFileSync(${JSON.stringify(starts)}, workerData.index + '\\n');
    parentPort.postMessage({ ready: true });
    parentPort.on('message', (m) => {
      if (m === 'stall') parentPort.postMessage({ stalled: true });
      if (m === 'die') process.exit(3);
    });
  `);
  const build = (f: string) => JSON.stringify(new URL(`../../../build/daemon/${f}`, import.meta.url).href);
  const program = `
    const { WorkerPool } = await import(${build('cni-pool.js')});
    const { CniShared } = await import(${build('cni-shared.js')});
    const { readFile } = await import('node:fs/promises');
    const shared = new CniShared(2);
    const pool = new WorkerPool({ size: 1, spares: 1, shared,
      start: { shared: shared.buffers, listenFd: -1, frameTimeoutMs: 1000, callTimeoutMs: 1000, log: { level: 'fatal', format: 'json' } },
      script: new URL(${JSON.stringify(pathToFileURL(script).href)}),
      onWarning: (w) => process.stdout.write('warning: ' + w + '\\n') });
    await pool.ready();
    await readFile(${JSON.stringify(starts)}); // libuv's thread pool exists before any limit
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (line) => {
      if (line.startsWith('stall')) {
        shared.accepted(0, 100);
        shared.stall(0);
      }
      pool.slots[0].worker.postMessage(line.trim());
    });
    setInterval(() => undefined, 1000);
    process.stdout.write('ready\\n');`;
  const main = join(dir, 'main.mjs');
  writeFileSync(main, program);
  const { child, output } = spawnAsNobody(main, dir, 'pipe');
  const exited = new Promise<string>((r) =>
    child.once('exit', (code, signal) => r(`exited (code ${code}, signal ${signal}): ${output.err.split('\n').filter((l) => /Error|code:/.test(l)).join(' / ')}`)),
  );
  for (let i = 0; i < 100 && !output.out.includes('ready') && child.exitCode === null; i++) await sleep(50);
  expect(output.out, output.err).toContain('ready');
  return {
    child,
    starts: () => readFileSync(starts, 'utf8').trim().split('\n'),
    warnings: () => output.out.split('\n').filter((l) => l.startsWith('warning: ')),
    exited,
    send: (command) => child.stdin!.write(`${command}\n`),
  };
}

/**
 * No new thread for user nobody from now on (soft RLIMIT_NPROC at its task
 * count), nor after `ending` of its threads have ended.
 */
const refuseThreads = (p: PoolProcess, ending = 0) => setNproc(p.child.pid!, `${nobodyTasks() - ending}:`);
const allowThreads = (p: PoolProcess) => setNproc(p.child.pid!, `${hardNproc(p.child.pid!)}:`);

describe.skipIf(requireOrSkip('CNI pool at the task limit', { root: isRoot, 'prlimit (util-linux)': havePrlimit }))('CNI thread pool at the task limit', () => {
  it('a spare thread the kernel refuses (ERR_WORKER_INIT_FAILED, EAGAIN) does not end the agent: one warning, and the spare starts once threads can be made again', async () => {
    const p = await poolProcess();
    refuseThreads(p);
    p.send('stall');
    expect(await Promise.race([p.exited, sleep(1500).then(() => 'alive')])).toBe('alive');
    expect(p.starts()).toEqual(['0']);
    expect(p.warnings()).toHaveLength(1);
    expect(p.warnings()[0]).toMatch(/cannot start a CNI spare thread .*EAGAIN/);
    // Threads can be made again while the stall lasts: the spare starts.
    allowThreads(p);
    for (let i = 0; i < 60 && p.starts().length < 2; i++) await sleep(50);
    expect(p.starts()).toEqual(['0', '1']);
    expect(p.child.exitCode).toBeNull();
  }, 20_000);

  it('a worker thread that died and cannot be replaced yet (EAGAIN) does not end the agent: it is replaced once threads can be made again', async () => {
    const p = await poolProcess();
    refuseThreads(p, 1); // the dead thread's place does not make room
    p.send('die');
    // replaced a second after a death this soon after its start: one failed try, then another
    expect(await Promise.race([p.exited, sleep(2500).then(() => 'alive')])).toBe('alive');
    expect(p.starts()).toEqual(['0']);
    expect(p.warnings().filter((w) => /cannot start a CNI worker thread .*EAGAIN.*trying again each second/.test(w))).toHaveLength(1);
    allowThreads(p);
    for (let i = 0; i < 60 && p.starts().length < 2; i++) await sleep(50);
    expect(p.starts()).toEqual(['0', '0']);
    expect(p.child.exitCode).toBeNull();
  }, 20_000);

  it('a CNI server whose threads cannot all be made at start fails to start and leaves no thread serving and no socket: its process (--cni-only) ends by itself', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-cnilimit-'));
    dirs.push(dir);
    chmodSync(dir, 0o777);
    const script = join(dir, 'worker.mjs');
    writeFileSync(script, `import { parentPort } from 'node:worker_threads'; parentPort.postMessage({ ready: true }); setInterval(() => undefined, 1000);`);
    const path = join(dir, 'cni.sock');
    const program = `
      const { execFileSync } = await import('node:child_process');
      const { CniServer } = await import(${JSON.stringify(new URL('../../../build/daemon/cni-server.js', import.meta.url).href)});
      const quiet = { info() {}, warn() {}, debug() {}, error() {} };
      // One more thread for user nobody from now on (ps counts itself).
      const tasks = execFileSync('ps', ['-L', '-u', '${NOBODY}', '--no-headers'], { encoding: 'utf8' }).split('\\n').filter(Boolean).length - 1;
      execFileSync('prlimit', ['--pid', String(process.pid), '--nproc=' + (tasks + 1) + ':']);
      const server = new CniServer({ path: ${JSON.stringify(path)}, workers: 3, logger: quiet, log: { level: 'fatal', format: 'json' },
        workerScript: new URL(${JSON.stringify(pathToFileURL(script).href)}) });
      try {
        await server.start();
        process.stdout.write('started\\n');
      } catch (err) {
        process.stdout.write('start failed: ' + err.code + '\\n');
        process.exitCode = 1; // as tsflanneld --cni-only does
      }`;
    const main = join(dir, 'main.mjs');
    writeFileSync(main, program);
    const { child, output } = spawnAsNobody(main, dir, 'ignore');
    const exited = new Promise<string>((r) => child.once('exit', (code) => r(`exited with code ${code}`)));
    for (let i = 0; i < 100 && output.out === '' && child.exitCode === null; i++) await sleep(50);
    expect(output.out, output.err).toBe('start failed: ERR_WORKER_INIT_FAILED\n');
    expect(await Promise.race([exited, sleep(3000).then(() => 'still running')])).toBe('exited with code 1');
    expect(existsSync(path)).toBe(false);
  }, 20_000);
});
