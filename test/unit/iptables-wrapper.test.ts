// conf/image/iptables-wrapper, the image's iptables alternative: it must put
// the agent's rules in the backend kube-proxy on the node uses, and several
// first calls at once (doctor runs iptables and ip6tables in parallel, and
// may be the first to call them in a fresh pod whose agent still waits for
// its podCIDR) must each run their command. update-alternatives is not safe
// to run concurrently (two at once fail with "unable to install
// .../iptables.dpkg-tmp"), so the wrapper has to take turns. Run against
// stand-ins in a temporary directory: the machine's alternatives stay as
// they are.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const WRAPPER = new URL('../../conf/image/iptables-wrapper', import.meta.url);
const roots: string[] = [];

afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

function script(path: string, body: string): void {
  writeFileSync(path, `#!/bin/sh\n${body}`);
  chmodSync(path, 0o755);
}

/** A fake node: sbin/iptables → the wrapper, and an update-alternatives that breaks when two run at once, as the real one does. */
function fakeImage(): { root: string; env: NodeJS.ProcessEnv; iptables: string } {
  const root = mkdtempSync(join(tmpdir(), 'tsf-iptw-'));
  roots.push(root);
  const bin = join(root, 'bin');
  const sbin = join(root, 'sbin');
  mkdirSync(bin);
  mkdirSync(sbin);
  copyFileSync(WRAPPER, join(sbin, 'iptables-wrapper'));
  chmodSync(join(sbin, 'iptables-wrapper'), 0o755);
  symlinkSync(join(sbin, 'iptables-wrapper'), join(sbin, 'iptables'));
  script(join(sbin, 'iptables-real'), 'echo "real $*"\n');
  for (const t of ['iptables', 'ip6tables']) for (const m of ['legacy', 'nft']) script(join(bin, `${t}-${m}-save`), m === 'nft' ? 'echo "-A FORWARD -j KUBE-FORWARD"\n' : '');
  script(
    join(bin, 'update-alternatives'),
    `mkdir "${root}/busy" 2>/dev/null || { echo "update-alternatives: error: unable to install '${root}/iptables.dpkg-tmp'" >&2; exit 2; }
echo "$*" >> "${root}/calls"
sleep 0.3
case "$*" in *"--set iptables "*) ln -sfn "${sbin}/iptables-real" "${sbin}/iptables" ;; esac
rmdir "${root}/busy"
`,
  );
  const env = {
    PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`,
    TSFLANNEL_IPTABLES_WRAPPER: join(sbin, 'iptables-wrapper'),
    TSFLANNEL_IPTABLES_WRAPPER_LOCK: join(root, 'wrapper.lock'),
  };
  return { root, env, iptables: join(sbin, 'iptables') };
}

function runOnce(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(file, args, { env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('conf/image/iptables-wrapper', () => {
  it('runs every one of six simultaneous first calls, choosing the backend once', async () => {
    const img = fakeImage();
    const runs = await Promise.all(Array.from({ length: 6 }, (_, i) => runOnce(img.iptables, ['-S', `CHAIN${i}`], img.env)));
    for (const [i, r] of runs.entries()) {
      expect(r, JSON.stringify(r)).toMatchObject({ code: 0, stdout: `real -S CHAIN${i}\n` });
    }
    // one --set per family, by whichever call came first
    expect(readFileSync(join(img.root, 'calls'), 'utf8').trim().split('\n')).toEqual([
      '--quiet --set iptables /usr/sbin/iptables-nft',
      '--quiet --set ip6tables /usr/sbin/ip6tables-nft',
    ]);
  });
});

const WRAPPER_PATH = fileURLToPath(WRAPPER);
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});


/** Runs the wrapper as `iptables -S` with these save outputs; returns the backend it chose. */
function choose(saves: { legacy?: string; legacy6?: string; nft?: string; nft6?: string }): string {
  const dir = mkdtempSync(join(tmpdir(), 'tsf-iptw-'));
  dirs.push(dir);
  const out = (name: string, text = '') => {
    writeFileSync(join(dir, `${name}.out`), text);
    script(join(dir, name), `cat "${join(dir, `${name}.out`)}"`);
  };
  out('iptables-legacy-save', saves.legacy);
  out('ip6tables-legacy-save', saves.legacy6);
  out('iptables-nft-save', saves.nft);
  out('ip6tables-nft-save', saves.nft6);
  // the stub alternative: record the choice and make `iptables` the chosen backend
  script(
    join(dir, 'update-alternatives'),
    `echo "$@" >> "${join(dir, 'chosen')}"\ncase "$4" in */iptables-*) printf '#!/bin/sh\\necho ran %s\\n' "$4" > "${join(dir, 'iptables')}";; esac`,
  );
  copyFileSync(WRAPPER_PATH, join(dir, 'iptables'));
  chmodSync(join(dir, 'iptables'), 0o755);
  const env = {
    ...process.env,
    PATH: `${dir}:${process.env.PATH}`,
    TSFLANNEL_IPTABLES_WRAPPER: join(dir, 'iptables'),
    TSFLANNEL_IPTABLES_WRAPPER_LOCK: join(dir, 'wrapper.lock'),
  };
  const res = spawnSync(join(dir, 'iptables'), ['-S'], { encoding: 'utf8', env, timeout: 10_000 });
  expect(res.status, res.stderr).toBe(0);
  const chosen = readFileSync(join(dir, 'chosen'), 'utf8');
  expect(chosen).toMatch(/--set ip6tables \/usr\/sbin\/ip6tables-(legacy|nft)/);
  const mode = /--set iptables \/usr\/sbin\/iptables-(legacy|nft)/.exec(chosen)?.[1] ?? 'none';
  expect(res.stdout.trim()).toBe(`ran /usr/sbin/iptables-${mode}`); // then runs the command through the chosen backend
  return mode;
}

const HINT = '*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n';
const DOCKER_RULES = '*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n-A DOCKER-USER -j RETURN\nCOMMIT\n';

describe('iptables-wrapper: the backend kube-proxy uses', () => {
  it('a legacy node at boot, before kube-proxy wrote a rule: kubelet\'s hint chain in legacy picks legacy', () => {
    expect(choose({ legacy: HINT })).toBe('legacy');
  });

  it('kubelet\'s hint chain in nft wins over more (stale) rules in legacy', () => {
    expect(choose({ legacy: DOCKER_RULES, nft: HINT })).toBe('nft');
  });

  it('without hint chains the backend holding more rules wins, nft on a tie', () => {
    expect(choose({ legacy: DOCKER_RULES })).toBe('legacy');
    expect(choose({ nft: DOCKER_RULES })).toBe('nft');
    expect(choose({})).toBe('nft');
  });
});
