// The standalone transport writes its answer with write(2) (src/plugin/main.ts
// writeFd); a runtime may hand it a non-blocking stdout that is full, where
// write(2) says EAGAIN. The answer must still arrive whole, after what was
// already in the pipe, once the reader drains it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
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

describe('standalone plugin stdout', () => {
  it('delivers the whole answer through a full non-blocking stdout pipe once the reader drains it', async () => {
    const fifo = join(dir, 'out.fifo');
    execFileSync('mkfifo', [fifo]);
    const r = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const w = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    // Fill the pipe until write(2) refuses: the plugin's first write meets EAGAIN.
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
    // Waiting for the full pipe, not exited and not failed; its stdout is
    // non-blocking (O_NONBLOCK is 04000 in fdinfo's octal flags).
    expect(child.exitCode, stderr).toBeNull();
    const flags = /flags:\s+([0-7]+)/.exec(execFileSync('cat', [`/proc/${child.pid}/fdinfo/1`], { encoding: 'utf8' }))?.[1];
    expect((parseInt(flags ?? '0', 8) & 0o4000) !== 0).toBe(true);
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
      if (idle > 250) throw new Error('the answer never arrived');
    }
    closeSync(r);
    expect(await exited, stderr).toBe(0);
    const all = Buffer.concat(got);
    expect(all.length).toBeGreaterThan(filled);
    expect(all.subarray(0, filled).every((b) => b === 0x78)).toBe(true);
    const answer = all.subarray(filled).toString('utf8');
    expect(answer.endsWith('\n')).toBe(true);
    expect(JSON.parse(answer)).toEqual({ cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });
});
