// The runtime's environment against the fallback's Node start-up. The
// standalone plugin is a Node single executable, and Node acts on some
// variables before any of the plugin's code runs (NODE_OPTIONS,
// OPENSSL_CONF, ...). Run directly it is at their mercy; run by the forwarder
// for a CNI call it never sees them (native/forward/forward.c,
// node_startup_var). Installed as `tsflannel install` lays it out: the
// forwarder as <bin>/tsflannel, the single executable beside it as
// <bin>/tsflannel-standalone, no agent listening on the conflist's socket.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip, skipOrFail } from '../helpers/require.js';
import { callPlugin } from '../helpers/plugin.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const SEA = join(REPO, 'dist/tsflannel');
const FORWARDER = join(REPO, 'native/build/tsflannel-forward');
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

describe.skipIf(requireOrSkip('forwarder-node-env', { root: isRoot }))('the fallback standalone plugin and the runtime\'s Node variables', () => {
  let buildError = '';
  let dir = '';
  let bin = '';
  let node = '';
  let pod = '';
  let conf = '';
  let socket = '';
  /** Variables each of which alone breaks or burdens a Node start: what a careless runtime environment could carry. */
  let hostile: Record<string, string> = {};
  const netName = `tsfnodeenv${process.pid}`;

  beforeAll(() => {
    // dist/ holds the single executable; package.sh rebuilds it only when an input changed.
    const build = spawnSync('bash', [join(REPO, 'scripts/package.sh')], { cwd: REPO, encoding: 'utf8', timeout: 280_000 });
    if (build.status !== 0 || !existsSync(SEA) || !existsSync(FORWARDER)) {
      buildError = `dist/tsflannel could not be built (scripts/package.sh exit ${build.status}): ${(build.stderr || String(build.error ?? '')).trim().slice(-2000)}`;
      return;
    }
    dir = mkdtempSync(join(tmpdir(), 'tsf-nodeenv-'));
    bin = join(dir, 'bin');
    mkdirSync(bin);
    copyFileSync(FORWARDER, join(bin, 'tsflannel'));
    symlinkSync(SEA, join(bin, 'tsflannel-standalone'));
    // The agent's directory exists (so the fallback is recorded), its socket does not.
    mkdirSync(join(dir, 'run'), { mode: 0o700 });
    socket = join(dir, 'run', 'cni.sock');
    const subnetFile = join(dir, 'subnet.env');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    conf = JSON.stringify({ cniVersion: '1.0.0', name: netName, type: 'tsflannel', subnetFile, dataDir: join(dir, 'networks'), agentSocket: socket });
    // OpenSSL (bundled in Node) reads this at start-up and loads the provider module it names: here one that is missing.
    const openssl = join(dir, 'openssl.cnf');
    writeFileSync(openssl, 'nodejs_conf = init\n[init]\nproviders = prov\n[prov]\nevil = evil_sect\n[evil_sect]\nmodule = /nonexistent/evil.so\nactivate = 1\n');
    hostile = {
      NODE_OPTIONS: '--require=/nonexistent/preload.js',
      NODE_V8_COVERAGE: join(dir, 'coverage'),
      NODE_REDIRECT_WARNINGS: join(dir, 'warnings.txt'),
      NODE_PENDING_DEPRECATION: '1',
      NODE_DEBUG: 'fs,net,module',
      OPENSSL_CONF: openssl,
      UV_THREADPOOL_SIZE: '64',
      ...(existsSync(CA_BUNDLE) ? { NODE_EXTRA_CA_CERTS: CA_BUNDLE } : {}),
      // The single executable extracts its native files here, not into the machine's /var/lib/tsflannel.
      TSFLANNEL_CACHE_DIR: join(dir, 'sea-cache'),
    };
    node = addNetns('envnode');
    pod = addNetns('envpod');
  }, 300_000);

  afterAll(() => {
    cleanupAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const needsBuild = (skip: (note?: string) => void) => {
    if (buildError) skipOrFail(skip, 'forwarder-node-env', buildError);
  };

  /** The standalone run directly, as a runtime would run a plugin binary, with one extra variable (no core file if Node aborts). */
  const direct = (extra: Record<string, string>) =>
    spawnSync('/bin/sh', ['-c', 'ulimit -c 0 && exec "$0"', join(bin, 'tsflannel-standalone')], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'VERSION', TSFLANNEL_CACHE_DIR: hostile.TSFLANNEL_CACHE_DIR!, ...extra },
      input: '{"cniVersion":"1.0.0"}',
      encoding: 'utf8',
      timeout: 30_000,
    });

  it('run directly, the single executable obeys NODE_OPTIONS and OPENSSL_CONF before any plugin code: it fails with no CNI answer', ({ skip }) => {
    needsBuild(skip);
    const clean = direct({});
    expect(clean.status, clean.stderr).toBe(0);
    expect(JSON.parse(clean.stdout)).toMatchObject({ cniVersion: '1.0.0' });
    // Node 20's single executable parses NODE_OPTIONS like node itself: the --require runs before the bundle.
    const options = direct({ NODE_OPTIONS: hostile.NODE_OPTIONS! });
    expect(options.status).toBe(1);
    expect(options.stdout).toBe('');
    expect(options.stderr).toContain("Cannot find module '/nonexistent/preload.js'");
    // OpenSSL's provider from OPENSSL_CONF is loaded at start-up; a missing one aborts Node.
    const openssl = direct({ OPENSSL_CONF: hostile.OPENSSL_CONF! });
    expect(openssl.signal).toBe('SIGABRT');
    expect(openssl.stdout).toBe('');
  });

  it('a fallback ADD through the forwarder attaches the pod despite NODE_OPTIONS, OPENSSL_CONF, NODE_EXTRA_CA_CERTS, NODE_V8_COVERAGE and more in the runtime\'s environment; DEL detaches it; Node wrote no coverage or warnings file', async ({ skip }) => {
    needsBuild(skip);
    const call = (command: string) =>
      callPlugin({ command, nodeNs: node, bin: join(bin, 'tsflannel'), containerId: 'nodeenv01', netns: nsPath(pod), ifname: 'eth0', stdin: conf, extraEnv: hostile });
    const add = await call('ADD');
    expect(add.code, add.stdout + add.stderr).toBe(0);
    // It did take the fallback: the forwarder's one line, and the record `tsflannel status` reads.
    expect(add.stderr).toContain(`tsflannel: agent at ${socket} unavailable (no socket), running standalone\n`);
    expect(readFileSync(join(dir, 'run', 'fallbacks.log'), 'utf8')).toContain('"containerId":"nodeenv01"');
    const ip = (add.json?.ips as { address: string }[])[0]!.address;
    expect(ip).toMatch(/^10\.244\.7\.\d+\/24$/);
    const podAddrs = ipJson<{ addr_info: { family: string; local: string }[] }[]>(pod, ['addr', 'show', 'dev', 'eth0']);
    expect(podAddrs[0]!.addr_info.map((a) => a.local)).toContain(ip.split('/')[0]);
    inNs(pod, 'ping', ['-c', '1', '-W', '2', '10.244.7.1']);

    const del = await call('DEL');
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname)).toEqual(['lo']);
    expect(ipJson<unknown[]>(node, ['link', 'show', 'type', 'veth'])).toEqual([]);
    expect(readdirSync(join(dir, 'networks', netName)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f))).toEqual([]);
    expect(existsSync(join(dir, 'coverage'))).toBe(false);
    expect(existsSync(join(dir, 'warnings.txt'))).toBe(false);
  }, 60_000);
});
