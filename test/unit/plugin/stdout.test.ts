// The standalone transport writes its answer and its log lines with write(2)
// (src/plugin/main.ts writeFd); a runtime may hand it a non-blocking stdout or
// stderr that is full, where write(2) says EAGAIN. The answer and every log
// line must still arrive whole, after what was already in the pipe, once the
// reader drains it, before the process exits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PLUGIN = fileURLToPath(new URL('../../../bin/tsflannel', import.meta.url));
let dir = '';

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-stdout-'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function isEagain(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'EAGAIN';
}

/** A FIFO whose non-blocking write end is full: a writer's next write(2) says EAGAIN. */
function fullFifo(name: string): { r: number; w: number; filled: number } {
  const fifo = join(dir, name);
  execFileSync('mkfifo', [fifo]);
  const r = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const w = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  const chunk = Buffer.alloc(4096, 'x');
  let filled = 0;
  for (;;) {
    try {
      filled += writeSync(w, chunk);
    } catch (err) {
      if (isEagain(err)) break;
      throw err;
    }
  }
  return { r, w, filled };
}

/** Reads `r` until the child has exited and the pipe stays empty; returns what came after the filler. */
async function drain(r: number, filled: number, exited: Promise<unknown>): Promise<Buffer> {
  const got: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  let done = false;
  void exited.then(() => (done = true));
  for (let idle = 0; idle < 2 || !done; ) {
    let n = 0;
    try {
      n = readSync(r, buf);
    } catch (err) {
      if (!isEagain(err)) throw err;
    }
    if (n > 0) {
      got.push(Buffer.from(buf.subarray(0, n)));
      idle = 0;
    } else {
      // 0 is EOF (every writer gone); EAGAIN is "not yet".
      idle++;
      await sleep(20);
    }
    if (idle > 250) throw new Error('the output never arrived');
  }
  closeSync(r);
  const all = Buffer.concat(got);
  expect(all.length).toBeGreaterThan(filled);
  expect(all.subarray(0, filled).every((b) => b === 0x78)).toBe(true);
  return all.subarray(filled);
}

/** Whether the child's `fd` is non-blocking (O_NONBLOCK is 04000 in fdinfo's octal flags). */
function nonBlocking(pid: number, fd: number): boolean {
  const flags = /flags:\s+([0-7]+)/.exec(execFileSync('cat', [`/proc/${pid}/fdinfo/${fd}`], { encoding: 'utf8' }))?.[1];
  return (parseInt(flags ?? '0', 8) & 0o4000) !== 0;
}

describe('standalone plugin output through a full non-blocking pipe', () => {
  it('delivers the whole answer through a full non-blocking stdout pipe once the reader drains it', async () => {
    const { r, w, filled } = fullFifo('out.fifo');
    // Through sh as fd 3: Node's spawn makes a child's fds 0-2 blocking,
    // the shell's dup keeps the file status flags (O_NONBLOCK).
    const child = spawn('sh', ['-c', `exec 1>&3 3>&-; exec "${process.execPath}" "${PLUGIN}"`], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'VERSION' },
      stdio: ['pipe', 'ignore', 'pipe', w],
    });
    closeSync(w);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin!.end('{"cniVersion":"0.4.0"}');
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await sleep(300);
    // Waiting for the full pipe, not exited and not failed.
    expect(child.exitCode, stderr).toBeNull();
    expect(nonBlocking(child.pid!, 1)).toBe(true);
    const answer = (await drain(r, filled, exited)).toString('utf8');
    expect(await exited, stderr).toBe(0);
    expect(answer.endsWith('\n')).toBe(true);
    expect(JSON.parse(answer)).toEqual({ cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  it('waits for its log lines through a full non-blocking stderr pipe before it exits', async () => {
    const { r, w, filled } = fullFifo('err.fifo');
    writeFileSync(join(dir, 'subnet.env'), 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
    const conf = { cniVersion: '1.0.0', name: 'tsf-stderr', type: 'tsflannel', subnetFile: join(dir, 'subnet.env'), dataDir: join(dir, 'networks'), logLevel: 'debug' };
    const child = spawn('sh', ['-c', `exec 2>&3 3>&-; exec "${process.execPath}" "${PLUGIN}"`], {
      // A namespace path that does not exist: the ADD fails early, after logging why.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'tsf-stderr-1', CNI_NETNS: join(dir, 'no-such-netns'), CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' },
      stdio: ['pipe', 'pipe', 'ignore', w],
    });
    closeSync(w);
    let stdout = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stdin!.end(JSON.stringify(conf));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await sleep(300);
    // The answer is out, the log lines wait for the reader: the process waits with them.
    expect(child.exitCode, stdout).toBeNull();
    expect(nonBlocking(child.pid!, 2)).toBe(true);
    const logged = (await drain(r, filled, exited)).toString('utf8');
    expect(await exited).toBe(1);
    expect(JSON.parse(stdout)).toMatchObject({ cniVersion: '1.0.0', code: expect.any(Number) });
    // The one-line summary for the runtime's log and the debug log's record of the failure, each whole.
    const lines = logged.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^tsflannel: CNI error 4: CNI_NETNS \S+no-such-netns is not a network namespace$/);
    const records = lines.slice(1).map((l) => JSON.parse(l) as { level: number; msg: string; err?: { code: number } });
    expect(records).toContainEqual(expect.objectContaining({ level: 20, msg: 'failed', err: expect.objectContaining({ code: 4 }) }));
  });
});
