// `tsflannel install`: what the DaemonSet's init container runs on every
// node. It puts the forwarder into the CNI bin dir as `tsflannel` (the small
// static binary the runtime execs; it hands each call to the agent's socket)
// and this very executable beside it as `tsflannel-standalone` (which the
// forwarder execs when the agent is not answering), then the network config
// into the CNI conf dir, each with an atomic rename, because the runtime may
// exec the plugin or read the conf dir at any moment.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants as fsConstants,
  copyFileSync,
  chmodSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Argv } from 'yargs';
import { inSea, seaTextAsset } from '../sea/assets.js';
import { CniError } from '../cni/errors.js';
import { netConfFromObject } from '../cni/config.js';
import { parsePluginConfig } from '../plugin/config.js';

export const BINARY_NAME = 'tsflannel';
/** The standalone plugin beside the forwarder; the forwarder finds it by this name. */
export const STANDALONE_NAME = 'tsflannel-standalone';
/** The forwarder's name next to the single executable in the image (Dockerfile). */
export const FORWARDER_FILE = 'tsflannel-forward';
export const CONFLIST_NAME = '10-tsflannel.conflist';
/** The SEA asset holding conf/10-tsflannel.conflist (see scripts/package.sh). */
export const CONFLIST_ASSET = '10-tsflannel.conflist';

export interface InstallOptions {
  cniBinDir: string;
  cniConfDir: string;
  /** a conflist file to install instead of the built-in one (the ConfigMap's) */
  conflist?: string;
  /** the standalone plugin to copy; default: this executable, when it is a single executable */
  source?: string;
  /** the forwarder to install as `tsflannel`; default: tsflannel-forward beside this single executable */
  forwarder?: string;
  /**
   * other plugins the conflist chains (portmap), copied only where the node
   * has none: a node's own plugins match its runtime and are left alone
   */
  extraPlugins?: string[];
}

/**
 * A plugin the chain needs. `replaced`: why the node's own plugin of that
 * name gave way to ours; `warning`: why the node's own stays although it
 * cannot run the chain.
 */
export interface ExtraPlugin {
  path: string;
  changed: boolean;
  replaced?: string;
  warning?: string;
}

export interface InstallResult {
  /** the forwarder, <bin>/tsflannel */
  binary: { path: string; changed: boolean };
  /** the standalone plugin, <bin>/tsflannel-standalone */
  standalone: { path: string; changed: boolean };
  conflist: { path: string; changed: boolean };
  extraPlugins: ExtraPlugin[];
  /** conflists that sort before ours: a runtime uses the first one, not ours */
  shadowedBy: string[];
}

export class InstallError extends Error {
  override readonly name = 'InstallError';
}

/** The conflist shipped with this build: conf/10-tsflannel.conflist. */
export function defaultConflist(): string {
  if (inSea()) return seaTextAsset(CONFLIST_ASSET);
  return readFileSync(new URL('../../conf/10-tsflannel.conflist', import.meta.url), 'utf8');
}

/**
 * A broken file in the conf dir takes the node's pod network down, so refuse
 * anything that is not recognisably a conflist chaining tsflannel.
 */
export function checkConflist(text: string, origin: string): void {
  let conf: unknown;
  try {
    conf = JSON.parse(text);
  } catch (err) {
    throw new InstallError(`${origin} is not JSON: ${(err as Error).message}`);
  }
  const c = conf as { name?: unknown; cniVersion?: unknown; plugins?: unknown } | null;
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new InstallError(`${origin} is not a JSON object`);
  if (typeof c.name !== 'string' || c.name === '') throw new InstallError(`${origin} has no "name"`);
  if (typeof c.cniVersion !== 'string') throw new InstallError(`${origin} has no "cniVersion"`);
  if (!Array.isArray(c.plugins) || c.plugins.length === 0) throw new InstallError(`${origin} has no "plugins" list`);
  // libcni (containerd, CRI-O) refuses the whole list when any entry is not
  // an object with a "type": the node would then have no pod network at all.
  const types = c.plugins.map((p: unknown, i: number) => {
    const type = typeof p === 'object' && p !== null && !Array.isArray(p) ? (p as { type?: unknown }).type : undefined;
    if (typeof type !== 'string' || type === '') throw new InstallError(`${origin}: plugin ${i} has no "type" (the runtime would load no network from this file)`);
    return type;
  });
  const at = types.indexOf(BINARY_NAME);
  if (at < 0) throw new InstallError(`${origin} does not use the ${BINARY_NAME} plugin`);
  // The plugin's own reading of its entry, as the runtime passes it (name
  // and cniVersion from the list): a config it refuses fails every pod ADD
  // on the node, so the init container fails instead and keeps the old file.
  const entry = { ...(c.plugins[at] as Record<string, unknown>), name: c.name, cniVersion: c.cniVersion };
  try {
    parsePluginConfig(netConfFromObject(entry, 'ADD'));
  } catch (err) {
    if (!(err instanceof CniError)) throw err;
    throw new InstallError(`${origin}: the ${BINARY_NAME} plugin would refuse every pod with it: ${err.message}${err.details ? ` (${err.details})` : ''}`);
  }
}

/** The forwarder to install, or a clear refusal. */
export function resolveForwarder(forwarder: string | undefined): string {
  const path = forwarder ?? (inSea() ? join(dirname(process.execPath), FORWARDER_FILE) : undefined);
  if (path === undefined) {
    throw new InstallError(
      'not running as the single-executable tsflannel, so there is no forwarder beside it: ' +
        'pass --forwarder <path> (scripts/go-build.sh builds native/build/tsflannel-forward)',
    );
  }
  try {
    if (!statSync(path).isFile()) throw new InstallError(`forwarder ${path} is not a regular file`);
  } catch (err) {
    if (err instanceof InstallError) throw err;
    throw new InstallError(`forwarder ${path}: ${(err as Error).message}`);
  }
  return path;
}

/** The executable to install, or a clear refusal. */
export function resolveSource(source: string | undefined): string {
  const path = source ?? (inSea() ? process.execPath : undefined);
  if (path === undefined) {
    throw new InstallError(
      'not running as the single-executable tsflannel, so there is no binary to copy: ' +
        'pass --source <path to a tsflannel binary> (npm run package builds dist/tsflannel)',
    );
  }
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    throw new InstallError(`source binary ${path}: ${(err as Error).message}`);
  }
  if (!st.isFile()) throw new InstallError(`source binary ${path} is not a regular file`);
  return path;
}

function tempName(dest: string): string {
  return join(dirname(dest), `.${basename(dest)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** A temporary file older than this was left by an install that died (a running one fills its own in a second or two). */
const STALE_TEMP_MS = 10 * 60_000;

/**
 * Removes what an interrupted install (node crash, killed init container)
 * left next to `dest`: every run makes a new random temporary name, so
 * nothing else would ever reuse or delete them, and each copy of the
 * standalone is ~90 MB in the CNI bin dir.
 */
function removeStaleTemps(dest: string): void {
  const dir = dirname(dest);
  const prefix = `.${basename(dest)}.tmp-`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  const now = Date.now();
  for (const name of names) {
    if (!name.startsWith(prefix) || !/^\d+-[0-9a-f]{8}$/.test(name.slice(prefix.length))) continue;
    const path = join(dir, name);
    try {
      const st = statSync(path);
      if (st.isFile() && now - st.mtimeMs > STALE_TEMP_MS) rmSync(path, { force: true });
    } catch {
      // gone already
    }
  }
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Fills a temporary file next to `dest`, flushes it, then renames it over
 * `dest`: a reader sees the old file or the complete new one, never a part.
 */
function replaceAtomically(dest: string, fill: (tmp: string) => void, mode: number): void {
  const tmp = tempName(dest);
  try {
    fill(tmp);
    chmodSync(tmp, mode);
    fsyncPath(tmp);
    renameSync(tmp, dest);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncPath(dirname(dest));
}

function sameContent(a: string, b: string): boolean {
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    if (!sa.isFile() || !sb.isFile() || sa.size !== sb.size) return false;
    // Same size: compare bytes (90 MB reads in well under a second).
    return readFileSync(a).equals(readFileSync(b));
  } catch {
    return false;
  }
}

/**
 * Whether an identical file may stay as it is: it has the `need` bits, and
 * no one but root can change it (no group/other write, no set-id bits: the
 * runtime runs the plugin as root and trusts the config). Otherwise it is
 * rewritten, which gives it our mode again. A binary needs only owner
 * execute: the runtime runs it as root, so an admin's 0750 or 0700 is
 * stricter than ours, not broken, and must not be undone on every install.
 */
function safeMode(path: string, need: number): boolean {
  try {
    const mode = statSync(path).mode;
    return (mode & need) === need && (mode & 0o7022) === 0;
  } catch {
    return false;
  }
}

function readOrUndefined(path: string): Buffer | undefined {
  try {
    return readFileSync(path);
  } catch {
    return undefined;
  }
}

export function installBinary(source: string, binDir: string, name: string = BINARY_NAME): { path: string; changed: boolean } {
  mkdirSync(binDir, { recursive: true });
  const dest = join(binDir, name);
  removeStaleTemps(dest);
  if (sameContent(source, dest) && safeMode(dest, 0o100)) return { path: dest, changed: false };
  replaceAtomically(dest, (tmp) => copyFileSync(source, tmp, fsConstants.COPYFILE_EXCL), 0o755);
  return { path: dest, changed: true };
}

/**
 * The CNI versions a plugin says it speaks (CNI_COMMAND=VERSION), or
 * undefined when it does not answer here (a build for the host's libraries,
 * say): then nothing is known against it.
 */
function supportedVersions(path: string, cniVersion: string): string[] | undefined {
  try {
    const out = execFileSync(path, [], {
      input: JSON.stringify({ cniVersion }),
      env: { CNI_COMMAND: 'VERSION', PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    const v = (JSON.parse(out) as { supportedVersions?: unknown }).supportedVersions;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Copies a plugin the chain needs unless the node already has one by that
 * name that speaks the conflist's `cniVersion`: one that does not (CNI
 * plugins before 1.0 stop at 0.4.0) would fail every pod ADD. It is replaced
 * only when ours is known to speak that version (ours also speaks every
 * older one, so no other config breaks); when ours does not either, swapping
 * would downgrade the node's binary without fixing a single ADD, and redo it
 * on every run, so the node's stays and `warning` says what is needed.
 */
export function installIfMissing(
  source: string,
  binDir: string,
  cniVersion?: string,
): ExtraPlugin {
  const dest = join(binDir, basename(source));
  let replaced: string | undefined;
  try {
    statSync(dest);
    const speaks = cniVersion === undefined ? undefined : supportedVersions(dest, cniVersion);
    if (speaks === undefined || speaks.includes(cniVersion!)) return { path: dest, changed: false };
    replaced = `does not speak cniVersion ${cniVersion} (it speaks ${speaks.join(', ')})`;
    const oursSpeaks = supportedVersions(source, cniVersion!);
    if (!oursSpeaks?.includes(cniVersion!)) {
      const ours = oursSpeaks === undefined ? 'no VERSION answer' : oursSpeaks.join(', ');
      const warning = `${replaced}, nor does ours (${ours}): the conflist's cniVersion ${cniVersion} needs a newer ${basename(source)}`;
      return { path: dest, changed: false, warning };
    }
  } catch {
    // absent: install ours
  }
  mkdirSync(binDir, { recursive: true });
  removeStaleTemps(dest);
  replaceAtomically(dest, (tmp) => copyFileSync(source, tmp, fsConstants.COPYFILE_EXCL), 0o755);
  return replaced ? { path: dest, changed: true, replaced } : { path: dest, changed: true };
}

/** Writes the conflist only when its bytes differ, so its mtime means "changed". */
export function installConflist(text: string, confDir: string): { path: string; changed: boolean } {
  mkdirSync(confDir, { recursive: true });
  const dest = join(confDir, CONFLIST_NAME);
  removeStaleTemps(dest);
  const want = Buffer.from(text, 'utf8');
  if (readOrUndefined(dest)?.equals(want) && safeMode(dest, 0)) return { path: dest, changed: false };
  replaceAtomically(dest, (tmp) => writeFileSync(tmp, want, { flag: 'wx', mode: 0o644 }), 0o644);
  return { path: dest, changed: true };
}

/**
 * Runtimes load the first config file in lexical order, as libcni's
 * ConfFiles lists them: every non-directory with one of these extensions,
 * dot-files included (a config "hidden" by a leading dot still loads, and
 * '.' sorts before the digits).
 */
export function shadowingConfigs(confDir: string): string[] {
  let entries;
  try {
    entries = readdirSync(confDir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries
    .filter((e) => !e.isDirectory() && /\.(conflist|conf|json)$/.test(e.name) && e.name < CONFLIST_NAME)
    .map((e) => e.name)
    .sort();
}

export function install(opts: InstallOptions): InstallResult {
  const source = resolveSource(opts.source);
  const text = opts.conflist === undefined ? defaultConflist() : readConflistFile(opts.conflist);
  checkConflist(text, opts.conflist ?? 'the built-in conflist');
  const forwarder = resolveForwarder(opts.forwarder);
  const extras = (opts.extraPlugins ?? []).map((p) => resolveSource(p));
  // Binaries first: the conflist must never name a plugin that is not there
  // yet; and the standalone before the forwarder, which falls back to it.
  const standalone = installBinary(source, opts.cniBinDir, STANDALONE_NAME);
  const binary = installBinary(forwarder, opts.cniBinDir, BINARY_NAME);
  const cniVersion = (JSON.parse(text) as { cniVersion: string }).cniVersion;
  const extraPlugins = extras.map((p) => installIfMissing(p, opts.cniBinDir, cniVersion));
  const conflist = installConflist(text, opts.cniConfDir);
  return { binary, standalone, conflist, extraPlugins, shadowedBy: shadowingConfigs(opts.cniConfDir) };
}

function readConflistFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new InstallError(`cannot read conflist ${path}: ${(err as Error).message}`);
  }
}

export function installCommand(cli: Argv): Argv {
  return cli.command(
    'install',
    'install the forwarder as tsflannel and this binary as tsflannel-standalone into the CNI bin dir, and the network config (the DaemonSet init container runs this)',
    (y) =>
      y
        .option('cni-bin-dir', { type: 'string', default: '/opt/cni/bin', describe: 'where the runtime looks for CNI plugins' })
        .option('cni-conf-dir', { type: 'string', default: '/etc/cni/net.d', describe: 'where the runtime reads network configs' })
        .option('conflist', { type: 'string', describe: `conflist to install as ${CONFLIST_NAME} (default: the built-in one)` })
        .option('source', { type: 'string', describe: 'standalone plugin to copy as tsflannel-standalone (default: this executable)' })
        .option('forwarder', { type: 'string', describe: `forwarder to copy as tsflannel (default: ${FORWARDER_FILE} beside this executable)` })
        .option('with-plugin', {
          type: 'string',
          array: true,
          default: [] as string[],
          describe: 'also install this plugin binary (e.g. portmap), but only where the bin dir has none by that name (or one that does not speak the conflist\'s cniVersion)',
        }),
    (args) => {
      const opts: InstallOptions = { cniBinDir: args['cni-bin-dir'], cniConfDir: args['cni-conf-dir'] };
      if (args.conflist !== undefined) opts.conflist = args.conflist;
      if (args.source !== undefined) opts.source = args.source;
      if (args.forwarder !== undefined) opts.forwarder = args.forwarder;
      if (args['with-plugin'].length > 0) opts.extraPlugins = args['with-plugin'];
      const result = install(opts);
      const say = (line: string) => process.stdout.write(`${line}\n`);
      say(`${result.standalone.changed ? 'installed' : 'unchanged'} ${result.standalone.path}`);
      say(`${result.binary.changed ? 'installed' : 'unchanged'} ${result.binary.path}`);
      for (const p of result.extraPlugins) {
        say(p.replaced ? `replaced the node's own ${p.path}: it ${p.replaced}` : `${p.changed ? 'installed' : 'kept the node\'s own'} ${p.path}`);
        if (p.warning) process.stderr.write(`tsflannel: warning: the node's own ${p.path} ${p.warning}; every pod ADD fails in it\n`);
      }
      say(`${result.conflist.changed ? 'wrote' : 'unchanged'} ${result.conflist.path}`);
      if (result.shadowedBy.length > 0) {
        process.stderr.write(
          `tsflannel: warning: ${result.shadowedBy.join(', ')} in ${opts.cniConfDir} sort before ${CONFLIST_NAME}; ` +
            'the runtime uses the first config, so remove them for tsflannel to take effect\n',
        );
      }
    },
  );
}
