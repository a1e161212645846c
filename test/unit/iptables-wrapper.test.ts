// conf/image/iptables-wrapper, the image's iptables alternative: several
// first calls at once (doctor runs iptables and ip6tables in parallel, and
// may be the first to call them in a fresh pod whose agent still waits for
// its podCIDR) must each run their command. update-alternatives is not safe
// to run concurrently (two at once fail with "unable to install
// .../iptables.dpkg-tmp"), so the wrapper has to take turns. Run against
// stand-ins in a temporary directory: the machine's alternatives stay as
// they are.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
