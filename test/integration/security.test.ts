// Security properties of the plugin, checked through the real binary:
// hostile names never reach the file system, lease files are private and
// appear atomically (a writer killed at any step leaves no half lease), and
// no source file runs an external command through a shell.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { addNetns, cleanupAll, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { expectedHostVeth, spawnPlugin } from '../soak/soak.js';
import * as nl from '../../src/netlink/index.js';

const SRC = fileURLToPath(new URL('../../src', import.meta.url));
const LEASE_NAME = /^\d+\.\d+\.\d+\.\d+$/;
const haveStrace = ['/usr/bin/strace', '/bin/strace'].some((p) => existsSync(p));
const needs = { root: isRoot };

/** Every path under `root`, with type and mode. */
function tree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const st = lstatSync(p);
      out.push(`${p.slice(root.length)} ${st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other'} ${(st.mode & 0o7777).toString(8)}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}

describe.skipIf(requireOrSkip('plugin security', needs))('plugin security through the binary', () => {
  let node = '';
  let pod = '';
  let root = '';
  let base = '';
  let dataDir = '';
  let subnetFile = '';
  const evil = `tsfsec${process.pid}`;

  beforeAll(() => {
    node = addNetns('secnode');
    pod = addNetns('secpod');
    // The data dir sits a few levels deep so that "../" escapes would still
    // land inside `root`, where the tree comparison sees them.
    root = mkdtempSync(join(tmpdir(), 'tsf-sec-'));
    base = join(root, 'a', 'b');
    dataDir = join(base, 'data');
    subnetFile = join(base, 'subnet.env');
    mkdirSync(join(base, 'cwd'), { recursive: true });
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  });
  afterAll(() => {
    cleanupAll();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const conf = (name: string, extra: Record<string, unknown> = {}) =>
    JSON.stringify({ cniVersion: '1.1.0', name, type: 'tsflannel', subnetFile, dataDir, ...extra });
  const call = (env: Record<string, string>, stdin: string, wrapper?: string[]) =>
    spawnPlugin({ nodeNs: node, env: { CNI_PATH: '/opt/cni/bin', ...env }, stdin, cwd: join(base, 'cwd'), timeoutMs: 60_000, wrapper });
  const attach = (command: string, id: string, ifname = 'eth0', netns = nsPath(pod)) => ({
    CNI_COMMAND: command,
    CNI_CONTAINERID: id,
    CNI_NETNS: netns,
    CNI_IFNAME: ifname,
  });

  it('hostile network names, container IDs and ifnames never make a path outside the data dir', async () => {
    const escapes = [
      '..', '.', '../escape', '../../escape', '../../../escape', `../../../../../../../../tmp/${evil}`, `/tmp/${evil}`,
      'a/../../escape', 'x/../..', '..\\escape', '%2e%2e%2fescape', `${evil}/`, './.', 'lock/..', 'data/../../escape',
    ];
    const outsiders = [join(root, 'escape'), join(root, 'a', 'escape'), join(base, 'escape'), `/tmp/${evil}`, `/var/lib/cni/networks/${evil}`, '/escape'];
    const before = tree(root);
    const outcomes: string[] = [];
    const expectCode = async (what: string, code: number, r: Promise<{ code: number | null; stdout: string }>) => {
      const out = await r;
      const got = out.code === 1 ? (JSON.parse(out.stdout) as { code: number }).code : `exit ${out.code}`;
      if (got !== code) outcomes.push(`${what}: expected ${code}, got ${got} ${out.stdout.slice(0, 200)}`);
    };
    // Not every escape string is an invalid interface name ("..\\escape" is a
    // fine one, and ifnames never become paths); only the invalid ones are tried.
    const badIfname = (s: string) => s === '.' || s === '..' || /[/:\s]/.test(s) || Buffer.byteLength(s) > 15;
    for (const bad of escapes) {
      for (const command of ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS']) {
        const env = command === 'GC' || command === 'STATUS' ? { CNI_COMMAND: command } : attach(command, 'sec-ok');
        await expectCode(`${command} name ${JSON.stringify(bad)}`, 7, call(env, conf(bad, { 'cni.dev/valid-attachments': [] })));
      }
      // The NUL-free ones fit in an environment variable.
      for (const command of ['ADD', 'DEL', 'CHECK']) {
        await expectCode(`${command} container ID ${JSON.stringify(bad)}`, 4, call(attach(command, bad), conf('secnet')));
        if (badIfname(bad)) {
          await expectCode(`${command} ifname ${JSON.stringify(bad)}`, 4, call(attach(command, 'sec-ok', bad), conf('secnet')));
        }
      }
      await expectCode(
        `GC attachment ${JSON.stringify(bad)}`,
        7,
        call({ CNI_COMMAND: 'GC' }, conf('secnet', { 'cni.dev/valid-attachments': [{ containerID: bad, ifname: 'eth0' }] })),
      );
      if (badIfname(bad)) {
        await expectCode(
          `GC attachment ifname ${JSON.stringify(bad)}`,
          7,
          call({ CNI_COMMAND: 'GC' }, conf('secnet', { 'cni.dev/valid-attachments': [{ containerID: 'ok', ifname: bad }] })),
        );
      }
    }
    // A name with a NUL byte can only come through JSON.
    await expectCode('ADD name with NUL', 7, call(attach('ADD', 'sec-ok'), conf('sec\u0000/../../escape')));
    expect(outcomes).toEqual([]);
    // Nothing was created anywhere: not even the data dir, since every call
    // was refused before the store was opened.
    expect(tree(root)).toEqual(before);
    for (const p of outsiders) expect(existsSync(p), p).toBe(false);
    expect(nl.linkList({ netns: nsPath(node) }).map((l) => l.name)).toEqual(['lo']);
  }, 300_000);

  it('lease files are 0600 whatever the umask, hold exactly "<id>\\r\\n<ifname>", and the store holds nothing else', async () => {
    for (const [i, umask] of ['000', '022', '077'].entries()) {
      const net = `secmode${i}`;
      const id = `sec-mode-${umask}`;
      // umask is inherited from the runtime; the plugin must not depend on it.
      const wrapper = ['sh', '-c', `umask ${umask}; exec "$0" "$@"`];
      const add = await call(attach('ADD', id), conf(net), wrapper);
      expect(add.code, add.stdout + add.stderr).toBe(0);
      const store = join(dataDir, net);
      const files = readdirSync(store).sort();
      expect(files).toEqual(['10.244.3.2', 'attachments', 'last_reserved_ip.0', 'lock']);
      // The attachment's lock: a digest name, private, and nothing else there.
      const locks = readdirSync(join(store, 'attachments'));
      expect(locks).toHaveLength(1);
      expect(locks[0]).toMatch(/^[0-9a-f]{32}\.lock$/);
      expect(statSync(join(store, 'attachments', locks[0]!)).mode & 0o777).toBe(0o600);
      expect(statSync(join(store, '10.244.3.2')).mode & 0o777).toBe(0o600);
      expect(statSync(join(store, 'last_reserved_ip.0')).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(store, '10.244.3.2'), 'utf8')).toBe(`${id}\r\neth0`);
      // No one but root may write the store or read who holds which address.
      expect(statSync(store).mode & 0o022).toBe(0);
      expect((await call(attach('DEL', id), conf(net))).code).toBe(0);
      expect(readdirSync(store).filter((f) => LEASE_NAME.test(f))).toEqual([]);
    }
  });

  it.skipIf(requireOrSkip('lease atomicity under strace', { ...needs, strace: haveStrace }))('a plugin killed at any syscall on its lease file leaves no lease or a complete one, and DEL releases it', async () => {
    // strace delivers SIGKILL on entry to the first matching syscall that
    // touches the lease's path (-P), before the kernel runs it: a crash at
    // that exact step. Every syscall a writer could use is tried in turn.
    const syscalls = ['openat', 'open', 'creat', 'write', 'pwrite64', 'writev', 'pwritev', 'pwritev2', 'ftruncate', 'fsync', 'fdatasync', 'close', 'link', 'linkat', 'rename', 'renameat', 'renameat2', 'symlink', 'symlinkat'];
    const killedAt: string[] = [];
    const problems: string[] = [];
    for (const [i, sc] of syscalls.entries()) {
      const net = `secatom${i}`;
      const id = `sec-atom-${i}`;
      const lease = join(dataDir, net, '10.244.3.2');
      const wrapper = ['strace', '-f', '-qq', '-o', '/dev/null', '-P', lease, '-e', `trace=?${sc}`, '-e', `inject=?${sc}:signal=KILL`];
      const add = await call(attach('ADD', id), conf(net), wrapper);
      const store = join(dataDir, net);
      if (add.signal === 'SIGKILL' || add.code === 137) {
        killedAt.push(sc);
        for (const f of readdirSync(store).filter((n) => LEASE_NAME.test(n))) {
          const content = readFileSync(join(store, f), 'utf8');
          if (content !== `${id}\r\neth0`) problems.push(`killed at ${sc}: lease ${f} holds ${JSON.stringify(content)}`);
        }
      } else if (add.code !== 0) {
        problems.push(`${sc}: ADD neither finished nor was killed: ${add.code} ${add.stdout}`);
      }
      // The runtime DELs an ADD that did not report success; afterwards the
      // store has no lease and no temp file, and the node no veth of it.
      const del = await call(attach('DEL', id), conf(net));
      if (del.code !== 0) problems.push(`${sc}: DEL failed: ${del.stdout}`);
      const left = readdirSync(store).filter((n) => n !== 'lock' && !/^last_reserved_ip\.\d+$/.test(n));
      // The attachments directory stays, empty: DEL removed its lock file.
      if (left.includes('attachments') && readdirSync(join(store, 'attachments')).length === 0) left.splice(left.indexOf('attachments'), 1);
      if (left.length > 0) problems.push(`${sc}: after DEL the store still holds ${left.join(', ')}`);
      if (nl.linkByName(expectedHostVeth(id, 'eth0'), { netns: nsPath(node) })) problems.push(`${sc}: veth left behind`);
      if (nl.linkByName('eth0', { netns: nsPath(pod) })) problems.push(`${sc}: pod eth0 left behind`);
    }
    expect(problems).toEqual([]);
    // The injection must really have crashed the writer on its lease path.
    expect(killedAt.length, 'no syscall on the lease path was hit').toBeGreaterThan(0);
    console.log(`lease writer killed at: ${killedAt.join(', ')}`);
  }, 300_000);
});

// ---------------------------------------------------------------------------
// No shell anywhere in src/

interface Finding {
  file: string;
  line: number;
  what: string;
}

const CHILD_PROCESS = new Set(['child_process', 'node:child_process']);
const SHELL_MODULES = new Set(['execa', 'shelljs', 'zx', 'shell-quote']);
const SHELL_ALWAYS = new Set(['exec', 'execSync']);
const ARGV_FUNCS = new Set(['spawn', 'spawnSync', 'execFile', 'execFileSync', 'fork']);

/**
 * Finds every way a source file could run a command through a shell: exec /
 * execSync (always a shell), a command given as one string, a `shell`
 * option that is not literally false, and child_process loaded dynamically.
 */
export function shellFindings(file: string, text: string): Finding[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: Finding[] = [];
  const at = (node: ts.Node, what: string) => out.push({ file, line: sf.getLineAndCharacterOfPosition(node.getStart()).line + 1, what });
  const named = new Map<string, string>();
  const namespaces = new Set<string>();
  let importsChildProcess = false;
  for (const st of sf.statements) {
    if (!ts.isImportDeclaration(st) || !ts.isStringLiteral(st.moduleSpecifier)) continue;
    const from = st.moduleSpecifier.text;
    if (SHELL_MODULES.has(from)) at(st, `imports ${from}`);
    if (!CHILD_PROCESS.has(from)) continue;
    importsChildProcess = true;
    const clause = st.importClause;
    if (clause?.name) namespaces.add(clause.name.text);
    const b = clause?.namedBindings;
    if (b && ts.isNamespaceImport(b)) namespaces.add(b.name.text);
    if (b && ts.isNamedImports(b)) for (const el of b.elements) named.set(el.name.text, (el.propertyName ?? el.name).text);
  }
  const isStringy = (e: ts.Expression) => ts.isStringLiteralLike(e) || ts.isTemplateExpression(e) || (ts.isBinaryExpression(e) && e.operatorToken.kind === ts.SyntaxKind.PlusToken);
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node)) {
      const callee = node.expression;
      let fn: string | undefined;
      if (ts.isIdentifier(callee)) fn = named.get(callee.text);
      else if (ts.isPropertyAccessExpression(callee) && ts.isIdentifier(callee.expression) && namespaces.has(callee.expression.text)) fn = callee.name.text;
      if (fn && SHELL_ALWAYS.has(fn)) at(node, `${fn}() always runs a shell`);
      if (fn && ARGV_FUNCS.has(fn)) {
        const [cmd, argv] = node.arguments;
        if (!cmd) at(node, `${fn}() without a command`);
        else if (ts.isStringLiteralLike(cmd) && /\s/.test(cmd.text)) at(node, `${fn}(${JSON.stringify(cmd.text)}) looks like a command line`);
        if (fn !== 'fork' && (!argv || isStringy(argv) || ts.isObjectLiteralExpression(argv))) at(node, `${fn}() without an argument array`);
      }
      // import('node:child_process') / require('child_process') escape the import scan.
      const [first] = node.arguments;
      if ((callee.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(callee) && callee.text === 'require')) && first && ts.isStringLiteralLike(first)) {
        if (CHILD_PROCESS.has(first.text) || SHELL_MODULES.has(first.text)) at(node, `loads ${first.text} dynamically`);
      }
    }
    if (importsChildProcess && ts.isPropertyAssignment(node) && ts.isIdentifier(node.name) && node.name.text === 'shell' && node.initializer.kind !== ts.SyntaxKind.FalseKeyword) {
      at(node, `shell: ${node.initializer.getText(sf)}`);
    }
    if (importsChildProcess && ts.isShorthandPropertyAssignment(node) && node.name.text === 'shell') at(node, 'shell (shorthand)');
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sourceFiles(join(dir, d.name)) : /\.[cm]?ts$/.test(d.name) && !d.name.endsWith('.d.ts') ? [join(dir, d.name)] : [],
  );
}

describe('external commands in src/', () => {
  it('the scanner catches each kind of shell use (and accepts an argument array)', () => {
    const cases: [string, number][] = [
      [`import { exec } from 'node:child_process'; exec('ip link');`, 1],
      [`import * as cp from 'child_process'; cp.execSync('ls');`, 1],
      [`import { spawn } from 'node:child_process'; spawn('ip link show');`, 2],
      [`import { spawn as run } from 'node:child_process'; run('ip', ['link'], { shell: true });`, 1],
      [`import { execFile } from 'node:child_process'; const o = { shell: '/bin/sh' }; execFile('ip', ['link'], o);`, 1],
      [`import { execFileSync } from 'node:child_process'; execFileSync('ip', 'link show');`, 1],
      [`const cp = await import('node:child_process');`, 1],
      [`import { spawn, execFile } from 'node:child_process'; spawn('ip', ['link'], { stdio: 'pipe' }); execFile(bin, [...args], { shell: false });`, 0],
      [`const re = /x/; re.exec('exec(1)'); client.get(k).exec();`, 0],
    ];
    for (const [text, n] of cases) expect(shellFindings('case.ts', text), text).toHaveLength(n);
  });

  it('no file in src/ runs a command through a shell or as one string', () => {
    const files = sourceFiles(SRC);
    expect(files.length).toBeGreaterThan(20);
    const findings = files.flatMap((f) => shellFindings(f.slice(dirname(SRC).length + 1), readFileSync(f, 'utf8')));
    expect(findings).toEqual([]);
  });
});
