// The flags `tsflannel status` and `tsflannel doctor` share: where this
// node's files are, which netns to look into, and where the leases live.
// Names follow tsflanneld's (and flannel's) flags. Both commands register
// through nodeToolCommand, so flags, usage errors and --json are one thing.
import { closeSync, constants as fsc } from 'node:fs';
import { hostname } from 'node:os';
import { openRegularSync } from '../../fs/guard.js';
import type { Argv } from 'yargs';
import { DEFAULT_SUBNET_FILE } from '../../flannel/subnet-env.js';
import { DEFAULT_DATA_DIR } from '../../ipam/index.js';
import { DEFAULT_BRIDGE, DEFAULT_NETWORK_NAME } from '../../node/state.js';
import { paintFor, type Paint } from './format.js';
import { DEFAULT_TIMEOUT_MS, type LeaseSourceOptions } from './source.js';
import { DEFAULT_CNI_SOCKET } from '../../daemon/cni-frame.js';
import { DEFAULT_ANNOTATION_PREFIX } from '../../daemon/subnet/annotations.js';

export interface NodeToolOptions {
  netns?: string;
  subnetFile: string;
  dataDir: string;
  network: string;
  bridge: string;
  source: LeaseSourceOptions;
  publicIP?: string;
  timeoutMs: number;
  json: boolean;
  /** the agent's CNI socket (tsflanneld --cni-socket, the conflist's agentSocket) */
  cniSocket: string;
}

export class NodeToolUsageError extends Error {
  override readonly name = 'NodeToolUsageError';
}

function nodeToolOptions<T>(y: Argv<T>) {
  return y
    .option('netns', { type: 'string', describe: 'inspect this network namespace (a path such as /var/run/netns/node1)' })
    .option('subnet-file', { type: 'string', default: DEFAULT_SUBNET_FILE, describe: 'the subnet file tsflanneld writes' })
    .option('data-dir', { type: 'string', default: DEFAULT_DATA_DIR, describe: 'the IPAM data dir (the conflist\'s ipam dataDir)' })
    .option('network', { type: 'string', default: DEFAULT_NETWORK_NAME, describe: 'the CNI network name (the conflist\'s "name")' })
    .option('bridge', { type: 'string', default: DEFAULT_BRIDGE, describe: 'the pod bridge' })
    .option('etcd-endpoints', { type: 'string', describe: 'read leases from etcd (comma-separated endpoints)' })
    .option('etcd-prefix', { type: 'string', default: '/coreos.com/network', describe: 'etcd key prefix' })
    .option('kube-subnet-mgr', { type: 'boolean', default: false, describe: 'read leases from the Kubernetes Nodes' })
    .option('kubeconfig-file', { type: 'string', describe: 'kubeconfig (default: in-cluster config, else $KUBECONFIG)' })
    .option('kube-api-url', { type: 'string', hidden: true, describe: 'API server URL without auth (tests only)' })
    .option('node-name', { type: 'string', describe: 'this Node\'s name in kube mode (default $NODE_NAME, else the hostname)' })
    .option('kube-annotation-prefix', { type: 'string', default: DEFAULT_ANNOTATION_PREFIX, describe: 'prefix of the Node annotations holding the leases (tsflanneld --kube-annotation-prefix)' })
    .option('net-config-path', { type: 'string', default: '/etc/kube-flannel/net-conf.json', describe: 'net-conf.json (kube mode)' })
    .option('public-ip', { type: 'string', describe: 'the address this node\'s lease advertises, when tsflanneld runs with --public-ip' })
    .option('timeout', { type: 'number', default: DEFAULT_TIMEOUT_MS / 1000, describe: 'seconds to wait for etcd or the API server' })
    .option('cni-socket', { type: 'string', default: DEFAULT_CNI_SOCKET, describe: 'the agent\'s CNI socket (tsflanneld --cni-socket)' })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON for scripts' });
}

/**
 * The typed options, or undefined after reporting a usage error (exit 2):
 * flag combinations yargs cannot check by itself land here.
 */
function nodeToolArgsOrUsage(command: string, args: RawNodeToolArgs): NodeToolOptions | undefined {
  try {
    return parseNodeToolArgs(args);
  } catch (err) {
    if (!(err instanceof NodeToolUsageError)) throw err;
    process.stderr.write(`tsflannel ${command}: ${err.message} (see tsflannel ${command} --help)\n`);
    process.exitCode = 2;
    return undefined;
  }
}

/** A node-tool command: what it is called, how it builds its report, how it prints it. */
export interface NodeToolCommand<R> {
  name: string;
  describe: string;
  run(opts: NodeToolOptions): Promise<R>;
  format(report: R, paint: Paint): string;
  /** exit status 1 when this says so */
  failed?(report: R): boolean;
}

/** Registers `cmd` with the shared flags; prints its report as text, or as JSON with --json. */
export function nodeToolCommand<R>(cli: Argv, cmd: NodeToolCommand<R>): Argv {
  return cli.command(
    cmd.name,
    cmd.describe,
    (y) => nodeToolOptions(y),
    async (args) => {
      const opts = nodeToolArgsOrUsage(cmd.name, args);
      if (!opts) return;
      const report = await cmd.run(opts);
      process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : cmd.format(report, paintFor(process.stdout)));
      if (cmd.failed?.(report)) process.exitCode = 1;
    },
  );
}

export interface RawNodeToolArgs {
  netns?: string | undefined;
  'subnet-file': string;
  'data-dir': string;
  network: string;
  bridge: string;
  'etcd-endpoints'?: string | undefined;
  'etcd-prefix': string;
  'kube-subnet-mgr': boolean;
  'kubeconfig-file'?: string | undefined;
  'kube-api-url'?: string | undefined;
  'node-name'?: string | undefined;
  'kube-annotation-prefix'?: string | undefined;
  'net-config-path': string;
  'public-ip'?: string | undefined;
  timeout: number;
  json: boolean;
  'cni-socket'?: string | undefined;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/**
 * The plugin's guard for a path from outside: a namespace handle is a
 * regular (nsfs) file, and a FIFO given here would block the first netlink
 * call in open() forever.
 */
function requireNetnsHandle(netns: string): void {
  try {
    closeSync(openRegularSync(netns, fsc.O_RDONLY));
  } catch (err) {
    throw new NodeToolUsageError(`--netns ${netns} is not a network namespace: ${(err as Error).message}`);
  }
}

/** Checks the flags and turns them into typed options. */
export function parseNodeToolArgs(args: RawNodeToolArgs, env: NodeJS.ProcessEnv = process.env): NodeToolOptions {
  const endpoints = (args['etcd-endpoints'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (endpoints.length > 0 && args['kube-subnet-mgr']) {
    throw new NodeToolUsageError('give either --etcd-endpoints or --kube-subnet-mgr, not both');
  }
  for (const e of endpoints) {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(e)) throw new NodeToolUsageError(`--etcd-endpoints: "${e}" is not an http(s)://host:port URL`);
  }
  if (!(args.timeout > 0)) throw new NodeToolUsageError(`--timeout must be positive, got ${args.timeout}`);
  if (args['public-ip'] !== undefined && !IPV4.test(args['public-ip'])) {
    throw new NodeToolUsageError(`--public-ip "${args['public-ip']}" is not an IPv4 address`);
  }
  if (args.netns !== undefined && !args.netns.startsWith('/')) {
    throw new NodeToolUsageError(`--netns must be a path such as /var/run/netns/NAME, got "${args.netns}"`);
  }
  if (args.netns !== undefined) requireNetnsHandle(args.netns);
  let source: LeaseSourceOptions = { kind: 'none' };
  if (endpoints.length > 0) source = { kind: 'etcd', endpoints, prefix: args['etcd-prefix'] };
  else if (args['kube-subnet-mgr']) {
    const kube: LeaseSourceOptions = {
      kind: 'kube',
      nodeName: args['node-name'] ?? env.NODE_NAME ?? hostname(),
      netConfigPath: args['net-config-path'],
    };
    if (args['kubeconfig-file']) kube.kubeconfig = args['kubeconfig-file'];
    if (args['kube-api-url']) kube.apiServerUrl = args['kube-api-url'];
    if (args['kube-annotation-prefix']) kube.annotationPrefix = args['kube-annotation-prefix'];
    source = kube;
  }
  const opts: NodeToolOptions = {
    subnetFile: args['subnet-file'],
    dataDir: args['data-dir'],
    network: args.network,
    bridge: args.bridge,
    source,
    timeoutMs: Math.round(args.timeout * 1000),
    json: args.json,
    cniSocket: args['cni-socket'] ?? DEFAULT_CNI_SOCKET,
  };
  if (args.netns) opts.netns = args.netns;
  if (args['public-ip']) opts.publicIP = args['public-ip'];
  return opts;
}
