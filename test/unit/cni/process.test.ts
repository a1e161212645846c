// runPlugin and readAllStdin in a real Node process: real stdin (pipe,
// /dev/null, closed fd 0), real stdout and exit code, as a runtime sees them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const skel = fileURLToPath(new URL('../../../src/cni/skel.ts', import.meta.url));
let dir = '';
let bundle = '';

const entry = `
import { readAllStdin, runPlugin } from ${JSON.stringify(skel)};
const handlers = {
  add: async (ctx) => ({ cniVersion: '1.1.0', ips: [{ address: '10.1.0.5/24', gateway: '10.1.0.1' }], routes: [{ dst: '0.0.0.0/0', mtu: 1400 }] }),
  del: async () => {},
  check: async () => {},
  gc: async () => {},
  status: async () => { throw new Error('boom from status'); },
};
const stdin = await readAllStdin(1 << 20).catch((err) => {
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
});
