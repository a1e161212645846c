// tsflanneld's command line, flannel's flag names, defaults and environment
// variables (FLANNELD_<FLAG_IN_UPPER_SNAKE>, a flag on the command line wins)
// where flannel has one. Groups: interface, subnet manager, etcd security,
// traffic rules, endpoints, logging.
import { availableParallelism, hostname } from 'node:os';
import yargs from 'yargs';
import { DEFAULT_SUBNET_FILE } from '../flannel/subnet-env.js';
import { parseIp } from '../net/ip.js';
import { VERSION } from '../version.js';
import type { EtcdSecurity } from './subnet/etcd-client.js';

export type LogFormat = 'json' | 'text';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

export type { EtcdSecurity };
import { DEFAULT_CNI_SOCKET } from './cni-frame.js';

export interface AgentOptions {
  // interface selection
  iface: string[];
  ifaceRegex: string[];
  /** pick the interface and address the kernel routes this IP through */
  ifaceCanReach?: string;
  publicIP?: string;
  /** --public-ipv6: the IPv6 address advertised to other nodes */
  publicIPv6?: string;
  // subnet manager
  kubeSubnetMgr: boolean;
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcd: EtcdSecurity;
  subnetFile: string;
  netConfigPath: string;
  nodeName: string;
  kubeconfig?: string;
  kubeApiUrl?: string;
  kubeAnnotationPrefix: string;
  /** set the Node's NetworkUnavailable condition to False once ready (kube mode) */
  setNodeNetworkUnavailable: boolean;
  /** a Node watch silent (no event, no bookmark) this long is presumed dead and opened again; 0 = never (kube mode) */
  kubeWatchIdleTimeoutSeconds: number;
  /** etcd lease TTL; flannel uses 24 h */
  leaseTtlSeconds: number;
  /** seconds to keep programmed peers when our own lease vanished from the store (etcd wiped) */
  storeLossGraceSeconds: number;
  /** remove the masquerade/forward rules and exit (uninstall); a stopping agent keeps them */
  cleanup: boolean;
  /** renew the etcd lease this many minutes before it expires */
  subnetLeaseRenewMarginMinutes: number;
  // traffic rules
  ipMasq: boolean;
  ipMasqFullyRandomDisable: boolean;
  iptablesForwardRules: boolean;
  ipBlackholeRoute: boolean;
  /** seconds between forced reconciliations of kernel state and rules */
  resyncSeconds: number;
  // endpoints
  healthzIP: string;
  healthzPort: number;
  /** host:port for /metrics; undefined = served with /healthz only */
  metricsAddr?: { host: string; port: number };
  // logging
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** the CNI socket the forwarder calls; '' = no server */
  cniSocket: string;
  /** worker threads running CNI calls */
  cniWorkers: number;
  /** serve the CNI socket and /healthz only, without a subnet manager (tests, benchmarks) */
  cniOnly: boolean;
}

export class OptionsError extends Error {
  override readonly name = 'OptionsError';
}

/** Thrown after --help printed the usage: the caller exits 0 without starting. */
export class HelpShown extends Error {
  override readonly name = 'HelpShown';
}

/** Thrown for --version: the caller prints `text` and exits 0. */
export class VersionShown extends Error {
  override readonly name = 'VersionShown';
  constructor(readonly text: string) {
    super(text);
  }
}

export const ENV_PREFIX = 'FLANNELD_';
export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';
const LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

/** The environment variable flanneld reads for a flag: iface-can-reach → FLANNELD_IFACE_CAN_REACH. */
export function envName(flag: string): string {
  return ENV_PREFIX + flag.toUpperCase().replace(/-/g, '_');
}

type Spec = {
  type: 'string' | 'boolean' | 'number';
  array?: boolean;
  default?: string | boolean | number | string[];
  /** what --help shows for a default computed on this machine */
  defaultDescription?: string;
  describe: string;
  alias?: string | string[];
  hidden?: boolean;
  group: string;
};

const G_IFACE = 'Interface:';
const G_SUBNET = 'Subnet manager:';
const G_ETCD = 'etcd security:';
const G_RULES = 'Traffic rules:';
const G_CNI = 'CNI socket:';

/**
 * --cni-workers by default: one per CPU, at least 2 and at most 4. A call is
 * CPU work between short netlink waits, and each worker warms its own copy of
 * the handler's compiled code, so workers beyond the CPUs cost CPU without
 * serving more: on 2 cores, 2 workers gave 1.65-1.73x the reference's ADDs per
 * second against 1.47-1.48x with 4, at 0.47-0.48x its CPU per call against
 * 0.57-0.59x (docs/benchmarks.md). Two at least, so one netlink call waiting
 * in the kernel (a veth deletion waits for RCU) never stops every pod.
 */
export function defaultCniWorkers(cpus = availableParallelism()): number {
  return Math.min(4, Math.max(2, cpus));
}
const G_ENDPOINTS = 'Health and metrics:';
const G_LOG = 'Logging:';

/** Every flag; the env var for each is envName(flag). */
export const FLAGS: Record<string, Spec> = {
  iface: { type: 'string', array: true, default: [], group: G_IFACE, describe: 'interface name or IPv4/IPv6 address for inter-node traffic (repeatable, tried in order)' },
  'iface-regex': { type: 'string', array: true, default: [], group: G_IFACE, describe: 'regex over interface IPs (IPv6 too when EnableIPv6), then names (repeatable)' },
  'iface-can-reach': { type: 'string', group: G_IFACE, describe: 'use the interface and source address the kernel routes this IPv4 or IPv6 address through' },
  'public-ip': { type: 'string', group: G_IFACE, describe: 'IP advertised to other nodes (default: the interface address)' },
  'public-ipv6': { type: 'string', group: G_IFACE, describe: 'IPv6 address advertised to other nodes (default: the interface\'s global IPv6 address)' },

  'kube-subnet-mgr': { type: 'boolean', default: false, group: G_SUBNET, describe: 'take the lease from this Node\'s spec.podCIDR via the Kubernetes API' },
  'kubeconfig-file': { type: 'string', group: G_SUBNET, describe: 'kubeconfig (default: in-cluster config, else $KUBECONFIG)' },
  'kube-api-url': { type: 'string', group: G_SUBNET, describe: 'Kubernetes API server URL (overrides the kubeconfig\'s server)' },
  'kube-annotation-prefix': { type: 'string', default: DEFAULT_ANNOTATION_PREFIX, group: G_SUBNET, describe: 'prefix of the Node annotations holding the lease' },
  'kube-watch-idle-timeout': { type: 'number', default: 75, group: G_SUBNET, describe: 'seconds without an event or bookmark after which the Node watch is presumed on a dead connection and opened again; 0 = never (kube mode)' },
  'set-node-network-unavailable': { type: 'boolean', default: true, group: G_SUBNET, describe: 'set the Node condition NetworkUnavailable=False once ready (kube mode)' },
  'net-config-path': { type: 'string', default: '/etc/kube-flannel/net-conf.json', group: G_SUBNET, describe: 'net-conf.json (kube mode)' },
  'node-name': { type: 'string', group: G_SUBNET, describe: 'this Node\'s name (default $NODE_NAME, else the hostname)' },
  'etcd-endpoints': { type: 'string', default: 'http://127.0.0.1:2379', group: G_SUBNET, describe: 'comma-separated etcd endpoints' },
  'etcd-prefix': { type: 'string', default: '/coreos.com/network', group: G_SUBNET, describe: 'etcd key prefix' },
  'subnet-file': { type: 'string', default: DEFAULT_SUBNET_FILE, group: G_SUBNET, describe: 'where to write the node subnet for the CNI plugin' },
  'subnet-lease-renew-margin': { type: 'number', default: 60, group: G_SUBNET, describe: 'renew the etcd lease this many minutes before it expires (1-1439)' },
  'subnet-lease-ttl': { type: 'number', default: 86400, group: G_SUBNET, describe: 'etcd lease TTL in seconds', hidden: true },
  'store-loss-grace': { type: 'number', default: 30, group: G_SUBNET, describe: 'seconds to keep the programmed peers when this node\'s own lease vanishes from the store (etcd wiped or restored), while every agent re-registers' },

  'etcd-cafile': { type: 'string', group: G_ETCD, describe: 'CA bundle that signs the etcd server certificates' },
  'etcd-certfile': { type: 'string', group: G_ETCD, describe: 'client certificate for etcd (with --etcd-keyfile)' },
  'etcd-keyfile': { type: 'string', group: G_ETCD, describe: 'client key for etcd (with --etcd-certfile)' },
  'etcd-username': { type: 'string', group: G_ETCD, describe: 'etcd user (authentication enabled)' },
  'etcd-password': { type: 'string', group: G_ETCD, describe: 'etcd password (prefer the env var FLANNELD_ETCD_PASSWORD)' },

  'ip-masq': { type: 'boolean', default: false, group: G_RULES, describe: 'masquerade traffic leaving the pod network' },
  'ip-masq-fully-random-disable': { type: 'boolean', default: false, group: G_RULES, describe: 'masquerade without --random-fully / fully-random' },
  'iptables-forward-rules': { type: 'boolean', default: true, group: G_RULES, describe: 'accept forwarded pod-network traffic (FLANNEL-FWD / nft forward chain)' },
  'ip-blackhole-route': { type: 'boolean', default: false, group: G_RULES, describe: 'keep a blackhole route for this node\'s subnet' },
  cleanup: { type: 'boolean', default: false, group: G_RULES, describe: 'remove this agent\'s masquerade and forward rules (iptables and nftables) and its nexthop objects with the per-peer routes through them, and exit, for uninstalling; a stopping agent keeps them so pods stay masqueraded across restarts' },
  'resync-period': { type: 'number', default: 10, alias: 'iptables-resync', group: G_RULES, describe: 'seconds between full reconciliations of routes and rules (flannel: --iptables-resync)' },

  'cni-socket': { type: 'string', default: DEFAULT_CNI_SOCKET, group: G_CNI, describe: 'Unix socket serving CNI calls for /opt/cni/bin/tsflannel ("" = off; the conflist key agentSocket must match)' },
  'cni-workers': {
    type: 'number',
    default: defaultCniWorkers(),
    defaultDescription: 'the CPUs, 2 to 4',
    group: G_CNI,
    describe: 'worker threads serving CNI calls, one call each at a time (a netlink call, e.g. deleting a veth, blocks its thread)',
  },
  'cni-only': { type: 'boolean', default: false, hidden: true, group: G_CNI, describe: 'serve CNI calls and /healthz only, with no subnet manager (tests, benchmarks)' },

  'healthz-ip': { type: 'string', default: '127.0.0.1', group: G_ENDPOINTS, describe: 'address for /healthz, /readyz (and /metrics without --metrics-addr)' },
  'healthz-port': { type: 'number', default: 0, group: G_ENDPOINTS, describe: 'port for /healthz, /readyz and /metrics (0 = off)' },
  'metrics-addr': { type: 'string', group: G_ENDPOINTS, describe: 'host:port serving /metrics on its own (e.g. [$(HOST_IP)]:9465; an IPv6 host in brackets)' },

  'log-level': { type: 'string', default: 'info', alias: 'v', group: G_LOG, describe: `${LEVELS.join('|')}, or flannel's -v=N (0 info, 1-3 debug, 4+ trace)` },
  'log-format': { type: 'string', default: 'json', group: G_LOG, describe: 'json (one object a line, for collectors) or text (one readable line a line)' },
};

/** Values from FLANNELD_* for flags; strings, as yargs coerces them like argv. */
function envConfig(env: NodeJS.ProcessEnv): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [flag, spec] of Object.entries(FLAGS)) {
    const names = [flag, ...(spec.alias ? [spec.alias].flat() : [])].filter((n) => n.length > 1);
    for (const name of names) {
      const value = env[envName(name)];
      if (value === undefined || value === '') continue;
      // flanneld's repeatable flags take one value from env; we also split commas
      out[flag] = spec.array ? value.split(',').map((s) => s.trim()).filter(Boolean) : value;
      break;
    }
  }
  return out;
}

function parseLogLevel(text: string): LogLevel {
  if ((LEVELS as readonly string[]).includes(text)) return text as LogLevel;
  // klog verbosity: -v=0 is info, V(1..3) debug-ish, V(4+) the noisy traces
  if (/^\d+$/.test(text)) {
    const v = Number(text);
    return v === 0 ? 'info' : v <= 3 ? 'debug' : 'trace';
  }
  throw new OptionsError(`--log-level (-v) must be one of ${LEVELS.join(', ')} or a number, got ${JSON.stringify(text)}`);
}

function parseHostPort(flag: string, text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new OptionsError(`--${flag} must be host:port (e.g. 0.0.0.0:9465), got ${JSON.stringify(text)}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

function optional(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

export function parseAgentOptions(argv: string[], env: NodeJS.ProcessEnv): AgentOptions {
  let cli = yargs(argv)
    .scriptName('tsflanneld')
    .usage('$0 [options]: the tsflannel node agent (flannel-compatible VXLAN / host-gw overlay)\n\nEvery flag is also read from FLANNELD_<FLAG_IN_UPPER_SNAKE>, e.g. FLANNELD_IFACE_CAN_REACH.')
    .version(false)
    .option('version', { type: 'boolean', describe: 'print the version and exit' });
  for (const [flag, spec] of Object.entries(FLAGS)) cli = cli.option(flag, spec);
  const parsed = cli
    .config(envConfig(env))
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw new OptionsError(msg || err?.message || 'invalid arguments');
    })
    .help()
    .parseSync() as Record<string, unknown>;
  if (parsed.help) throw new HelpShown('help shown');
  if (parsed.version) throw new VersionShown(`tsflanneld ${VERSION}`);

  const str = (k: string): string | undefined => optional(parsed[k] as string | undefined);
  const num = (k: string): number => parsed[k] as number;
  const bool = (k: string): boolean => parsed[k] as boolean;
  const list = (k: string): string[] => (parsed[k] as string[]).map(String);

  const healthzPort = num('healthz-port');
  if (!Number.isInteger(healthzPort) || healthzPort < 0 || healthzPort > 65535) {
    throw new OptionsError(`--healthz-port must be a port number, got ${healthzPort}`);
  }
  const resync = num('resync-period');
  if (!(resync > 0)) throw new OptionsError(`--resync-period (--iptables-resync) must be positive, got ${resync}`);
  const ttl = num('subnet-lease-ttl');
  if (!Number.isInteger(ttl) || ttl < 2) throw new OptionsError(`--subnet-lease-ttl must be an integer >= 2, got ${ttl}`);
  const watchIdle = num('kube-watch-idle-timeout');
  if (!(watchIdle >= 0) || !Number.isFinite(watchIdle)) throw new OptionsError(`--kube-watch-idle-timeout must be zero or more seconds, got ${watchIdle}`);
  const grace = num('store-loss-grace');
  if (!(grace >= 0)) throw new OptionsError(`--store-loss-grace must be zero or more seconds, got ${grace}`);
  const margin = num('subnet-lease-renew-margin');
  // flanneld: "Invalid subnet-lease-renew-margin option, out of acceptable range"
  if (!Number.isInteger(margin) || margin <= 0 || margin >= 1440) {
    throw new OptionsError(`--subnet-lease-renew-margin must be whole minutes from 1 to 1439, got ${margin}`);
  }
  for (const re of list('iface-regex')) {
    try {
      new RegExp(re);
    } catch {
      throw new OptionsError(`--iface-regex "${re}" is not a valid regular expression`);
    }
  }
  const canReach = str('iface-can-reach');
  if (canReach !== undefined && parseIp(canReach) === undefined) {
    throw new OptionsError(`--iface-can-reach must be an IPv4 or IPv6 address, got ${JSON.stringify(canReach)}`);
  }
  const publicIPv6 = str('public-ipv6');
  if (publicIPv6 && parseIp(publicIPv6, 6) === undefined) {
    throw new OptionsError(`--public-ipv6 must be an IPv6 address, got ${JSON.stringify(publicIPv6)}`);
  }
  const logFormat = str('log-format') ?? 'json';
  if (logFormat !== 'json' && logFormat !== 'text') throw new OptionsError(`--log-format must be json or text, got ${JSON.stringify(logFormat)}`);

  const etcd: EtcdSecurity = {};
  const put = (key: keyof EtcdSecurity, flag: string) => {
    const v = str(flag);
    if (v !== undefined) etcd[key] = v;
  };
  put('caFile', 'etcd-cafile');
  put('certFile', 'etcd-certfile');
  put('keyFile', 'etcd-keyfile');
  put('username', 'etcd-username');
  put('password', 'etcd-password');
  if ((etcd.certFile === undefined) !== (etcd.keyFile === undefined)) {
    throw new OptionsError('--etcd-certfile and --etcd-keyfile go together: give both or neither');
  }
  if (etcd.password !== undefined && etcd.username === undefined) throw new OptionsError('--etcd-password needs --etcd-username');

  const cniSocket = String(parsed['cni-socket']);
  if (cniSocket !== '' && (!cniSocket.startsWith('/') || cniSocket.includes('\0') || Buffer.byteLength(cniSocket) > 107)) {
    throw new OptionsError(`--cni-socket must be an absolute path of at most 107 bytes, or "", got "${cniSocket}"`);
  }
  const cniWorkers = num('cni-workers');
  if (!Number.isInteger(cniWorkers) || cniWorkers < 1 || cniWorkers > 64) {
    throw new OptionsError(`--cni-workers must be an integer from 1 to 64, got ${cniWorkers}`);
  }
  if (bool('cni-only') && cniSocket === '') throw new OptionsError('--cni-only needs a --cni-socket');
  const opts: AgentOptions = {
    iface: list('iface'),
    ifaceRegex: list('iface-regex'),
    kubeSubnetMgr: bool('kube-subnet-mgr'),
    etcdEndpoints: String(parsed['etcd-endpoints']).split(',').map((s) => s.trim()).filter(Boolean),
    etcdPrefix: String(parsed['etcd-prefix']),
    etcd,
    subnetFile: String(parsed['subnet-file']),
    netConfigPath: String(parsed['net-config-path']),
    nodeName: str('node-name') ?? optional(env.NODE_NAME) ?? hostname(),
    kubeAnnotationPrefix: String(parsed['kube-annotation-prefix']),
    setNodeNetworkUnavailable: bool('set-node-network-unavailable'),
    kubeWatchIdleTimeoutSeconds: watchIdle,
    leaseTtlSeconds: ttl,
    subnetLeaseRenewMarginMinutes: margin,
    ipMasq: bool('ip-masq'),
    ipMasqFullyRandomDisable: bool('ip-masq-fully-random-disable'),
    iptablesForwardRules: bool('iptables-forward-rules'),
    ipBlackholeRoute: bool('ip-blackhole-route'),
    resyncSeconds: resync,
    storeLossGraceSeconds: grace,
    cleanup: bool('cleanup'),
    healthzIP: String(parsed['healthz-ip']),
    healthzPort,
    logLevel: parseLogLevel(String(parsed['log-level'])),
    logFormat,
    cniSocket,
    cniWorkers,
    cniOnly: bool('cni-only'),
  };
  if (canReach) opts.ifaceCanReach = canReach;
  const publicIP = str('public-ip');
  if (publicIP) opts.publicIP = publicIP;
  if (publicIPv6) opts.publicIPv6 = publicIPv6;
  const kubeconfig = str('kubeconfig-file');
  if (kubeconfig) opts.kubeconfig = kubeconfig;
  const apiUrl = str('kube-api-url');
  if (apiUrl) opts.kubeApiUrl = apiUrl;
  const metrics = str('metrics-addr');
  if (metrics) opts.metricsAddr = parseHostPort('metrics-addr', metrics);
  if (!opts.kubeSubnetMgr && opts.etcdEndpoints.length === 0) throw new OptionsError('--etcd-endpoints is empty');
  return opts;
}
