// What the subnet manager knows: the network config and every node's lease,
// read once from etcd (flannel's v3 layout) or from the Kubernetes Nodes.
// Unreachable sources are reported in the view, never thrown, so status and
// doctor still show the kernel's side. The heavy clients load only when used.
import { readFile } from 'node:fs/promises';
import type { Lease, NetworkConfig } from '../../daemon/types.js';
import type { RequestContext } from '@kubernetes/client-node';

export type LeaseSourceKind = 'etcd' | 'kube' | 'none';

export interface EtcdSourceOptions {
  kind: 'etcd';
  endpoints: string[];
  prefix: string;
}

export interface KubeSourceOptions {
  kind: 'kube';
  nodeName: string;
  netConfigPath: string;
  kubeconfig?: string;
  apiServerUrl?: string;
  /** tsflanneld --kube-annotation-prefix; default flannel's */
  annotationPrefix?: string;
}

export type LeaseSourceOptions = EtcdSourceOptions | KubeSourceOptions | { kind: 'none' };

/** Our own Node, in kube mode. */
export interface KubeNodeInfo {
  name: string;
  found: boolean;
  podCIDR?: string;
  /** why there is no usable pod CIDR */
  podCIDRReason?: string;
  /** why the Node's annotations do not make a lease */
  leaseReason?: string;
}

export interface ClusterView {
  source: LeaseSourceKind;
  /** where the leases come from, for messages */
  origin: string;
  /** the source could not be read at all */
  error?: string;
  config?: NetworkConfig;
  configError?: string;
  /** every usable lease, ours included; absent when the source is none or failed */
  leases?: Lease[];
  /** etcd: entries under subnets/ that do not decode as leases */
  badEntries?: string[];
  /** etcd: seconds left on each subnet's key, by subnet (absent = no TTL) */
  ttl?: Record<string, number>;
  node?: KubeNodeInfo;
}

export const DEFAULT_TIMEOUT_MS = 3000;

function withTimeout<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** The first sentence of a client error: grpc appends pages of resolution notes. */
function message(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const cut = text.indexOf(' Resolution note');
  return (cut > 0 ? text.slice(0, cut) : text).slice(0, 300);
}

export async function readClusterView(opts: LeaseSourceOptions, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<ClusterView> {
  switch (opts.kind) {
    case 'etcd':
      return readEtcd(opts, timeoutMs);
    case 'kube':
      return readKube(opts, timeoutMs);
    default:
      return { source: 'none', origin: 'none (no --etcd-endpoints or --kube-subnet-mgr given)' };
  }
}

async function readEtcd(opts: EtcdSourceOptions, timeoutMs: number): Promise<ClusterView> {
  const prefix = opts.prefix.replace(/\/+$/, '');
  const view: ClusterView = { source: 'etcd', origin: `etcd ${opts.endpoints.join(',')} ${prefix}` };
  const { Etcd3 } = await import('etcd3');
  const { decodeLeaseAttrs } = await import('../../daemon/subnet/etcd.js');
  const { parseLeaseKey } = await import('../../daemon/subnet/allocate.js');
  const { parseNetworkConfig } = await import('../../daemon/config.js');
  const client = new Etcd3({
    hosts: opts.endpoints,
    dialTimeout: timeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
  });
  try {
    const read = async () => {
      const [configText, subnets] = await Promise.all([
        client.get(`${prefix}/config`).string(),
        client.getAll().prefix(`${prefix}/subnets/`).exec(),
      ]);
      return { configText, subnets };
    };
    const { configText, subnets } = await withTimeout(`etcd ${opts.endpoints.join(',')}`, timeoutMs * 2, read());
    if (configText === null) view.configError = `no network config at ${prefix}/config`;
    else {
      try {
        view.config = parseNetworkConfig(configText);
      } catch (err) {
        view.configError = message(err);
      }
    }
    const leases: Lease[] = [];
    const leaseIds = new Map<string, string>();
    const bad: string[] = [];
    for (const kv of subnets.kvs) {
      const key = kv.key.toString();
      const subnets = parseLeaseKey(key.slice(`${prefix}/subnets/`.length));
      const attrs = subnets ? decodeLeaseAttrs(kv.value.toString()) : undefined;
      if (!subnets || !attrs) {
        bad.push(key);
        continue;
      }
      leases.push({ ...attrs, ...subnets, nodeName: key.slice(`${prefix}/subnets/`.length) });
      // An IPv6-only lease has no IPv4 subnet to name it by.
      if (kv.lease && kv.lease !== '0') leaseIds.set(subnets.subnet || subnets.ipv6Subnet!, kv.lease);
    }
    view.leases = leases;
    if (bad.length > 0) view.badEntries = bad;
    view.ttl = await withTimeout('etcd lease TTLs', timeoutMs * 2, leaseTtls(client, leaseIds));
  } catch (err) {
    view.error = message(err);
    delete view.leases;
  } finally {
    client.close();
  }
  return view;
}

async function leaseTtls(
  client: { leaseClient: { leaseTimeToLive(req: { ID: string }): Promise<{ TTL: string }> } },
  ids: Map<string, string>,
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  await Promise.all(
    [...ids].map(async ([subnet, id]) => {
      const res = await client.leaseClient.leaseTimeToLive({ ID: id });
      out[subnet] = Number(res.TTL);
    }),
  );
  return out;
}

async function readKube(opts: KubeSourceOptions, timeoutMs: number): Promise<ClusterView> {
  const view: ClusterView = { source: 'kube', origin: `Kubernetes Nodes (node ${opts.nodeName})` };
  const { parseNetworkConfig } = await import('../../daemon/config.js');
  try {
    view.config = parseNetworkConfig(await readFile(opts.netConfigPath, 'utf8'));
  } catch (err) {
    view.configError = `${opts.netConfigPath}: ${(err as NodeJS.ErrnoException).code ?? message(err)}`;
  }
  try {
    const { loadKubeConfig } = await import('../../daemon/subnet/kube.js');
    const { DEFAULT_ANNOTATION_PREFIX, leaseFromNode, nodePodCIDR } = await import('../../daemon/subnet/annotations.js');
    const { CoreV1Api } = await import('./kube-api.js');
    const kubeOpts: { kubeconfig?: string; apiServerUrl?: string } = {};
    if (opts.kubeconfig) kubeOpts.kubeconfig = opts.kubeconfig;
    if (opts.apiServerUrl) kubeOpts.apiServerUrl = opts.apiServerUrl;
    const { config, source } = loadKubeConfig(kubeOpts, process.env);
    view.origin = `Kubernetes Nodes via ${source} (node ${opts.nodeName})`;
    const api = config.makeApiClient(CoreV1Api);
    // Abort the request itself just after the deadline: a request left
    // hanging would keep the process alive after the answer is printed.
    const signal = AbortSignal.timeout(timeoutMs * 2 + 100);
    // The object API takes the generated client's Observable-style
    // middleware, which only ever calls toPromise() on what pre/post return.
    const settled = <T>(value: T) => ({ toPromise: () => Promise.resolve(value) });
    const abortable = {
      middleware: [{ pre: (ctx: RequestContext) => (ctx.setSignal(signal), settled(ctx)), post: settled }],
      middlewareMergeStrategy: 'append',
    } as unknown as Parameters<typeof api.listNode>[1];
    const list = await withTimeout('Kubernetes API', timeoutMs * 2, api.listNode({}, abortable));
    const leases: Lease[] = [];
    const node: KubeNodeInfo = { name: opts.nodeName, found: false };
    // The families the agent reads, so a dual-stack or IPv6-only node's
    // lease keeps its IPv6 half (without a readable config: IPv4, the default).
    const families = { ipv4: view.config?.enableIPv4 ?? true, ipv6: view.config?.enableIPv6 ?? false };
    const primary = families.ipv4 ? 4 : 6;
    for (const n of list.items) {
      const result = leaseFromNode(n, opts.annotationPrefix ?? DEFAULT_ANNOTATION_PREFIX, families);
      if (result.lease) leases.push(result.lease);
      if (n.metadata?.name !== opts.nodeName) continue;
      node.found = true;
      const pod = nodePodCIDR(n, primary);
      if ('cidr' in pod) node.podCIDR = pod.cidr;
      else node.podCIDRReason = pod.reason;
      if (!result.lease) node.leaseReason = result.reason;
    }
    view.leases = leases;
    view.node = node;
  } catch (err) {
    view.error = message(err);
  }
  return view;
}
