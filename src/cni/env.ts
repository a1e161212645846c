// The CNI_* environment, checked per command the way the Go skel checks it, so
// a runtime sees the same error codes from tsflannel as from the reference
// plugins. Everything past this module can trust the values.
import { CniError, ErrorCode } from './errors.js';
import { describeValue } from './validate.js';

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'GC' | 'STATUS';

export const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'];

export interface CniEnv {
  command: Command;
  /** '' for GC, STATUS and VERSION, which are not about one attachment */
  containerId: string;
  /** may be '' for DEL (containerd's second DEL), and is '' for GC/STATUS/VERSION */
  netns: string;
  ifname: string;
  args: Record<string, string>;
  /** CNI_PATH split on ':', empty entries dropped */
  path: string[];
}

/** Same rule as libcni's container IDs and network names. */
export const CNI_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export const MAX_CONTAINER_ID = 1024;
/** IFNAMSIZ is 16 including the terminating NUL. */
export const MAX_IFNAME_BYTES = 15;
export const MAX_NETNS_PATH = 4096;
export const MAX_CNI_ARGS = 64 * 1024;
export const MAX_CNI_PATH = 64 * 1024;

/** Which variables must be non-empty for each command (the Go skel's table, PATH relaxed as the spec allows). */
const REQUIRED: Record<Command, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  GC: [],
  STATUS: [],
  VERSION: [],
};

function envError(msg: string, details?: string): CniError {
  return new CniError(ErrorCode.InvalidEnvironment, msg, details);
}

/** CNI_COMMAND alone; VERSION needs nothing else from the environment. */
export function parseCommand(env: NodeJS.ProcessEnv): Command {
  const raw = env.CNI_COMMAND;
  if (raw === undefined || raw === '') throw envError('required environment variables missing: CNI_COMMAND');
  const cmd = COMMANDS.find((c) => c === raw);
  if (!cmd) throw envError(`unknown CNI_COMMAND: ${describeValue(raw)}`);
  return cmd;
}

export function validateContainerId(id: string): string {
  // An empty ID is caught as a missing variable before this; libcni's own
  // check would give code 3, kept here for callers outside parseEnv.
  if (id === '') throw new CniError(ErrorCode.UnknownContainer, 'missing container ID');
  if (id.length > MAX_CONTAINER_ID) {
    throw envError(`container ID is longer than ${MAX_CONTAINER_ID} characters`, describeValue(id));
  }
  if (!CNI_NAME_PATTERN.test(id)) throw envError('container ID has invalid characters', describeValue(id));
  return id;
}

export function validateIfname(name: string): string {
  if (name === '') throw envError('interface name is empty');
  if (Buffer.byteLength(name, 'utf8') > MAX_IFNAME_BYTES) {
    throw envError(`interface name is longer than ${MAX_IFNAME_BYTES} bytes`, describeValue(name));
  }
  if (name === '.' || name === '..') throw envError(`interface name may not be ${describeValue(name)}`);
  // \s lacks U+0085 (NEL), which Go's unicode.IsSpace, and so libcni, counts as whitespace.
  if (/[/:\s\u0085]/u.test(name)) {
    throw envError('interface name contains "/", ":" or whitespace', describeValue(name));
  }
  // The kernel expands "eth%d" to the first free ethN instead of refusing it.
  if (name.includes('%')) throw envError('interface name contains "%"', describeValue(name));
  return name;
}

function validateNetns(netns: string): string {
  if (netns.length > MAX_NETNS_PATH) throw envError(`CNI_NETNS is longer than ${MAX_NETNS_PATH} characters`);
  return netns;
}

/**
 * CNI_ARGS: "K=V" pairs joined by ';', in any order (containerd builds it from
 * a Go map). Like Go's types.LoadArgs, a pair must hold exactly one '=' and an
 * empty string means no args; unlike it, a later duplicate simply wins.
 */
export function parseCniArgs(s: string): Record<string, string> {
  // A null-prototype object so a key such as "__proto__" is plain data.
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (s === '') return out;
  if (s.length > MAX_CNI_ARGS) throw envError(`CNI_ARGS is longer than ${MAX_CNI_ARGS} characters`);
  for (const pair of s.split(';')) {
    const kv = pair.split('=');
    if (kv.length !== 2 || kv[0] === '') {
      throw envError(`CNI_ARGS: invalid pair ${describeValue(pair)}, expected KEY=VALUE`);
    }
    out[kv[0] as string] = kv[1] as string;
  }
  return out;
}

/**
 * The IgnoreUnknown convention: unknown CNI_ARGS keys are an error unless
 * IgnoreUnknown is 1/true (Kubernetes runtimes always send IgnoreUnknown=1).
 */
export function assertKnownCniArgs(args: Record<string, string>, known: readonly string[]): void {
  const ignore = args.IgnoreUnknown;
  if (ignore !== undefined && (ignore === '1' || ignore.toLowerCase() === 'true')) return;
  const unknown = Object.keys(args).filter((k) => k !== 'IgnoreUnknown' && !known.includes(k));
  if (unknown.length > 0) {
    // The reference's wording (types.LoadArgs), so runtime logs read the same.
    const shown = unknown.slice(0, 8).map((k) => describeValue(k));
    if (unknown.length > shown.length) shown.push('...');
    throw envError(`ARGS: unknown args [${shown.join(' ')}]`, 'add IgnoreUnknown=1 to CNI_ARGS to pass keys this plugin does not use');
  }
}

function parsePath(s: string): string[] {
  if (s.length > MAX_CNI_PATH) throw envError(`CNI_PATH is longer than ${MAX_CNI_PATH} characters`);
  return s.split(':').filter((p) => p !== '');
}

export function parseEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = parseCommand(env);
  const get = (name: string): string => env[name] ?? '';
  const missing = REQUIRED[command].filter((name) => get(name) === '');
  if (missing.length > 0) throw envError(`required environment variables missing: ${missing.join(', ')}`);

  // GC, STATUS and VERSION are not about one attachment; libcni sends these
  // variables empty for them, and nothing downstream should read them.
  const perAttachment = command === 'ADD' || command === 'CHECK' || command === 'DEL';
  return {
    command,
    containerId: perAttachment ? validateContainerId(get('CNI_CONTAINERID')) : '',
    netns: perAttachment ? validateNetns(get('CNI_NETNS')) : '',
    ifname: perAttachment ? validateIfname(get('CNI_IFNAME')) : '',
    args: command === 'VERSION' ? parseCniArgs('') : parseCniArgs(get('CNI_ARGS')),
    path: parsePath(get('CNI_PATH')),
  };
}
