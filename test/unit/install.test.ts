// `tsflannel install` on temporary directories: the forwarder lands as
// tsflannel and the standalone plugin beside it as tsflannel-standalone; a
// binary is replaced by
// rename (a process holding the old file keeps reading the old bytes), the
// conflist is rewritten only when its bytes change, and what it writes is
// conf/10-tsflannel.conflist, which both chained plugins accept.
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BINARY_NAME, CONFLIST_NAME, InstallError, STANDALONE_NAME, defaultConflist, install, installIfMissing } from '../../src/cli/install.js';
import { main as cliMain } from '../../src/cli/main.js';
import { SUPPORTED_VERSIONS } from '../../src/cni/versions.js';
import { refPlugin } from '../helpers/reference.js';
import { skipOrFail } from '../helpers/require.js';

const canonical = readFileSync(new URL('../../conf/10-tsflannel.conflist', import.meta.url));
const roots: string[] = [];

function tempRoot(): { root: string; bin: string; conf: string; src: string; fwd: string } {
  const root = mkdtempSync(join(tmpdir(), 'tsf-install-'));
  roots.push(root);
  const src = join(root, 'tsflannel-build');
  writeFileSync(src, '#!/bin/sh\necho standalone\n');
  const fwd = join(root, 'tsflannel-forward');
  writeFileSync(fwd, '#!/bin/sh\necho new\n');
  return { root, bin: join(root, 'opt/cni/bin'), conf: join(root, 'etc/cni/net.d'), src, fwd };
}

/** A stand-in plugin that answers CNI_COMMAND=VERSION with `versions` (and prints `tag` otherwise). */
const answer = (versions: string[], tag = 'node') =>
  `#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = VERSION ] && echo '${JSON.stringify({ cniVersion: '0.4.0', supportedVersions: versions })}' && exit 0\necho ${tag}\n`;

/** Nothing but the final names: no temporary file may be left behind. */
const entries = (dir: string) => readdirSync(dir).sort();

afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

describe('tsflannel install', () => {
  it('writes the forwarder as tsflannel, the standalone as tsflannel-standalone (both 0755) and conf/10-tsflannel.conflist into fresh dirs', () => {
    const t = tempRoot();
    const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    expect(r.binary).toEqual({ path: join(t.bin, BINARY_NAME), changed: true });
    expect(r.conflist).toEqual({ path: join(t.conf, CONFLIST_NAME), changed: true });
    expect(readFileSync(r.binary.path, 'utf8')).toBe('#!/bin/sh\necho new\n');
    expect(statSync(r.binary.path).mode & 0o777).toBe(0o755);
    expect(r.standalone).toEqual({ path: join(t.bin, STANDALONE_NAME), changed: true });
    expect(readFileSync(r.standalone.path, 'utf8')).toBe('#!/bin/sh\necho standalone\n');
    expect(statSync(r.standalone.path).mode & 0o777).toBe(0o755);
    expect(readFileSync(r.conflist.path).equals(canonical)).toBe(true);
    expect(entries(t.bin)).toEqual([BINARY_NAME, STANDALONE_NAME]);
    expect(entries(t.conf)).toEqual([CONFLIST_NAME]);
  });

  it('replaces a running binary by rename: an open reader still sees the whole old file', () => {
    const t = tempRoot();
    mkdirSync(t.bin, { recursive: true });
    const dest = join(t.bin, BINARY_NAME);
    const old = Buffer.alloc(256 * 1024, 'o');
    writeFileSync(dest, old, { mode: 0o755 });
    const oldInode = statSync(dest).ino;
    const fd = openSync(dest, 'r');
    try {
      const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
      expect(r.binary.changed).toBe(true);
      expect(statSync(dest).ino).not.toBe(oldInode);
      expect(readFileSync(dest, 'utf8')).toBe('#!/bin/sh\necho new\n');
      // An in-place write would have changed what this descriptor reads.
      const seen = Buffer.alloc(old.length);
      expect(readSync(fd, seen, 0, seen.length, 0)).toBe(old.length);
      expect(seen.equals(old)).toBe(true);
    } finally {
      closeSync(fd);
    }
    expect(entries(t.bin)).toEqual([BINARY_NAME, STANDALONE_NAME]);
  });

  it('leaves an identical binary and an unchanged conflist alone (same inode, same mtime)', () => {
    const t = tempRoot();
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    const bin = join(t.bin, BINARY_NAME);
    const conf = join(t.conf, CONFLIST_NAME);
    const past = new Date('2020-01-01T00:00:00Z');
    utimesSync(bin, past, past);
    utimesSync(conf, past, past);
    const before = [statSync(bin), statSync(conf)];
    const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    expect(r.binary.changed).toBe(false);
    expect(r.standalone.changed).toBe(false);
    expect(r.conflist.changed).toBe(false);
    const after = [statSync(bin), statSync(conf)];
    for (const i of [0, 1]) {
      expect(after[i]!.ino).toBe(before[i]!.ino);
      expect(after[i]!.mtimeMs).toBe(past.getTime());
    }
  });

  it('puts back 0755 on an identical binary whose mode was changed (group- or world-writable code the runtime runs as root)', () => {
    const t = tempRoot();
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    for (const name of [BINARY_NAME, STANDALONE_NAME]) chmodSync(join(t.bin, name), 0o777);
    chmodSync(join(t.conf, CONFLIST_NAME), 0o666);
    const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    expect([r.binary.changed, r.standalone.changed, r.conflist.changed]).toEqual([true, true, true]);
    for (const name of [BINARY_NAME, STANDALONE_NAME]) expect(statSync(join(t.bin, name)).mode & 0o7777).toBe(0o755);
    expect(statSync(join(t.conf, CONFLIST_NAME)).mode & 0o7777).toBe(0o644);
    expect(entries(t.bin)).toEqual([BINARY_NAME, STANDALONE_NAME]);
  });

  it('keeps an identical binary an admin hardened to 0750 or 0700 (owner execute, nothing writable by others), rewrites one the owner cannot execute or with a set-id bit', () => {
    const t = tempRoot();
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    const bin = join(t.bin, BINARY_NAME);
    const standalone = join(t.bin, STANDALONE_NAME);
    for (const mode of [0o750, 0o700, 0o550, 0o500]) {
      chmodSync(bin, mode);
      chmodSync(standalone, mode);
      const before = [statSync(bin).ino, statSync(standalone).ino];
      const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
      expect([mode.toString(8), r.binary.changed, r.standalone.changed]).toEqual([mode.toString(8), false, false]);
      expect([statSync(bin).mode & 0o7777, statSync(standalone).mode & 0o7777]).toEqual([mode, mode]);
      expect([statSync(bin).ino, statSync(standalone).ino]).toEqual(before);
    }
    for (const mode of [0o644, 0o655, 0o4755, 0o2750, 0o770]) {
      chmodSync(bin, mode);
      const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
      expect([mode.toString(8), r.binary.changed]).toEqual([mode.toString(8), true]);
      expect(statSync(bin).mode & 0o7777).toBe(0o755);
    }
  });

  it('rewrites the conflist when its content differs, atomically and byte for byte', () => {
    const t = tempRoot();
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    const conf = join(t.conf, CONFLIST_NAME);
    const oldInode = statSync(conf).ino;
    const custom = join(t.root, 'custom.conflist');
    const text = canonical.toString('utf8').replace('"cni0"', '"cbr7"');
    writeFileSync(custom, text);
    const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, conflist: custom });
    expect(r.conflist.changed).toBe(true);
    expect(readFileSync(conf, 'utf8')).toBe(text);
    expect(statSync(conf).ino).not.toBe(oldInode);
    expect(entries(t.conf)).toEqual([CONFLIST_NAME]);
  });

  it('removes the temporary files an interrupted install left (a 90 MB copy each), but not one a running install is filling', () => {
    const t = tempRoot();
    mkdirSync(t.bin, { recursive: true });
    mkdirSync(t.conf, { recursive: true });
    const hourAgo = new Date(Date.now() - 3600_000);
    const stale = [join(t.bin, `.${STANDALONE_NAME}.tmp-1-0badc0de`), join(t.bin, `.${BINARY_NAME}.tmp-1-0badc0de`), join(t.conf, `.${CONFLIST_NAME}.tmp-1-0badc0de`)];
    for (const f of stale) {
      writeFileSync(f, 'half a binary');
      utimesSync(f, hourAgo, hourAgo);
    }
    const busy = join(t.bin, `.${STANDALONE_NAME}.tmp-9-feedf00d`);
    writeFileSync(busy, 'being written right now');
    // someone else's dot-file that merely looks similar stays
    const foreign = join(t.bin, '.portmap.tmp-1-0badc0de');
    writeFileSync(foreign, 'not ours');
    utimesSync(foreign, hourAgo, hourAgo);
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    expect(entries(t.bin)).toEqual(['.portmap.tmp-1-0badc0de', `.${STANDALONE_NAME}.tmp-9-feedf00d`, BINARY_NAME, STANDALONE_NAME]);
    expect(entries(t.conf)).toEqual([CONFLIST_NAME]);
  });

  it('refuses a conflist that is not JSON or does not chain tsflannel, touching nothing', () => {
    const t = tempRoot();
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    const conf = join(t.conf, CONFLIST_NAME);
    for (const bad of ['{"name": "x",', '{"name":"x","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}', '[]']) {
      const file = join(t.root, 'bad.conflist');
      writeFileSync(file, bad);
      expect(() => install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, conflist: file })).toThrow(InstallError);
      expect(readFileSync(conf).equals(canonical)).toBe(true);
    }
    expect(entries(t.conf)).toEqual([CONFLIST_NAME]);
  });

  it('refuses a conflist with a plugin entry libcni cannot load (no "type", not an object): containerd would reject the whole file', () => {
    const t = tempRoot();
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    const conf = join(t.conf, CONFLIST_NAME);
    const bad = [
      // a typo in the second plugin's key: libcni says "missing 'type'" and loads no network at all
      '{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"tsflannel"},{"Type":"portmap"}]}',
      '{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"tsflannel"},{"type":""}]}',
      '{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"tsflannel"},"portmap"]}',
      '{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"tsflannel"},{"type":7}]}',
    ];
    for (const text of bad) {
      const file = join(t.root, 'bad.conflist');
      writeFileSync(file, text);
      expect(() => install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, conflist: file }), text).toThrow(/plugin 1 /);
      expect(readFileSync(conf).equals(canonical)).toBe(true);
    }
  });

  it('refuses a conflist whose tsflannel entry the plugin itself would refuse on every pod ADD, touching nothing', () => {
    const t = tempRoot();
    install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    const conf = join(t.conf, CONFLIST_NAME);
    const base = JSON.parse(canonical.toString('utf8')) as { name: string; cniVersion: string; plugins: Record<string, unknown>[] };
    const variants: [string, (c: typeof base) => void, RegExp][] = [
      ['a name with a space', (c) => (c.name = 'pod net'), /network name/],
      ['a cniVersion the plugin does not speak', (c) => (c.cniVersion = '0.2.0'), /incompatible CNI versions/],
      ['a bridge name the kernel refuses', (c) => (c.plugins[0]!.bridge = 'br/0'), /"bridge"/],
      ['a relative agentSocket', (c) => (c.plugins[0]!.agentSocket = 'cni.sock'), /agentSocket/],
      ['an MTU below IPv4\'s minimum', (c) => (c.plugins[0]!.mtu = 20), /mtu/],
    ];
    for (const [what, edit, message] of variants) {
      const c = structuredClone(base);
      edit(c);
      const file = join(t.root, 'bad.conflist');
      writeFileSync(file, JSON.stringify(c));
      expect(() => install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, conflist: file }), what).toThrow(message);
      expect(readFileSync(conf).equals(canonical)).toBe(true);
    }
  });

  it('outside a single executable, asks for --source and --forwarder instead of copying node', () => {
    const t = tempRoot();
    expect(() => install({ cniBinDir: t.bin, cniConfDir: t.conf })).toThrow(/--source/);
    expect(() => install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src })).toThrow(/--forwarder/);
    expect(existsSync(t.bin)).toBe(false);
    expect(() => install({ cniBinDir: t.bin, cniConfDir: t.conf, source: join(t.root, 'missing') })).toThrow(InstallError);
  });

  it('installs an extra plugin only where the node has none by that name', () => {
    const t = tempRoot();
    const portmap = join(t.root, 'portmap');
    writeFileSync(portmap, 'ours');
    const first = installIfMissing(portmap, t.bin);
    expect(first.changed).toBe(true);
    expect(statSync(first.path).mode & 0o777).toBe(0o755);
    writeFileSync(first.path, 'the node\'s own');
    const second = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, extraPlugins: [portmap] });
    expect(second.extraPlugins).toEqual([{ path: first.path, changed: false }]);
    expect(readFileSync(first.path, 'utf8')).toBe('the node\'s own');
  });

  it('replaces the node\'s own plugin when it does not speak the conflist\'s cniVersion (every pod ADD would fail in it), keeps one that does', () => {
    const t = tempRoot();
    mkdirSync(t.bin, { recursive: true });
    const ours = join(t.root, 'portmap');
    // the image's portmap: Debian's 1.1.1 speaks up to 1.0.0
    const oursText = answer(['0.3.1', '0.4.0', '1.0.0'], 'ours');
    writeFileSync(ours, oursText, { mode: 0o755 });
    const node = join(t.bin, 'portmap');
    // CNI plugins before 1.0 (2021) stop at 0.4.0; the built-in conflist says 1.0.0
    writeFileSync(node, answer(['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0']), { mode: 0o755 });
    let r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, extraPlugins: [ours] });
    expect(r.extraPlugins).toEqual([{ path: node, changed: true, replaced: 'does not speak cniVersion 1.0.0 (it speaks 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0)' }]);
    expect(readFileSync(node, 'utf8')).toBe(oursText);

    writeFileSync(node, answer(['0.3.1', '0.4.0', '1.0.0']), { mode: 0o755 });
    r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, extraPlugins: [ours] });
    expect(r.extraPlugins).toEqual([{ path: node, changed: false }]);
    // one that cannot even answer VERSION here (a runtime-specific build?) is the node's business
    writeFileSync(node, '#!/bin/sh\nexit 3\n', { mode: 0o755 });
    r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd, extraPlugins: [ours] });
    expect(r.extraPlugins).toEqual([{ path: node, changed: false }]);
  });

  it('keeps the node\'s own plugin, with a warning naming the version, when ours does not speak the conflist\'s cniVersion either (no downgrade, no rewrite on every run)', () => {
    const t = tempRoot();
    mkdirSync(t.bin, { recursive: true });
    const conflist = join(t.root, 'cni-conf.json');
    writeFileSync(conflist, readFileSync(new URL('../../conf/10-tsflannel.conflist', import.meta.url), 'utf8').replace('"cniVersion": "1.0.0"', '"cniVersion": "1.1.0"'));
    expect(readFileSync(conflist, 'utf8')).toContain('"cniVersion": "1.1.0"');
    const ours = join(t.root, 'portmap');
    writeFileSync(ours, answer(['0.3.1', '0.4.0', '1.0.0'], 'ours'), { mode: 0o755 });
    const node = join(t.bin, 'portmap');
    // portmap 1.1 to 1.4 speaks up to 1.0.0 as well: neither can run a 1.1.0 chain
    const nodeText = answer(['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0']);
    writeFileSync(node, nodeText, { mode: 0o755 });
    const before = statSync(node);
    for (let run = 0; run < 2; run++) {
      const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, conflist, source: t.src, forwarder: t.fwd, extraPlugins: [ours] });
      expect(r.extraPlugins).toEqual([
        {
          path: node,
          changed: false,
          warning:
            'does not speak cniVersion 1.1.0 (it speaks 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0), nor does ours (0.3.1, 0.4.0, 1.0.0): ' +
            'the conflist\'s cniVersion 1.1.0 needs a newer portmap',
        },
      ]);
    }
    expect(readFileSync(node, 'utf8')).toBe(nodeText);
    expect(statSync(node).ino).toBe(before.ino);

    // ours answers nothing here: nothing is known to be better, so the node's stays
    writeFileSync(ours, '#!/bin/sh\nexit 3\n', { mode: 0o755 });
    const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, conflist, source: t.src, forwarder: t.fwd, extraPlugins: [ours] });
    expect(r.extraPlugins[0]).toMatchObject({ path: node, changed: false });
    expect(r.extraPlugins[0]!.warning).toMatch(/nor does ours \(no VERSION answer\).*cniVersion 1\.1\.0 needs a newer portmap/);
    expect(readFileSync(node, 'utf8')).toBe(nodeText);
  });

  it('reports configs that sort first and so would win over ours', () => {
    const t = tempRoot();
    mkdirSync(t.conf, { recursive: true });
    writeFileSync(join(t.conf, '05-other.conflist'), '{}');
    writeFileSync(join(t.conf, '99-late.conf'), '{}');
    const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    expect(r.shadowedBy).toEqual(['05-other.conflist']);
  });

  it('counts a config first as libcni does: a dot-file is loaded (and sorts before digits), a directory is not', () => {
    const t = tempRoot();
    mkdirSync(join(t.conf, '00-old.conf'), { recursive: true });
    // "hidden" by renaming it: libcni (containerd, CRI-O) still loads it, and first
    writeFileSync(join(t.conf, '.10-flannel.conflist'), '{}');
    writeFileSync(join(t.conf, '05-other.json'), '{}');
    writeFileSync(join(t.conf, '01-notes.txt'), 'not a config');
    const r = install({ cniBinDir: t.bin, cniConfDir: t.conf, source: t.src, forwarder: t.fwd });
    expect(r.shadowedBy).toEqual(['.10-flannel.conflist', '05-other.json']);
  });
});

describe('the built-in conflist', () => {
  const conf = JSON.parse(defaultConflist()) as { cniVersion: string; plugins: { type: string; capabilities?: Record<string, boolean> }[] };

  it('is conf/10-tsflannel.conflist: tsflannel, then portmap with port mappings', () => {
    expect(Buffer.from(defaultConflist()).equals(canonical)).toBe(true);
    expect(conf.plugins.map((p) => p.type)).toEqual(['tsflannel', 'portmap']);
    expect(conf.plugins[1]!.capabilities).toEqual({ portMappings: true });
  });

  it('uses a cniVersion both tsflannel and the installed portmap support', ({ skip }) => {
    expect(SUPPORTED_VERSIONS).toContain(conf.cniVersion);
    const portmap = ['/opt/cni/bin/portmap', refPlugin('portmap')].find((p) => existsSync(p));
    if (!portmap) return skipOrFail(skip, 'portmap version check', `no portmap in /opt/cni/bin or ${refPlugin('portmap')}`);
    const out = execFileSync(portmap, [], { input: '{"cniVersion":"1.0.0"}', env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
    expect((JSON.parse(out) as { supportedVersions: string[] }).supportedVersions).toContain(conf.cniVersion);
  });
});

describe('tsflannel CLI (yargs)', () => {
  let out = '';
  let err = '';
  beforeEach(() => {
    out = '';
    err = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
    vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((err += String(s)), true));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    process.exitCode = 0;
  });

  it('runs install with the DaemonSet\'s flags', async () => {
    const t = tempRoot();
    const custom = join(t.root, 'cm.conflist');
    writeFileSync(custom, canonical);
    await cliMain(['install', '--cni-bin-dir', t.bin, '--cni-conf-dir', t.conf, '--conflist', custom, '--source', t.src, '--forwarder', t.fwd]);
    expect(process.exitCode ?? 0).toBe(0);
    expect(out).toContain(`installed ${join(t.bin, STANDALONE_NAME)}`);
    expect(out).toContain(`installed ${join(t.bin, BINARY_NAME)}`);
    expect(out).toContain(`wrote ${join(t.conf, CONFLIST_NAME)}`);
    expect(readFileSync(join(t.conf, CONFLIST_NAME)).equals(canonical)).toBe(true);
  });

  it('with Debian\'s real portmap (up to 1.0.0) and a 1.1.0 conflist, keeps the node\'s portmap and warns on stderr that 1.1.0 needs a newer portmap', async ({ skip }) => {
    const ours = refPlugin('portmap');
    if (!existsSync(ours)) return skipOrFail(skip, 'portmap for install --with-plugin', `no ${ours}`);
    const t = tempRoot();
    mkdirSync(t.bin, { recursive: true });
    const node = join(t.bin, 'portmap');
    const nodeText = answer(['0.3.1', '0.4.0', '1.0.0']);
    writeFileSync(node, nodeText, { mode: 0o755 });
    const custom = join(t.root, 'cm.conflist');
    writeFileSync(custom, canonical.toString('utf8').replace('"cniVersion": "1.0.0"', '"cniVersion": "1.1.0"'));
    await cliMain(['install', '--cni-bin-dir', t.bin, '--cni-conf-dir', t.conf, '--conflist', custom, '--source', t.src, '--forwarder', t.fwd, '--with-plugin', ours]);
    expect(process.exitCode ?? 0).toBe(0);
    expect(out).toContain(`kept the node's own ${node}`);
    expect(err).toMatch(/warning: the node's own .*portmap does not speak cniVersion 1\.1\.0 .*nor does ours \([^)]*1\.0\.0\): the conflist's cniVersion 1\.1\.0 needs a newer portmap/);
    expect(readFileSync(node, 'utf8')).toBe(nodeText);
  });

  it('exits 1 with the reason when install fails, 2 on bad usage', async () => {
    const t = tempRoot();
    await cliMain(['install', '--cni-bin-dir', t.bin, '--cni-conf-dir', t.conf]);
    expect(process.exitCode).toBe(1);
    expect(err).toMatch(/tsflannel: .*--source/);
    process.exitCode = 0;
    await cliMain(['instal']);
    expect(process.exitCode).toBe(2);
    process.exitCode = 0;
    await cliMain([]);
    expect(process.exitCode).toBe(2);
  });
});
