// conf/image/iptables-wrapper, the image's iptables alternative: it must put
// the agent's rules in the backend kube-proxy on the node uses. Run against
// stub *-save commands and a stub update-alternatives in a temp dir (the
// real one would change this machine's alternatives).
import { afterEach, describe, expect, it } from 'vitest';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const WRAPPER = fileURLToPath(new URL('../../conf/image/iptables-wrapper', import.meta.url));

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function script(path: string, body: string): void {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
}

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
  copyFileSync(WRAPPER, join(dir, 'iptables'));
  chmodSync(join(dir, 'iptables'), 0o755);
  const res = spawnSync(join(dir, 'iptables'), ['-S'], { encoding: 'utf8', env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, timeout: 10_000 });
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
