// fast-check arbitraries for the plugin fuzz suite. Every case is an
// otherwise valid CNI invocation with exactly one mutation (of the
// environment, the stdin bytes or one config field), so the outcome it must
// produce is known per command: an error with a given code, success, or, where
// the spec leaves the choice open, one of a small allowed set. The reasons
// for each expectation sit next to the generator that makes the mutation.
//
// Cases are plain data; paths of the test's fixture appear as {$fx: name}
// and are resolved when the case is materialised for one run.
import fc from 'fast-check';
import { SUPPORTED_VERSIONS, type CniVersion } from '../../src/cni/versions.js';

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION';
export const COMMANDS: readonly Command[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION'];

/** What a case may produce: success (when okAllowed) and/or an error with one of `codes`. */
export interface Outcome {
  okAllowed: boolean;
  codes: readonly number[];
}

const OK: Outcome = { okAllowed: true, codes: [] };
const err = (...codes: number[]): Outcome => ({ okAllowed: false, codes });
const either = (...codes: number[]): Outcome => ({ okAllowed: true, codes });

/** Outcome per command; `default` covers the commands not listed. */
type Table = { default: Outcome } & Partial<Record<Command, Outcome>>;

/** Files and directories of the fixture a mutation may point at. */
export type FxName =
  | 'tmp'
  | 'subnetFile'
  | 'missingFile'
  | 'regularFile'
  | 'directory'
  | 'fifo'
  | 'emptySubnet'
  | 'garbageSubnet'
  | 'badCidrSubnet'
  | 'badMtuSubnet'
  | 'nodeNetns'
  /** chattr +i: unwritable even for root (a /sys attribute where the file system cannot do that) */
  | 'immutableFile'
  | 'immutableDir'
  /** symlinks: to each other, to a path in a missing dir, to the FIFO, to /proc/self */
  | 'symlinkLoop'
  | 'danglingSymlink'
  | 'symlinkToFifo'
  | 'symlinkToProc'
  /** symlinks that lead somewhere valid: the subnet file, the data dir */
  | 'symlinkToSubnet'
  | 'symlinkToData';
export type Fixture = Record<FxName, string>;

export interface FxRef {
  $fx: FxName;
  append?: string;
}

export type Mutation =
  | { kind: 'env'; name: string; value: string | FxRef | undefined }
  | { kind: 'set'; path: readonly string[]; value: unknown }
  | { kind: 'delete'; path: readonly string[] }
  /** move a top-level key into flannel's `delegate` map with a new value */
  | { kind: 'delegate'; key: string; value: unknown }
  | { kind: 'truncate'; frac: number }
  | { kind: 'insertBytes'; frac: number; bytes: readonly number[] }
  | { kind: 'replace'; text: string }
  /** raw JSON text as the value of a first field "x" */
  | { kind: 'rawField'; raw: string }
  /** grow stdin to `total` bytes with a string field or trailing whitespace */
  | { kind: 'pad'; total: number; style: 'string' | 'whitespace' }
  /** the store's lock path is made `entry` before the call (the runner gives the case a store of its own) */
  | { kind: 'lockEntry'; entry: LockEntry }
  /**
   * Same-attachment concurrency: `adds` identical ADDs started at once, and,
   * when `del`, a DEL of the same attachment started `delayMs` after them.
   */
  | { kind: 'race'; adds: number; del: boolean; delayMs: number };

/** What `<dataDir>/<network>/lock` is made before a lockEntry case. */
export type LockEntry = 'fifo' | 'directory' | 'symlinkFifo' | 'symlinkDir' | 'loop' | 'dangling' | 'immutable' | 'devNull';

export interface FuzzCase {
  command: Command;
  /** the base config's cniVersion (a mutation may change it) */
  version: CniVersion;
  family: string;
  /** the hostile-input class the case belongs to, for the reliability figures (see CLASSES) */
  cls?: FuzzClass;
  mutation: Mutation;
  expect: Outcome;
}

/** What the base invocation of one command is about, supplied by the runner. */
export interface Target {
  network: string;
  ranges: Record<string, string>[];
  containerId: string;
  netns: string;
  ifname: string;
  /** CHECK: the result of the ADD being checked */
  prevResult?: Record<string, unknown>;
  /** GC: the attachments that must survive */
  validAttachments?: { containerID: string; ifname: string }[];
}

export interface Materialized {
  env: Record<string, string>;
  stdin: Buffer;
  /** the cniVersion the final stdin carries when it decodes to an object with a supported one */
  confVersion?: string;
}

export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const VERSION_RE = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})$/;
export const MAX_STDIN = 1 << 20;

/** Keys the plugin or the protocol layer reads; "extra field" mutations avoid them. */
const KNOWN_KEYS = new Set([
  'cniVersion', 'name', 'type', 'subnetFile', 'dataDir', 'bridge', 'mtu', 'hairpinMode', 'isDefaultGateway',
  'forceAddress', 'ipam', 'dns', 'prevResult', 'runtimeConfig', 'cni.dev/valid-attachments', 'cni.dev/attachments',
  'delegate', 'logLevel', 'logFile', 'lockTimeoutMs',
]);

// ---------------------------------------------------------------------------
// Value arbitraries

const finiteDouble = fc.double({ noNaN: true, noDefaultInfinity: true });
const smallJson = fc.jsonValue({ maxDepth: 2 });

/** Any JSON value but null (null reads as "absent", which is valid for every optional key). */
const nonNull = fc.oneof(
  fc.integer(),
  finiteDouble,
  fc.boolean(),
  fc.string({ maxLength: 12 }),
  fc.array(smallJson, { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 6 }), smallJson, { maxKeys: 3 }),
);

type Kind = 'string' | 'bool' | 'object' | 'list';
const isKind = (v: unknown, k: Kind): boolean =>
  k === 'string'
    ? typeof v === 'string'
    : k === 'bool'
      ? typeof v === 'boolean'
      : k === 'list'
        ? Array.isArray(v)
        : typeof v === 'object' && v !== null && !Array.isArray(v);
const wrongType = (k: Kind) => nonNull.filter((v) => !isKind(v, k));
/** Non-null values that are not an integer in [min, max]. */
const notIntIn = (min: number, max: number) =>
  fc.oneof(
    nonNull.filter((v) => typeof v !== 'number'),
    fc.integer({ min: -(2 ** 31), max: min - 1 }),
    fc.integer({ min: max + 1, max: 2 ** 31 }),
    fc.constantFrom(min - 0.5, max + 0.5, 1e300, -1e300, 2 ** 53, -(2 ** 53), 0.1, -0),
    finiteDouble.filter((d) => !Number.isInteger(d) || d < min || d > max),
  );

/** Environment values cannot hold NUL. */
const envString = (max: number) => fc.string({ maxLength: max, unit: 'binary' }).filter((s) => !s.includes('\0'));
const repeat = (ch: string, min: number, max: number) => fc.integer({ min, max }).map((n) => ch.repeat(n));

const invalidName = fc.oneof(
  fc.constantFrom(
    '.', '..', '../x', '../../etc', '../../../../tmp/tsfevil', '/tmp/tsfevil', 'a/b', 'a/../../b', '.hidden', '-lead',
    '_lead', 'a b', 'a\\b', 'a\tb', 'a\nb', 'ä', 'a;b', '$(id)', '`id`', 'a\u0000b', 'a\u0085b', 'x%2f..',
  ),
  fc.string({ minLength: 1, maxLength: 20, unit: 'binary' }).filter((s) => !NAME_RE.test(s)),
);
/** Container IDs the environment may carry that are invalid (never NUL: the kernel cannot pass it). */
const invalidContainerId = fc.oneof(
  invalidName.filter((s) => !s.includes('\0')),
  envString(20).filter((s) => s !== '' && !NAME_RE.test(s)),
  repeat('c', 1025, 100_000),
);
const forbiddenInIfname = ['/', ':', ' ', '\t', '\n', '\r', '\v', '\f', '\u0085', '\u00a0', '\u1680', '\u2000', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000'];
const invalidIfname = fc.oneof(
  fc.constantFrom('.', '..', 'eth/0', 'eth:0', 'eth 0', ' eth0', 'eth0 ', '/', ':', '../x', '/etc', 'éééééééé'),
  fc
    .tuple(fc.stringMatching(/^[a-z0-9]{0,6}$/), fc.constantFrom(...forbiddenInIfname), fc.stringMatching(/^[a-z0-9]{0,6}$/))
    .map(([a, bad, b]) => `${a}${bad}${b}`),
  repeat('e', 16, 300),
  repeat('é', 8, 40),
);
const invalidBridge = fc.oneof(invalidIfname, fc.constant(''));

/** Subnets no reading of which is a valid CIDR for a range. */
const badCidr = fc.constantFrom(
  '', 'abc', '10.0.0.0', '10.0.0.0/33', '256.0.0.0/8', '10.0.0.1/24', '10.0.0.0/31', '10.0.0.0/32', '10.0.0.0/-1',
  '10.0.0.0/024', '10.0.0.0/ 24', ' 10.0.0.0/24', '::/129', '10.0.0.0/24/1', '1.2.3/24', '010.0.0.0/8',
);

// ---------------------------------------------------------------------------
// Families. Each gives a mutation and the outcome per command.

interface Gen {
  family: string;
  mutation: Mutation;
  table: Table;
  cls?: FuzzClass;
  /** the commands the family applies to (default all) */
  only?: readonly Command[];
}

const fam = (family: string, table: Table) => (mutation: Mutation): Gen => ({ family, mutation, table });

/**
 * The hostile-input classes of issue 11, counted apart in the fuzz summary
 * (the reliability figures): same-attachment races, paths from the config
 * that are FIFOs, directories, /proc or /sys entries, symlinks or unwritable,
 * names with `%`, and oversize string values.
 */
export const CLASSES = [
  'race.sameIdAdds',
  'race.addDel',
  'path.fifo',
  'path.directory',
  'path.procSys',
  'path.symlink',
  'path.unwritable',
  'name.percent',
  'value.oversize',
] as const;
export type FuzzClass = (typeof CLASSES)[number];
const inClass = (cls: FuzzClass, g: Gen, only?: readonly Command[]): Gen => ({ ...g, cls, ...(only ? { only } : {}) });

/** ADD, CHECK and DEL validate the per-attachment variables; GC, STATUS and VERSION never read them. */
const perAttachment = (o: Outcome, del: Outcome = o): Table => ({ default: OK, ADD: o, CHECK: o, DEL: del });
/** Config errors hit every command that decodes stdin; VERSION ignores stdin. */
const onConfig = (o: Outcome, overrides: Partial<Record<Command, Outcome>> = {}): Table => ({ default: o, VERSION: OK, ...overrides });

const env = (name: string, value: fc.Arbitrary<string | FxRef | undefined>) => value.map((v) => ({ kind: 'env', name, value: v }) as Mutation);
const set = (path: readonly string[], value: fc.Arbitrary<unknown>) => value.map((v) => ({ kind: 'set', path, value: v }) as Mutation);

const families: { weight: number; arbitrary: fc.Arbitrary<Gen> }[] = [
  // --- environment ---
  {
    // Spec: unknown CNI_COMMAND is an invalid environment (4). An empty one
    // makes bin/tsflannel the node tool (like the Go skel's "about" text),
    // so it is not a CNI case.
    weight: 3,
    arbitrary: env(
      'CNI_COMMAND',
      fc.oneof(
        fc.constantFrom('add', 'del', 'Add', 'ADD ', ' ADD', 'DELETE', 'CHECKS', 'VERSION\n', 'STATUS\t', 'gc', 'GET', '0', 'ADD;DEL'),
        envString(40).filter((s) => s !== '' && !(COMMANDS as readonly string[]).includes(s)),
      ),
    ).map(fam('env.command.unknown', { default: err(4) })),
  },
  {
    // A missing container ID is 4 from the plugin (the Go skel's "required
    // env variables missing") and 3 from libcni's own check; either is right.
    weight: 2,
    arbitrary: fc.constantFrom(undefined, '').map((v) => fam('env.containerId.missing', perAttachment(err(3, 4)))({ kind: 'env', name: 'CNI_CONTAINERID', value: v })),
  },
  {
    // CNI_NETNS is optional for DEL (containerd's second DEL has none).
    weight: 2,
    arbitrary: fc.constantFrom(undefined, '').map((v) => fam('env.netns.missing', perAttachment(err(4), OK))({ kind: 'env', name: 'CNI_NETNS', value: v })),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom(undefined, '').map((v) => fam('env.ifname.missing', perAttachment(err(4)))({ kind: 'env', name: 'CNI_IFNAME', value: v })),
  },
  {
    // ADD/CHECK require CNI_PATH as the Go skel does. For DEL, GC and STATUS
    // the spec calls it optional (GC lists it as required, the skel requires
    // it everywhere): success or 4 are both defensible there.
    weight: 2,
    arbitrary: fc
      .constantFrom(undefined, '')
      .map((v) => fam('env.path.missing', { default: either(4), ADD: err(4), CHECK: err(4), VERSION: OK })({ kind: 'env', name: 'CNI_PATH', value: v })),
  },
  { weight: 4, arbitrary: env('CNI_CONTAINERID', invalidContainerId).map(fam('env.containerId.invalid', perAttachment(err(4)))) },
  { weight: 4, arbitrary: env('CNI_IFNAME', invalidIfname).map(fam('env.ifname.invalid', perAttachment(err(4)))) },
  {
    // Not a network namespace: ADD/CHECK must refuse (4); DEL must succeed
    // since the namespace may already be gone.
    weight: 4,
    arbitrary: env(
      'CNI_NETNS',
      fc.constantFrom<string | FxRef>(
        { $fx: 'missingFile' },
        { $fx: 'regularFile' },
        { $fx: 'directory' },
        { $fx: 'fifo' },
        { $fx: 'subnetFile' },
        { $fx: 'regularFile', append: '/x' },
        '/dev/null',
        '/dev/zero',
        '/proc/self/ns/mnt',
        '/proc/self/ns/uts',
        'relative/netns',
        'netns',
      ),
    ).map(fam('env.netns.notNetns', perAttachment(err(4), OK))),
  },
  {
    // The plugin's own namespace: 8, as the Go skel answers.
    weight: 2,
    arbitrary: env('CNI_NETNS', fc.constantFrom<string | FxRef>('/proc/self/ns/net', '/proc/thread-self/ns/net', { $fx: 'nodeNetns' })).map(
      fam('env.netns.own', perAttachment(err(8))),
    ),
  },
  { weight: 1, arbitrary: env('CNI_NETNS', repeat('n', 4097, 30_000).map((s) => `/${s}`)).map(fam('env.netns.overlong', perAttachment(err(4)))) },
  {
    // A pair that is not exactly KEY=VALUE is 4 for every command but VERSION.
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.array(fc.tuple(fc.stringMatching(/^[A-Za-z0-9_]{1,10}$/), fc.stringMatching(/^[^;=\0]{0,10}$/)), { maxLength: 4 }),
        fc.oneof(fc.constantFrom('', 'noequals', 'a=b=c', '=v', '=', '=='), fc.stringMatching(/^[^;=\0]{1,12}$/)),
        fc.nat(),
      )
      .map(([pairs, bad, at]) => {
        const parts = pairs.map(([k, v]) => `${k}=${v}`);
        parts.splice(at % (parts.length + 1), 0, bad);
        const value = parts.join(';');
        return value === '' ? ';' : value;
      })
      .map((v) => fam('env.args.malformed', { default: err(4), VERSION: OK })({ kind: 'env', name: 'CNI_ARGS', value: v })),
  },
  {
    weight: 1,
    arbitrary: env('CNI_ARGS', repeat('a', 65_537, 100_000).map((s) => `K=${s}`)).map(fam('env.args.overlong', { default: err(4), VERSION: OK })),
  },
  {
    // A malformed requested address (host-local's IP=, args.cni.ips,
    // runtimeConfig.ips) fails ADD, the only verb that allocates: 4 from the
    // environment, 7 from the config. The others never read them.
    weight: 2,
    arbitrary: fc.oneof(
      env('CNI_ARGS', fc.constantFrom('IgnoreUnknown=1;IP=10.244.1.300', 'IP=fd00::1::2', 'IP=10.244.1.9,', 'IP=abc', 'IP=10.244.1.9/99')).map(
        fam('env.args.requestedIp', { default: OK, ADD: err(4) }),
      ),
      set(['args'], fc.constantFrom<unknown>({ cni: { ips: ['x'] } }, { cni: { ips: '10.244.1.9' } }, { cni: { ips: [5] } })).map(
        fam('args.cni.ips.invalid', { default: OK, ADD: err(7) }),
      ),
      set(['runtimeConfig'], fc.constantFrom<unknown>({ ips: ['10.244.1.9', 'fd00::zz'] }, { ips: 7 })).map(
        fam('runtimeConfig.ips.invalid', { default: OK, ADD: err(7) }),
      ),
    ),
  },
  {
    // What CRI runtimes send (IgnoreUnknown=1 first or not, any order): valid.
    // Unknown keys without IgnoreUnknown are an error for Go's LoadArgs but
    // the spec says nothing; tsflannel ignores them. Both are allowed.
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.shuffledSubarray(['K8S_POD_NAMESPACE=default', 'K8S_POD_NAME=web-0', 'K8S_POD_INFRA_CONTAINER_ID=abc', 'K8S_POD_UID=1-2-3', 'FOO=bar'], {
          minLength: 1,
        }),
        fc.boolean(),
      )
      .map(([pairs, ignore]) => {
        const value = (ignore ? ['IgnoreUnknown=1', ...pairs] : pairs).join(';');
        const unknown = !ignore && pairs.includes('FOO=bar');
        return fam('env.args.valid', { default: unknown ? either(4) : OK, VERSION: OK })({ kind: 'env', name: 'CNI_ARGS', value });
      }),
  },
  { weight: 1, arbitrary: env('CNI_PATH', repeat('p', 65_537, 100_000)).map(fam('env.path.overlong', { default: err(4), VERSION: OK })) },
  {
    // CNI_PATH is a search list; odd characters in it are not an error.
    weight: 1,
    arbitrary: env('CNI_PATH', envString(60)).map(fam('env.path.odd', { default: OK, ADD: either(4), CHECK: either(4) })),
  },

  // --- stdin bytes ---
  { weight: 4, arbitrary: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }).map((frac) => fam('stdin.truncated', onConfig(err(6)))({ kind: 'truncate', frac })) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.constantFrom([0xff], [0xfe], [0xc3], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80]),
      )
      .map(([frac, bytes]) => fam('stdin.nonUtf8', onConfig(err(6)))({ kind: 'insertBytes', frac, bytes })),
  },
  {
    weight: 2,
    arbitrary: fc
      .oneof(
        fc.constantFrom('[]', '[{}]', 'null', 'true', '0', '"x"', '1e400', '{}{}', '{} {}', '{"a":1}x', '{,}', "{'a':1}", '{"a":1,}', 'NaN', '\u0000'),
        fc.jsonValue({ maxDepth: 2 }).filter((v) => typeof v !== 'object' || v === null || Array.isArray(v)).map((v) => JSON.stringify(v)),
      )
      .map((text) => fam('stdin.notObject', onConfig(err(6)))({ kind: 'replace', text })),
  },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '\n', '\t \r\n').map((text) => fam('stdin.empty', onConfig(err(6)))({ kind: 'replace', text })) },
  {
    // Deeper than the decoder's cap of 64: refused as undecodable before JSON.parse.
    weight: 3,
    arbitrary: fc
      .tuple(fc.integer({ min: 65, max: 50_000 }), fc.constantFrom('array', 'object', 'unbalanced'))
      .map(([n, shape]) => {
        const raw = shape === 'array' ? '['.repeat(n) + ']'.repeat(n) : shape === 'object' ? '{"a":'.repeat(n) + '1' + '}'.repeat(n) : '['.repeat(n);
        return fam('stdin.deep', onConfig(err(6)))({ kind: 'rawField', raw });
      }),
  },
  {
    // Legal nesting in an unknown field is just an unknown field.
    weight: 1,
    arbitrary: fc.integer({ min: 1, max: 40 }).map((n) => fam('stdin.nested', { default: OK })({ kind: 'rawField', raw: '['.repeat(n) + ']'.repeat(n) })),
  },
  {
    // Over 1 MiB is refused (6) while reading stdin. VERSION ignores its
    // stdin in the Go skel; refusing or answering are both fine there.
    weight: 2,
    arbitrary: fc
      .tuple(fc.integer({ min: MAX_STDIN + 1, max: 3 * MAX_STDIN }), fc.constantFrom<'string' | 'whitespace'>('string', 'whitespace'))
      .map(([total, style]) => fam('stdin.oversize', { default: err(6), VERSION: either(6) })({ kind: 'pad', total, style })),
  },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: MAX_STDIN - 8192, max: MAX_STDIN })
      .map((total) => fam('stdin.nearLimit', { default: OK })({ kind: 'pad', total, style: 'string' })),
  },

  // --- cniVersion ---
  { weight: 2, arbitrary: set(['cniVersion'], wrongType('string')).map(fam('cniVersion.wrongType', onConfig(err(6)))) },
  {
    // No version means 0.1.0, which the plugin does not speak: 1.
    weight: 2,
    arbitrary: fc
      .constantFrom<Mutation>({ kind: 'delete', path: ['cniVersion'] }, { kind: 'set', path: ['cniVersion'], value: null }, { kind: 'set', path: ['cniVersion'], value: '' })
      .map(fam('cniVersion.missing', onConfig(err(1)))),
  },
  {
    weight: 3,
    arbitrary: set(
      ['cniVersion'],
      fc.oneof(
        fc.constantFrom('0.1.0', '0.2.0', '0.3.2', '0.4.1', '1.0.1', '1.1.1', '1.2.0', '2.0.0', '10.0.0'),
        fc.tuple(fc.nat(20), fc.nat(20), fc.nat(20)).map((t) => t.join('.')),
      ).filter((v) => !(SUPPORTED_VERSIONS as readonly string[]).includes(v)),
    ).map(fam('cniVersion.unsupported', onConfig(err(1)))),
  },
  {
    // Not MAJOR.MINOR.PATCH: the Go skel answers 1 (it cannot be a version it
    // supports), tsflannel 7 (a malformed field); the spec does not choose.
    weight: 2,
    arbitrary: set(
      ['cniVersion'],
      fc.oneof(
        fc.constantFrom('1.0', 'v1.0.0', '1.0.0-rc1', ' 1.0.0', '1.0.0 ', '01.0.0', '1..0', 'latest', '1.0.0.0', '1.1.0\n'),
        fc.string({ maxLength: 12 }).filter((s) => s !== '' && !VERSION_RE.test(s)),
      ),
    ).map(fam('cniVersion.malformed', onConfig(err(1, 7)))),
  },
  {
    // CHECK needs 0.4.0+, GC and STATUS 1.1.0: older configs get 1. The
    // same versions are fine for ADD and DEL.
    weight: 3,
    arbitrary: fc.constantFrom('0.3.0', '0.3.1', '0.4.0', '1.0.0').map((v) =>
      fam('cniVersion.tooOldForCommand', {
        default: OK,
        CHECK: v.startsWith('0.3') ? err(1) : OK,
        GC: err(1),
        STATUS: err(1),
      })({ kind: 'set', path: ['cniVersion'], value: v }),
    ),
  },

  // --- name and type ---
  {
    weight: 5,
    arbitrary: fc
      .oneof(
        fc.constant<Mutation>({ kind: 'delete', path: ['name'] }),
        set(['name'], fc.oneof(fc.constant(''), fc.constant(null), wrongType('string'), invalidName, repeat('n', 129, 100_000))),
      )
      .map(fam('name.invalid', onConfig(err(7)))),
  },
  {
    weight: 2,
    arbitrary: fc
      .oneof(
        fc.constant<Mutation>({ kind: 'delete', path: ['type'] }),
        set(['type'], fc.oneof(fc.constantFrom('', null, '../bin/sh', '/usr/bin/x', 'a\\b', 'a\u0000b'), wrongType('string'), repeat('t', 256, 5000))),
      )
      .map(fam('type.invalid', onConfig(err(7)))),
  },

  // --- tsflannel's own fields ---
  {
    weight: 8,
    arbitrary: fc
      .oneof(
        ...(['subnetFile', 'dataDir', 'bridge', 'logLevel', 'logFile'] as const).map((k) => set([k], wrongType('string'))),
        ...(['hairpinMode', 'isDefaultGateway', 'forceAddress'] as const).map((k) => set([k], wrongType('bool'))),
        set(['mtu'], notIntIn(68, 65535)),
        set(['lockTimeoutMs'], notIntIn(100, 600_000)),
        ...(['delegate', 'ipam', 'dns'] as const).map((k) => set([k], wrongType('object'))),
        set(['ipam', 'dataDir'], wrongType('string')),
        set(['ipam', 'ranges'], wrongType('list')),
        set(['ipam', 'routes'], wrongType('list')),
        ...(['nameservers', 'search', 'options'] as const).map((k) => set(['dns', k], wrongType('list'))),
        set(['dns', 'domain'], wrongType('string')),
      )
      .map(fam('field.wrongType', onConfig(err(7)))),
  },
  {
    // flannel's delegate map is read like top-level keys.
    weight: 3,
    arbitrary: fc
      .oneof(
        ...(['subnetFile', 'dataDir', 'bridge', 'logLevel'] as const).map((k) => wrongType('string').map((value) => ({ key: k, value }))),
        ...(['hairpinMode', 'isDefaultGateway', 'forceAddress'] as const).map((k) => wrongType('bool').map((value) => ({ key: k, value }))),
        notIntIn(68, 65535).map((value) => ({ key: 'mtu', value })),
      )
      .map(({ key, value }) => fam('delegate.wrongType', onConfig(err(7)))({ kind: 'delegate', key, value })),
  },
  {
    weight: 6,
    arbitrary: fc
      .oneof(
        ...(['subnetFile', 'dataDir', 'logFile'] as const).map((k) =>
          set([k], fc.constantFrom('', 'rel', './x', '../x', 'C:\\x', 'x/y', '/a\u0000b', '~/x')),
        ),
        set(['ipam', 'dataDir'], fc.constantFrom('', 'rel', '../x')),
        set(['bridge'], invalidBridge),
        set(['logLevel'], fc.string({ maxLength: 10 }).filter((s) => !['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(s))),
        set(['mtu'], notIntIn(68, 65535)),
        set(['lockTimeoutMs'], notIntIn(100, 600_000)),
      )
      .map(fam('field.badValue', onConfig(err(7)))),
  },
  {
    // The subnet file is read by ADD and CHECK (missing: 5 with a hint; not
    // a regular file or unparsable: 7) and STATUS (50: not ready). DEL and
    // GC must work without it.
    weight: 5,
    arbitrary: fc
      .oneof(
        fc.constantFrom<FxRef>({ $fx: 'missingFile' }, { $fx: 'regularFile', append: '/x' }).map((v) => ({ v, code: 5 })),
        fc.integer({ min: 256, max: 2000 }).map((n) => ({ v: { $fx: 'tmp', append: `/${'s'.repeat(n)}` } as FxRef, code: 5 })),
        fc
          .constantFrom<FxRef | string>(
            { $fx: 'directory' },
            { $fx: 'fifo' },
            { $fx: 'emptySubnet' },
            { $fx: 'garbageSubnet' },
            { $fx: 'badCidrSubnet' },
            { $fx: 'badMtuSubnet' },
            { $fx: 'regularFile' },
            '/dev/null',
          )
          .map((v) => ({ v, code: 7 })),
      )
      .map(({ v, code }) =>
        fam('subnetFile.unusable', { default: OK, ADD: err(code), CHECK: err(code), STATUS: err(50) })({ kind: 'set', path: ['subnetFile'], value: v }),
      ),
  },
  {
    // A store directory that cannot be created: 5 from every command that
    // opens the store. STATUS may call that "not available" (50) or report
    // the I/O failure itself (5); the spec only defines 50/51 as reasons.
    weight: 3,
    arbitrary: fc
      .tuple(
        fc.constantFrom<string[]>(['dataDir'], ['ipam', 'dataDir']),
        fc.oneof(
          fc.constantFrom<FxRef>({ $fx: 'regularFile' }, { $fx: 'regularFile', append: '/sub' }, { $fx: 'fifo' }),
          fc.integer({ min: 256, max: 1000 }).map((n): FxRef => ({ $fx: 'tmp', append: `/${'d'.repeat(n)}` })),
        ),
      )
      .map(([path, v]) =>
        fam('dataDir.unusable', { default: err(5), STATUS: err(5, 50), VERSION: OK })({ kind: 'set', path, value: v }),
      ),
  },
  {
    // Ranges of the wrong shape: the config parser refuses them for every command.
    weight: 3,
    arbitrary: set(
      ['ipam', 'ranges'],
      fc.constantFrom<unknown>(
        [[]],
        [5],
        [[5]],
        [['x']],
        [[{}]],
        [[null]],
        [[{ subnet: '10.244.1.0/24', rangeStart: 5 }]],
      ),
    ).map(fam('ipam.ranges.invalid', onConfig(err(7)))),
  },
  {
    // Well-formed ranges no allocator accepts: ADD, CHECK and STATUS refuse
    // them (7); DEL and GC read no ranges, so an edit since the ADD never
    // stops a cleanup.
    weight: 3,
    arbitrary: set(
      ['ipam', 'ranges'],
      fc.oneof(
        fc.constantFrom<unknown>(
          [],
          [[{ subnet: '10.244.1.0/24', rangeStart: '10.245.0.1' }]],
          [[{ subnet: '10.244.1.0/24', rangeStart: '10.244.1.100', rangeEnd: '10.244.1.50' }]],
          [[{ subnet: '10.244.1.0/24', gateway: 'x' }]],
          [[{ subnet: '10.244.1.0/24', gateway: '10.9.9.9' }]],
          [[{ subnet: '10.244.1.0/24' }, { subnet: 'fd00::/64' }]],
          [[{ subnet: '10.244.1.0/24' }], [{ subnet: '10.244.1.0/25' }]],
          [[{ subnet: '10.244.1.0/24' }, { subnet: '10.244.1.128/25' }]],
        ),
        badCidr.map((subnet) => [[{ subnet }]]),
        fc.integer({ min: 2, max: 20_000 }).map((n) => Array.from({ length: n }, () => [{ subnet: '10.244.1.0/24' }])),
        // (Up to 3000 distinct ranges keeps each case quick; the overlap check's
        // speed on 40,000 ranges is tested in test/unit/ipam/range.test.ts.)
        fc.integer({ min: 1, max: 3000 }).map((n) => [Array.from({ length: n }, (_, i) => ({ subnet: `10.${i >> 8}.${i & 255}.0/24` })), [{ subnet: 'abc' }]]),
      ),
    ).map(fam('ipam.ranges.unusable', onConfig(err(7), { DEL: OK, GC: OK }))),
  },
  {
    weight: 3,
    arbitrary: set(
      ['ipam', 'routes'],
      fc.constantFrom<unknown>(
        [5],
        ['x'],
        [[]],
        [{}],
        [{ dst: 'bad' }],
        [{ dst: 'fd00::/64', gw: '10.0.0.1' }],
        [{ dst: '10.0.0.0/33' }],
        [{ dst: 5 }],
        [{ dst: '10.0.0.0/8', gw: 5 }],
        [{ dst: '10.0.0.0/8', gw: 'garbage' }],
        [{ dst: '10.0.0.0/8', gw: '10.0.0.256' }],
        [{ dst: '10.0.0.0/8', gw: 'fd00::1' }],
      ),
    ).map(fam('ipam.routes.invalid', onConfig(err(7)))),
  },
  {
    weight: 2,
    arbitrary: fc
      .oneof(
        ...(['nameservers', 'search', 'options'] as const).map((k) => set(['dns', k], fc.constantFrom<unknown>([5], [null], [['x']], ['a', {}]))),
      )
      .map(fam('dns.invalid', onConfig(err(7)))),
  },
  {
    // prevResult is parsed for ADD and CHECK (7 when it is not a result);
    // DEL must not fail on it, GC and STATUS do not read it.
    weight: 4,
    arbitrary: set(
      ['prevResult'],
      fc.constantFrom<unknown>(
        5,
        'x',
        [],
        true,
        { ips: 'x' },
        { ips: [5] },
        { ips: [{ address: 'bad' }] },
        { ips: [{ address: '10.0.0.1' }] },
        { interfaces: 'x' },
        { interfaces: [{ name: 5 }] },
        { routes: [{ dst: 'bad' }] },
        { routes: 5 },
        { cniVersion: '9.9.9' },
        { cniVersion: 5 },
        { dns: 'x' },
        { ips: [{ address: '10.0.0.2/24', gateway: 'x' }] },
      ),
    ).map(fam('prevResult.invalid', { default: OK, ADD: err(7), CHECK: err(7) })),
  },
  { weight: 1, arbitrary: fc.constant(fam('prevResult.missing', { default: OK, CHECK: err(7) })({ kind: 'delete', path: ['prevResult'] })) },
  {
    weight: 2,
    arbitrary: set(['runtimeConfig'], wrongType('object')).map(fam('runtimeConfig.invalid', onConfig(err(7), { DEL: OK }))),
  },
  {
    // GC's list of live attachments; only GC reads it. An absent key is
    // refused rather than read as "nothing is live". (null, "nothing is
    // live", is valid and would collect the fixture's live attachment, so
    // it is not generated.)
    weight: 4,
    arbitrary: fc
      .oneof(
        fc.constant<Mutation>({ kind: 'delete', path: ['cni.dev/valid-attachments'] }),
        set(['cni.dev/valid-attachments'], wrongType('list')),
        set(
          ['cni.dev/valid-attachments'],
          fc
            .oneof(
              fc.constantFrom<unknown>(5, 'x', null, [], {}, { containerID: 'ok' }, { ifname: 'eth0' }, { containerID: 5, ifname: 'eth0' }, { containerID: 'ok', ifname: 5 }),
              invalidName.map((containerID) => ({ containerID, ifname: 'eth0' })),
              invalidIfname.map((ifname) => ({ containerID: 'ok', ifname })),
              repeat('c', 1025, 5000).map((containerID) => ({ containerID, ifname: 'eth0' })),
            )
            .map((bad) => ['$LIVE', bad]),
        ),
      )
      .map(fam('validAttachments.invalid', { default: OK, GC: err(7) })),
  },
  {
    // Unknown keys, including ones that are dangerous in JavaScript objects,
    // anywhere: every command must ignore them.
    weight: 5,
    arbitrary: fc
      .tuple(
        fc.constantFrom<readonly string[]>([], ['ipam'], ['dns'], ['runtimeConfig']),
        fc.oneof(
          fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'prototype', 'cni.dev/other', 'args', 'capabilities', 'plugins'),
          fc.string({ maxLength: 12 }),
        ),
        fc.jsonValue({ maxDepth: 3 }),
      )
      .filter(([where, key]) => where.length > 0 || !KNOWN_KEYS.has(key))
      .filter(([where, key]) => !(where[0] === 'ipam' && ['dataDir', 'ranges', 'routes'].includes(key)))
      .filter(([where, key]) => !(where[0] === 'dns' && ['nameservers', 'search', 'options', 'domain'].includes(key)))
      .map(([where, key, value]) => fam('extra.field', { default: OK })({ kind: 'set', path: [...where, key], value })),
  },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom<readonly string[]>(['hairpinMode'], ['isDefaultGateway'], ['bridge'], ['dns'], ['ipam', 'routes'], ['runtimeConfig'])
      .map((path) => fam('optional.missing', { default: OK })({ kind: 'delete', path })),
  },
];

// ---------------------------------------------------------------------------
// Hostile-input classes (issue 11). Each generator tags its cases with a
// class so the summary can count them apart.

type PathValue = { v: FxRef | string; cls: FuzzClass };
const pv = (cls: FuzzClass, ...vs: (FxRef | string)[]): PathValue[] => vs.map((v) => ({ v, cls }));

/**
 * Paths that cannot hold a store: a FIFO, a regular file, /proc and /sys
 * (where Node's recursive mkdir used to spin), symlinks that loop, dangle or
 * lead to the FIFO or /proc, an immutable directory. 5 (I/O) or 7 (refused
 * up front as configuration) from every command that opens the store;
 * STATUS may call it "not available" (50).
 */
const badDataDirs: PathValue[] = [
  ...pv('path.fifo', { $fx: 'fifo' }, { $fx: 'fifo', append: '/sub' }),
  ...pv('path.directory', { $fx: 'regularFile' }, { $fx: 'regularFile', append: '/sub' }),
  ...pv('path.procSys', '/proc', '/proc/self', '/proc/tsfnope/data', '/proc/self/net', '/sys', '/sys/kernel', '/sys/class/net', '/proc/version'),
  ...pv('path.symlink', { $fx: 'symlinkLoop' }, { $fx: 'danglingSymlink' }, { $fx: 'symlinkToFifo' }, { $fx: 'symlinkToProc' }),
  ...pv('path.unwritable', { $fx: 'immutableDir' }, { $fx: 'immutableDir', append: '/sub' }, { $fx: 'immutableFile' }),
];

/**
 * Subnet files that are not readable env files: 7 (not a regular file, or
 * nothing flannel wrote), 5 where the path itself fails (loop, dangling);
 * only ADD and CHECK read it, STATUS answers 50. None may block: a FIFO or
 * a device must be refused before it is read.
 */
const badSubnetFiles: PathValue[] = [
  ...pv('path.fifo', { $fx: 'fifo' }, { $fx: 'symlinkToFifo' }),
  ...pv('path.directory', { $fx: 'directory' }, { $fx: 'immutableDir' }),
  ...pv('path.procSys', '/dev/zero', '/dev/full'),
  ...pv('path.symlink', { $fx: 'symlinkLoop' }, { $fx: 'danglingSymlink' }, { $fx: 'symlinkToProc' }),
];

/**
 * Log files that cannot be written. Logging must never change the outcome
 * of a call (the failure is reported on stderr and the call goes on), so
 * every command answers as without a logFile; refusing the path up front as
 * configuration (7) is the other fitting answer. It must never block or spin.
 */
const badLogFiles: PathValue[] = [
  ...pv('path.fifo', { $fx: 'fifo' }, { $fx: 'symlinkToFifo' }),
  ...pv('path.directory', { $fx: 'directory' }, { $fx: 'regularFile', append: '/plugin.log' }),
  ...pv('path.procSys', '/proc/version', '/proc/tsfnope/plugin.log', '/sys/kernel/uevent_seqnum', '/sys/kernel/tsfnope/plugin.log', '/dev/full', '/proc/self'),
  ...pv('path.symlink', { $fx: 'symlinkLoop' }, { $fx: 'danglingSymlink' }, { $fx: 'symlinkToProc' }),
  ...pv('path.unwritable', { $fx: 'immutableFile' }, { $fx: 'immutableDir', append: '/plugin.log' }),
];

/**
 * A subnet file under /proc or /sys is no file flannel wrote: ADD and CHECK
 * refuse it (7); the other commands may refuse it up front as configuration
 * (7) too, as they refuse a relative path, or ignore it.
 */
const procSysSubnetFiles = ['/proc/self/status', '/proc/version', '/proc/self', '/sys/kernel', '/sys/kernel/uevent_seqnum'];

const STORE_OPENERS = { default: err(5, 7), STATUS: err(5, 7, 50), VERSION: OK } satisfies Table;
const SUBNET_READERS = (codes: number[]): Table => ({ default: OK, ADD: err(...codes), CHECK: err(...codes), STATUS: err(50, ...codes) });
const LOG_TABLE: Table = { default: either(7), VERSION: OK };

/** Lock entries: the kind of path, and whether a plugin may still use it (a symlink to a file, /dev/null, an immutable file). */
const LOCK_ENTRIES: { entry: LockEntry; cls: FuzzClass; usable: boolean }[] = [
  { entry: 'fifo', cls: 'path.fifo', usable: false },
  { entry: 'symlinkFifo', cls: 'path.fifo', usable: false },
  { entry: 'directory', cls: 'path.directory', usable: false },
  { entry: 'symlinkDir', cls: 'path.directory', usable: false },
  { entry: 'loop', cls: 'path.symlink', usable: false },
  { entry: 'dangling', cls: 'path.symlink', usable: true },
  { entry: 'devNull', cls: 'path.procSys', usable: true },
  { entry: 'immutable', cls: 'path.unwritable', usable: true },
];
const LOCK_COMMANDS: readonly Command[] = ['ADD', 'DEL', 'GC', 'STATUS'];

/** A string field of `n` characters (n from 4 KiB up to what fits in stdin with the rest of the config). */
const oversize = (ch: string) => fc.integer({ min: 4096, max: 600_000 }).map((n) => ch.repeat(n));

const hostileFamilies: { weight: number; arbitrary: fc.Arbitrary<Gen> }[] = [
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.constantFrom<string[]>(['dataDir'], ['ipam', 'dataDir']), fc.constantFrom(...badDataDirs))
      .map(([path, { v, cls }]) => inClass(cls, fam(`path.${path.join('.')}`, STORE_OPENERS)({ kind: 'set', path, value: v }))),
  },
  {
    // Leads to the real data dir: the same store, so every command works.
    weight: 1,
    arbitrary: fc
      .constantFrom<string[]>(['dataDir'], ['ipam', 'dataDir'])
      .map((path) => inClass('path.symlink', fam(`path.${path.join('.')}.valid`, { default: OK })({ kind: 'set', path, value: { $fx: 'symlinkToData' } }))),
  },
  {
    weight: 3,
    arbitrary: fc.constantFrom(...badSubnetFiles).map(({ v, cls }) => {
      const codes = typeof v === 'object' && (v.$fx === 'symlinkLoop' || v.$fx === 'danglingSymlink') ? [5, 7] : [7];
      return inClass(cls, fam('path.subnetFile', SUBNET_READERS(codes))({ kind: 'set', path: ['subnetFile'], value: v }));
    }),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(...procSysSubnetFiles)
      .map((v) =>
        inClass('path.procSys', fam('path.subnetFile', { default: either(7), ADD: err(7), CHECK: err(7), STATUS: err(7, 50), VERSION: OK })({ kind: 'set', path: ['subnetFile'], value: v })),
      ),
  },
  {
    // A symlink to the subnet file and an immutable copy of it are fine: the plugin only reads it.
    weight: 1,
    arbitrary: fc
      .constantFrom<[FxName, FuzzClass]>(['symlinkToSubnet', 'path.symlink'], ['immutableFile', 'path.unwritable'])
      .map(([name, cls]) => inClass(cls, fam('path.subnetFile.valid', { default: OK })({ kind: 'set', path: ['subnetFile'], value: { $fx: name } }))),
  },
  {
    weight: 4,
    arbitrary: fc
      .constantFrom(...badLogFiles)
      .map(({ v, cls }) => inClass(cls, fam('path.logFile', LOG_TABLE)({ kind: 'set', path: ['logFile'], value: v }))),
  },
  {
    // ADD, DEL and GC lock the store; STATUS reads it under the lock too.
    weight: 4,
    arbitrary: fc.constantFrom(...LOCK_ENTRIES).map(({ entry, cls, usable }) => {
      const o = usable ? either(5) : err(5);
      return inClass(cls, fam('path.lock', { default: o, STATUS: usable ? either(5, 50) : err(5, 50) })({ kind: 'lockEntry', entry }), LOCK_COMMANDS);
    }),
  },
  {
    // The kernel expands %d in a link name (br%d -> br0): refused as config (7) or environment (4).
    weight: 2,
    arbitrary: fc
      .constantFrom('br%d', 'cni%d', '%d', 'br%s', '%%', 'a%n', 'br%', '%')
      .map((v) => inClass('name.percent', fam('name.percent.bridge', onConfig(err(7)))({ kind: 'set', path: ['bridge'], value: v }))),
  },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom('eth%d', '%d', 'e%s', '%%', 'eth%', '%')
      .map((v) => inClass('name.percent', fam('name.percent.ifname', perAttachment(err(4)))({ kind: 'env', name: 'CNI_IFNAME', value: v }))),
  },
  {
    // Oversize values: refused with the value's usual code, and the error
    // echoes at most a bounded part of it (the runner checks the size).
    weight: 4,
    arbitrary: fc
      .oneof(
        ...(['bridge', 'name', 'type', 'logLevel'] as const).map((k) =>
          oversize(k[0]!).map((value) => fam(`oversize.${k}`, onConfig(err(7)))({ kind: 'set', path: [k], value })),
        ),
        oversize('d').map((n) => fam('oversize.dataDir', STORE_OPENERS)({ kind: 'set', path: ['dataDir'], value: `/${n}` })),
        oversize('s').map((n) => fam('oversize.subnetFile', SUBNET_READERS([5, 7]))({ kind: 'set', path: ['subnetFile'], value: `/${n}` })),
        oversize('l').map((n) => fam('oversize.logFile', LOG_TABLE)({ kind: 'set', path: ['logFile'], value: `/${n}` })),
        oversize('g').map((g) =>
          // A gateway is the allocator's concern: DEL and GC read no ranges.
          fam('oversize.gateway', onConfig(err(7), { DEL: OK, GC: OK }))({ kind: 'set', path: ['ipam', 'ranges'], value: [[{ subnet: '10.244.1.0/24', gateway: g }]] }),
        ),
        fc
          .integer({ min: 4096, max: 100_000 })
          .map((n) => fam('oversize.ifname', perAttachment(err(4)))({ kind: 'env', name: 'CNI_IFNAME', value: 'e'.repeat(n) })),
      )
      .map((g) => inClass('value.oversize', g)),
  },
  {
    // N identical ADDs of one attachment at once: one lease, one veth, N
    // identical results (or clean 11s). Up to 5, the issue's figure: they
    // queue on the attachment, and every one must still answer within the
    // per-call bound while the other workers run.
    weight: 3,
    arbitrary: fc
      .integer({ min: 2, max: 5 })
      .map((adds) => inClass('race.sameIdAdds', fam('race.sameIdAdds', { default: either(11) })({ kind: 'race', adds, del: false, delayMs: 0 }), ['ADD'])),
  },
  {
    // ADD racing DEL of the same attachment: it ends attached (the ADD won)
    // or gone, never half.
    weight: 3,
    arbitrary: fc
      .tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 400 }))
      .map(([adds, delayMs]) => inClass('race.addDel', fam('race.addDel', { default: either(11) })({ kind: 'race', adds, del: true, delayMs }), ['ADD'])),
  },
];

/** Families whose errors echo an oversize value: the runner bounds their output. */
export const BOUNDED_OUTPUT_BYTES = 4096;

const familyArb = fc.oneof(...[...families, ...hostileFamilies].map((f) => ({ weight: f.weight, arbitrary: f.arbitrary })));

/** Versions the base config may carry for a command (CHECK needs 0.4.0, GC/STATUS 1.1.0). */
function versionsFor(command: Command): readonly CniVersion[] {
  if (command === 'CHECK') return ['0.4.0', '1.0.0', '1.1.0'];
  if (command === 'GC' || command === 'STATUS') return ['1.1.0'];
  return SUPPORTED_VERSIONS;
}

export const caseArb: fc.Arbitrary<FuzzCase> = fc
  .tuple(fc.constantFrom(...COMMANDS), familyArb, fc.nat())
  .map(([anyCommand, gen, v]) => {
    const command = gen.only && !gen.only.includes(anyCommand) ? gen.only[v % gen.only.length]! : anyCommand;
    const versions = versionsFor(command);
    const c: FuzzCase = {
      command,
      version: versions[v % versions.length]!,
      family: gen.family,
      mutation: gen.mutation,
      expect: gen.table[command] ?? gen.table.default,
    };
    if (gen.cls) c.cls = gen.cls;
    return Object.defineProperty(c, fc.toStringMethod, { value: () => describeCase(c), enumerable: false });
  });

// ---------------------------------------------------------------------------
// Materialising a case

function short(v: unknown): string {
  let s: string;
  try {
    s = typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > 120 ? `${s.slice(0, 100)}...(${s.length} chars)` : s;
}

export function describeMutation(m: Mutation): string {
  switch (m.kind) {
    case 'env':
      return m.value === undefined ? `unset ${m.name}` : `${m.name}=${short(m.value)}`;
    case 'set':
      return `${m.path.join('.')} = ${short(m.value)}`;
    case 'delete':
      return `delete ${m.path.join('.')}`;
    case 'delegate':
      return `delegate.${m.key} = ${short(m.value)} (top-level ${m.key} removed)`;
    case 'truncate':
      return `stdin truncated at ${(m.frac * 100).toFixed(1)}%`;
    case 'insertBytes':
      return `bytes [${m.bytes.map((b) => b.toString(16)).join(' ')}] inserted at ${(m.frac * 100).toFixed(1)}%`;
    case 'replace':
      return `stdin = ${short(m.text)}`;
    case 'rawField':
      return `field x = ${short(m.raw)}`;
    case 'pad':
      return `stdin padded to ${m.total} bytes with ${m.style}`;
    case 'lockEntry':
      return `store lock is ${m.entry}`;
    case 'race':
      return `${m.adds} identical ADDs at once${m.del ? `, a DEL of the same attachment ${m.delayMs} ms later` : ''}`;
  }
}

export function describeCase(c: FuzzCase): string {
  const want = [c.expect.okAllowed ? 'success' : '', ...c.expect.codes.map((n) => `code ${n}`)].filter(Boolean).join(' or ');
  return `${c.command} (cniVersion ${c.version}) [${c.family}] ${describeMutation(c.mutation)} -> expect ${want}`;
}

function isFxRef(v: unknown): v is FxRef {
  return typeof v === 'object' && v !== null && '$fx' in v;
}

function resolve(v: unknown, fx: Fixture): unknown {
  if (isFxRef(v)) return fx[v.$fx] + (v.append ?? '');
  return v;
}

function setPath(obj: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let cur = obj;
  for (const key of path.slice(0, -1)) {
    const next = Object.hasOwn(cur, key) ? cur[key] : undefined;
    if (typeof next !== 'object' || next === null || Array.isArray(next)) {
      const fresh: Record<string, unknown> = {};
      Object.defineProperty(cur, key, { value: fresh, enumerable: true, writable: true, configurable: true });
      cur = fresh;
    } else cur = next as Record<string, unknown>;
  }
  // defineProperty, so "__proto__" becomes a plain own key as JSON.parse makes it.
  Object.defineProperty(cur, path[path.length - 1]!, { value, enumerable: true, writable: true, configurable: true });
}

function deletePath(obj: Record<string, unknown>, path: readonly string[]): void {
  let cur: unknown = obj;
  for (const key of path.slice(0, -1)) cur = (cur as Record<string, unknown>)[key];
  if (typeof cur === 'object' && cur !== null) delete (cur as Record<string, unknown>)[path[path.length - 1]!];
}

/** The valid config the command would get from a runtime. */
export function baseConfig(c: FuzzCase, fx: Fixture, t: Target): Record<string, unknown> {
  const conf: Record<string, unknown> = {
    cniVersion: c.version,
    name: t.network,
    type: 'tsflannel',
    subnetFile: fx.subnetFile,
    dataDir: fx.tmp + '/data',
    bridge: 'cni0',
    hairpinMode: true,
    isDefaultGateway: true,
    ipam: { ranges: [t.ranges], routes: [{ dst: '10.96.0.0/12' }] },
    dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
    runtimeConfig: {},
  };
  if (c.command === 'CHECK' && t.prevResult) conf.prevResult = t.prevResult;
  if (c.command === 'GC') conf['cni.dev/valid-attachments'] = t.validAttachments ?? [];
  return conf;
}

export function baseEnv(c: FuzzCase, t: Target): Record<string, string> {
  const env: Record<string, string> = { CNI_COMMAND: c.command, CNI_PATH: '/opt/cni/bin' };
  if (c.command === 'ADD' || c.command === 'CHECK' || c.command === 'DEL') {
    env.CNI_CONTAINERID = t.containerId;
    env.CNI_NETNS = t.netns;
    env.CNI_IFNAME = t.ifname;
  }
  return env;
}

/** The bytes and environment of one run of `c`. */
export function materialize(c: FuzzCase, fx: Fixture, t: Target): Materialized {
  const env = baseEnv(c, t);
  const conf = baseConfig(c, fx, t);
  const m = c.mutation;
  if (m.kind === 'env') {
    const v = resolve(m.value, fx);
    if (v === undefined) delete env[m.name];
    else env[m.name] = String(v);
  } else if (m.kind === 'set') {
    let value = resolve(m.value, fx);
    if (Array.isArray(value) && value[0] === '$LIVE') value = [...(t.validAttachments ?? []), ...value.slice(1)];
    setPath(conf, m.path, value);
  } else if (m.kind === 'delete') deletePath(conf, m.path);
  else if (m.kind === 'delegate') {
    delete conf[m.key];
    conf.delegate = { [m.key]: m.value };
  } else if (m.kind === 'pad' && m.style === 'string') {
    conf.padding = '';
    const overhead = Buffer.byteLength(JSON.stringify(conf));
    conf.padding = 'p'.repeat(Math.max(0, m.total - overhead));
  }

  let text = JSON.stringify(conf);
  let bytes: Buffer;
  switch (m.kind) {
    case 'truncate':
      text = text.slice(0, Math.floor(m.frac * text.length));
      bytes = Buffer.from(text);
      break;
    case 'insertBytes': {
      const b = Buffer.from(text);
      const at = Math.floor(m.frac * b.length);
      bytes = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]);
      break;
    }
    case 'replace':
      bytes = Buffer.from(m.text);
      break;
    case 'rawField':
      bytes = Buffer.from(`{"x":${m.raw},${text.slice(1)}`);
      break;
    case 'pad':
      bytes = Buffer.from(m.style === 'whitespace' ? text + ' '.repeat(Math.max(0, m.total - Buffer.byteLength(text))) : text);
      break;
    default:
      bytes = Buffer.from(text);
  }
  const out: Materialized = { env, stdin: bytes };
  const v = (conf as { cniVersion?: unknown }).cniVersion;
  if (typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v)) out.confVersion = v;
  return out;
}
