// runPlugin and readStdin (the plugin's stdin reader) in a real Node process:
// real stdin (a pipe, a slow writer, a file, /dev/null, a closed fd 0, a
// non-blocking FIFO), real stdout and exit code, as a runtime sees them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const skel = fileURLToPath(new URL('../../../src/cni/skel.ts', import.meta.url));
const stdinReader = fileURLToPath(new URL('../../../src/cni/stdin.ts', import.meta.url));
let dir = '';
let bundle = '';

const entry = `
import { runPlugin } from ${JSON.stringify(skel)};
import { readStdin } from ${JSON.stringify(stdinReader)};
const handlers = {
  add: async (ctx) => ({ cniVersion: '1.1.0', ips: [{ address: '10.1.0.5/24', gateway: '10.1.0.1' }], routes: [{ dst: '0.0.0.0/0', mtu: 1400 }] }),
  del: async () => {},
  check: async () => {},
  gc: async () => {},
  status: async () => { throw new Error('boom from status'); },
};
const stdin = await readStdin(1 << 20).catch((err) => {
  process.stdout.write(JSON.stringify({ cniVersion: '1.1.0', code: err.code, msg: err.message }) + '\\n');
  process.exit(1);
});
process.exitCode = await runPlugin(handlers, {
  env: process.env, stdin,
  stdout: (t) => process.stdout.write(t),
  log: (msg, err) => process.stderr.write(msg + (err instanceof Error ? ': ' + err.stack : '') + '\\n'),
});
`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-cni-skel-'));
  writeFileSync(join(dir, 'entry.mjs'), entry);
  bundle = join(dir, 'plugin.mjs');
  await build({ entryPoints: [join(dir, 'entry.mjs')], bundle: true, platform: 'node', format: 'esm', outfile: bundle, logLevel: 'silent' });
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const cniEnv = (command: string) => ({
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'ctr1',
  CNI_NETNS: '/var/run/netns/tsf-unit-none',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
});

function runWithInput(env: Record<string, string>, input: string | Buffer) {
  const r = spawnSync(process.execPath, [bundle], { env, input, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Spawns the bundle with `stdio`, lets `feed` write its stdin while it runs, and collects the outcome. */
async function runFed(env: Record<string, string>, cmd: string, args: string[], stdio: StdioOptions, feed: (child: ChildProcess) => Promise<void>) {
  const child = spawn(cmd, args, { env, stdio });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  await feed(child);
  return { code: await exited, stdout, stderr };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An ADD config of about `size` bytes (a padding key the decoder keeps as an unknown field). */
function bigConf(size: number): string {
  return JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 't', pad: 'p'.repeat(size) });
}

function oneJsonLine(stdout: string): Record<string, unknown> {
  const lines = stdout.split('\n');
  expect(lines).toHaveLength(2); // the document and the trailing newline
  expect(lines[1]).toBe('');
  return JSON.parse(lines[0] as string) as Record<string, unknown>;
}

describe('plugin process', () => {
  it('answers VERSION with fd 0 closed', () => {
    const r = spawnSync('bash', ['-c', `exec "${process.execPath}" "${bundle}" 0<&-`], {
      env: { ...cniEnv('VERSION'), CNI_NETNS: 'dummy', CNI_IFNAME: 'dummy', CNI_PATH: 'dummy' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(oneJsonLine(r.stdout)).toEqual({ cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  it('answers VERSION from a pipe the podman way', () => {
    const r = runWithInput({ ...cniEnv('VERSION'), CNI_NETNS: 'dummy' }, '{"cniVersion":"1.0.0"}');
    expect(r.code).toBe(0);
    expect(oneJsonLine(r.stdout).cniVersion).toBe('1.0.0');
  });

  it('prints an ADD result in the config version', () => {
    const r = runWithInput(cniEnv('ADD'), JSON.stringify({ cniVersion: '0.3.1', name: 'n', type: 't' }));
    expect(r.code, r.stderr).toBe(0);
    expect(oneJsonLine(r.stdout)).toEqual({
      cniVersion: '0.3.1',
      ips: [{ version: '4', address: '10.1.0.5/24', gateway: '10.1.0.1' }],
      routes: [{ dst: '0.0.0.0/0' }],
    });
  });

  it('reports a plain Error as one 999 line on stdout and the stack on stderr', () => {
    const r = runWithInput({ PATH: process.env.PATH ?? '', CNI_COMMAND: 'STATUS' }, JSON.stringify({ cniVersion: '1.1.0', name: 'n', type: 't' }));
    expect(r.code).toBe(1);
    expect(oneJsonLine(r.stdout)).toEqual({ cniVersion: '1.1.0', code: 999, msg: 'boom from status' });
    expect(r.stderr).toContain('boom from status');
    expect(r.stderr).toMatch(/\n\s+at /);
  });

  it('fails ADD with code 6 on an empty stdin (/dev/null)', () => {
    const r = spawnSync(process.execPath, [bundle], { env: cniEnv('ADD'), stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(oneJsonLine(r.stdout).code).toBe(6);
  });

  it('fails cleanly with code 6 on an oversized stdin', () => {
    const r = runWithInput(cniEnv('ADD'), Buffer.alloc(2 << 20, 0x20));
    expect(r.code).toBe(1);
    expect(oneJsonLine(r.stdout).code).toBe(6);
  });

  it('prints nothing for a successful DEL without CNI_NETNS', () => {
    const env: Record<string, string> = { ...cniEnv('DEL'), CNI_NETNS: '' };
    const r = runWithInput(env, JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 't' }));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toBe('');
  });

  it('reads the config from a file on fd 0 (stdin redirected from a file)', () => {
    const file = join(dir, 'conf.json');
    writeFileSync(file, bigConf(150_000)); // more than one read(2)
    const fd = openSync(file, 'r');
    try {
      const r = spawnSync(process.execPath, [bundle], { env: cniEnv('ADD'), stdio: [fd, 'pipe', 'pipe'], encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(oneJsonLine(r.stdout).ips).toEqual([{ address: '10.1.0.5/24', gateway: '10.1.0.1' }]);
    } finally {
      closeSync(fd);
    }
  });

  it('fails ADD with code 6 on an empty pipe and on an oversized file', () => {
    expect(oneJsonLine(runWithInput(cniEnv('ADD'), '').stdout)).toMatchObject({ code: 6, msg: expect.stringContaining('empty') });
    const file = join(dir, 'big.json');
    writeFileSync(file, bigConf(2 << 20));
    const fd = openSync(file, 'r');
    try {
      const r = spawnSync(process.execPath, [bundle], { env: cniEnv('ADD'), stdio: [fd, 'pipe', 'pipe'], encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(oneJsonLine(r.stdout)).toMatchObject({ code: 6, msg: `stdin is larger than ${1 << 20} bytes` });
    } finally {
      closeSync(fd);
    }
  });

  it('joins a slow writer\'s pieces on a pipe (three writes 150 ms apart) into one config', async () => {
    const conf = Buffer.from(bigConf(100_000));
    const r = await runFed(cniEnv('ADD'), process.execPath, [bundle], ['pipe', 'pipe', 'pipe'], async (child) => {
      const parts = [conf.subarray(0, 10), conf.subarray(10, 70_000), conf.subarray(70_000)];
      for (const part of parts) {
        await sleep(150);
        await new Promise<void>((resolve, reject) => child.stdin!.write(part, (err) => (err ? reject(err) : resolve())));
      }
      child.stdin!.end();
    });
    expect(r.code, r.stderr).toBe(0);
    expect(oneJsonLine(r.stdout).cniVersion).toBe('1.0.0');
  });

  it('finishes a non-blocking fd 0 that is not yet written (read(2) says EAGAIN) through the stream', async () => {
    // The parent holds both ends of a FIFO; the read end, opened O_NONBLOCK,
    // becomes the child's fd 0 through bash, which keeps the file status flags.
    const fifo = join(dir, 'nb.fifo');
    execFileSync('mkfifo', [fifo]);
    const r = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const w = openSync(fifo, 'w');
    const conf = bigConf(100_000);
    let nonBlocking = false;
    const out = await runFed(cniEnv('ADD'), 'bash', ['-c', `exec 0<&3 3<&-; exec "${process.execPath}" "${bundle}"`], ['ignore', 'pipe', 'pipe', r], async ({ pid }) => {
      closeSync(r);
      await sleep(300);
      // the plugin runs with fd 0 non-blocking (O_NONBLOCK is 04000 in fdinfo's octal flags)
      const flags = /flags:\s+([0-7]+)/.exec(execFileSync('cat', [`/proc/${pid}/fdinfo/0`], { encoding: 'utf8' }))?.[1];
      nonBlocking = (parseInt(flags ?? '0', 8) & 0o4000) !== 0;
      writeSync(w, conf.slice(0, 20));
      await sleep(100);
      writeSync(w, conf.slice(20));
      closeSync(w);
    });
    expect(nonBlocking).toBe(true);
    expect(out.code, out.stderr).toBe(0);
    expect(oneJsonLine(out.stdout).ips).toEqual([{ address: '10.1.0.5/24', gateway: '10.1.0.1' }]);
  });
});
