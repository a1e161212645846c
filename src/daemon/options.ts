// tsflanneld's command line, flannel's flag names where flannel has one.
import { hostname } from 'node:os';
import yargs from 'yargs';
import { DEFAULT_SUBNET_FILE } from '../flannel/subnet-env.js';
import { DEFAULT_CNI_SOCKET } from './cni-frame.js';

export interface AgentOptions {
  iface: string[];
  ifaceRegex: string[];
  publicIP?: string;
  ipMasq: boolean;
  kubeSubnetMgr: boolean;
  etcdEndpoints: string[];
  etcdPrefix: string;
  subnetFile: string;
  netConfigPath: string;
  nodeName: string;
  kubeconfig?: string;
  kubeApiUrl?: string;
  healthzIP: string;
  healthzPort: number;
  /** seconds between forced reconciliations of kernel state and iptables */
  resyncSeconds: number;
  /** etcd lease TTL; flannel uses 24 h */
  leaseTtlSeconds: number;
  logLevel: string;
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

export function parseAgentOptions(argv: string[], env: NodeJS.ProcessEnv): AgentOptions {
  const parsed = yargs(argv)
    .scriptName('tsflanneld')
    .usage('$0 [options]: the tsflannel node agent (flannel-compatible VXLAN / host-gw overlay)')
    .option('iface', { type: 'string', array: true, default: [], describe: 'interface name or IP for inter-node traffic (repeatable, tried in order)' })
    .option('iface-regex', { type: 'string', array: true, default: [], describe: 'regex over interface names and IPs (repeatable)' })
    .option('public-ip', { type: 'string', describe: 'IP advertised to other nodes (default: the interface address)' })
    .option('ip-masq', { type: 'boolean', default: false, describe: 'masquerade traffic leaving the pod network' })
    .option('kube-subnet-mgr', { type: 'boolean', default: false, describe: 'take the lease from this Node\'s spec.podCIDR via the Kubernetes API' })
    .option('etcd-endpoints', { type: 'string', default: 'http://127.0.0.1:2379', describe: 'comma-separated etcd endpoints' })
    .option('etcd-prefix', { type: 'string', default: '/coreos.com/network', describe: 'etcd key prefix' })
    .option('subnet-file', { type: 'string', default: DEFAULT_SUBNET_FILE, describe: 'where to write the node subnet for the CNI plugin' })
    .option('net-config-path', { type: 'string', default: '/etc/kube-flannel/net-conf.json', describe: 'net-conf.json (kube mode)' })
    .option('node-name', { type: 'string', describe: 'this Node\'s name (default $NODE_NAME, else the hostname)' })
    .option('kubeconfig-file', { type: 'string', describe: 'kubeconfig (default: in-cluster config, else $KUBECONFIG)' })
    .option('kube-api-url', { type: 'string', describe: 'API server URL without auth (tests only)', hidden: true })
    .option('healthz-ip', { type: 'string', default: '127.0.0.1', describe: 'address for /healthz and /metrics' })
    .option('healthz-port', { type: 'number', default: 0, describe: 'port for /healthz and /metrics (0 = off)' })
    .option('resync-period', { type: 'number', default: 10, describe: 'seconds between full reconciliations' })
    .option('subnet-lease-ttl', { type: 'number', default: 86400, describe: 'etcd lease TTL in seconds', hidden: true })
    .option('cni-socket', { type: 'string', default: DEFAULT_CNI_SOCKET, describe: 'Unix socket serving CNI calls for /opt/cni/bin/tsflannel ("" = off; the conflist key agentSocket must match)' })
    .option('cni-workers', { type: 'number', default: 4, describe: 'worker threads running CNI calls (a netlink call, e.g. deleting a veth, blocks its thread)' })
    .option('cni-only', { type: 'boolean', default: false, hidden: true, describe: 'serve CNI calls and /healthz only, with no subnet manager (tests, benchmarks)' })
    .option('log-level', { type: 'string', default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] })
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw new OptionsError(msg || err?.message || 'invalid arguments');
    })
    .help()
    .version(false)
    .parseSync();
  if (parsed.help) throw new HelpShown('help shown');

  const healthzPort = parsed['healthz-port'];
  if (!Number.isInteger(healthzPort) || healthzPort < 0 || healthzPort > 65535) {
    throw new OptionsError(`--healthz-port must be a port number, got ${healthzPort}`);
  }
  const resync = parsed['resync-period'];
  if (!(resync > 0)) throw new OptionsError(`--resync-period must be positive, got ${resync}`);
  const ttl = parsed['subnet-lease-ttl'];
  if (!Number.isInteger(ttl) || ttl < 2) throw new OptionsError(`--subnet-lease-ttl must be an integer >= 2, got ${ttl}`);
  for (const re of parsed['iface-regex']) {
    try {
      new RegExp(re);
    } catch {
      throw new OptionsError(`--iface-regex "${re}" is not a valid regular expression`);
    }
  }
  const cniSocket = parsed['cni-socket'];
  if (cniSocket !== '' && (!cniSocket.startsWith('/') || cniSocket.includes('\0') || Buffer.byteLength(cniSocket) > 107)) {
    throw new OptionsError(`--cni-socket must be an absolute path of at most 107 bytes, or "", got "${cniSocket}"`);
  }
  const cniWorkers = parsed['cni-workers'];
  if (!Number.isInteger(cniWorkers) || cniWorkers < 1 || cniWorkers > 64) {
    throw new OptionsError(`--cni-workers must be an integer from 1 to 64, got ${cniWorkers}`);
  }
  if (parsed['cni-only'] && cniSocket === '') throw new OptionsError('--cni-only needs a --cni-socket');
  const opts: AgentOptions = {
    iface: parsed.iface,
    ifaceRegex: parsed['iface-regex'],
    ipMasq: parsed['ip-masq'],
    kubeSubnetMgr: parsed['kube-subnet-mgr'],
    etcdEndpoints: parsed['etcd-endpoints'].split(',').map((s) => s.trim()).filter(Boolean),
    etcdPrefix: parsed['etcd-prefix'],
    subnetFile: parsed['subnet-file'],
    netConfigPath: parsed['net-config-path'],
    nodeName: parsed['node-name'] ?? env.NODE_NAME ?? hostname(),
    healthzIP: parsed['healthz-ip'],
    healthzPort,
    resyncSeconds: resync,
    leaseTtlSeconds: ttl,
    logLevel: parsed['log-level'],
    cniSocket,
    cniWorkers,
    cniOnly: parsed['cni-only'],
  };
  if (parsed['public-ip']) opts.publicIP = parsed['public-ip'];
  if (parsed['kubeconfig-file']) opts.kubeconfig = parsed['kubeconfig-file'];
  if (parsed['kube-api-url']) opts.kubeApiUrl = parsed['kube-api-url'];
  if (!opts.kubeSubnetMgr && opts.etcdEndpoints.length === 0) throw new OptionsError('--etcd-endpoints is empty');
  return opts;
}
