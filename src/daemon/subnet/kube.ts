// The Kubernetes subnet manager: the lease is this Node's spec.podCIDR, the
// attributes travel as flannel's Node annotations, and the other nodes'
// leases come from listing and watching Nodes.
//
// Everything is written through the nodes/status subresource, as flannel
// does, so the RBAC stays flannel's: nodes get/list/watch, nodes/status patch.
import { readFile } from 'node:fs/promises';
import pino from 'pino';
import {
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  Watch,
  Observable,
  setHeaderOptions,
  type ConfigurationOptions,
  type ObservableMiddleware,
  type V1Node,
} from '@kubernetes/client-node';
import { ConfigError, parseNetworkConfig } from '../config.js';
import type { Lease, LeaseAttrs, NetworkConfig, SubnetManager } from '../types.js';
import {
  annotationChanges,
  annotationKeys,
  annotationsFor,
  cidrContains,
  DEFAULT_ANNOTATION_PREFIX,
  IPV4_ONLY,
  leaseFromNode,
  nodeIPv4PodCIDR,
  nodeIPv6PodCIDR,
  type AnnotationKeys,
  type LeaseFamilies,
} from './annotations.js';
import { parseIp } from '../../net/ip.js';
import { LeaseList } from './lease-list.js';
import { Coalescer, DEFAULT_COALESCE_MS } from './coalesce.js';

/**
 * Every Kubernetes API call this manager makes, as RBAC sees it. The
 * manifest's ClusterRole must grant at least these (and the test checks
 * that the calls actually made stay within them).
 */
export const KUBE_API_CALLS: ReadonlyArray<{ readonly verb: string; readonly resource: string }> = [
  { verb: 'get', resource: 'nodes' },
  { verb: 'list', resource: 'nodes' },
  { verb: 'watch', resource: 'nodes' },
  { verb: 'patch', resource: 'nodes/status' },
];

export const DEFAULT_NET_CONF_PATH = '/etc/kube-flannel/net-conf.json';

export interface KubeSubnetManagerOptions {
  nodeName: string;
  /** flannel's net-conf.json, default /etc/kube-flannel/net-conf.json */
  netConfPath?: string;
  /** a kubeconfig file; wins over the in-cluster config */
  kubeconfig?: string;
  /** API server URL: overrides the kubeconfig's server, or alone means "no auth" (tests) */
  apiServerUrl?: string;
  annotationPrefix?: string;
  /** full re-list interval, default 300 s, each period drawn from 0.8 to 1.2 times it so agents started together spread out */
  resyncSeconds?: number;
  /** Node changes within this long of the last delivery go to the backend together (Coalescer), default 200 ms */
  coalesceMs?: number;
  /** a list of Nodes not answered in full within this long is abandoned and retried, default 60 s (the API server's own request timeout) */
  listTimeoutMs?: number;
  /**
   * a Node watch that brings nothing (no event, no bookmark) for this long is
   * presumed dead and opened again from where it stopped, default 75 s: the
   * API server's watch cache sends a bookmark about once a minute; 0 = never
   */
  watchIdleTimeoutMs?: number;
  /** retry delays for API errors, doubling from initialMs to maxMs */
  backoff?: { initialMs?: number; maxMs?: number };
  /** patch the NetworkUnavailable=False condition as flannel does, default true */
  setNodeNetworkUnavailable?: boolean;
  /** counts API errors and watch restarts (tsflannel_api_errors_total, tsflannel_watch_restarts_total) */
  metrics?: { apiError(operation: string): void; watchRestart(reason: string): void; leaseEvent?(result: 'changed' | 'ignored'): void };
  logger?: pino.Logger;
}

export class KubeSubnetError extends Error {
  override readonly name = 'KubeSubnetError';
}

// Client errors that retrying cannot fix; the caller must hear about them.
const FATAL_CODES = new Set([400, 401, 403, 405, 415, 422]);

const STRATEGIC_MERGE = setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch);

type WatchEnd = { kind: 'stopped' } | { kind: 'closed' } | { kind: 'idle' } | { kind: 'expired' } | { kind: 'error'; error: ErrorSummary };

/**
 * kube-apiserver's watch cache sends every watch that allows bookmarks one
 * about once a minute (its defaultBookmarkFrequency), so a watch silent for
 * longer than that, with some slack for a busy server, is on a connection that
 * died without a FIN or RST (a NAT entry dropped, the server's host gone).
 * client-go notices those with HTTP/2 pings (30 s idle, 15 s to answer);
 * client-node speaks HTTP/1.1 and its TCP keepalive starts after 30 s but
 * then probes at the kernel's pace (75 s apart, 9 of them: about 12 minutes).
 */
export const DEFAULT_WATCH_IDLE_TIMEOUT_MS = 75_000;

/** What happened to the resourceVersion the next list starts from. */
type ListFrom = 'cache' | 'quorum';

interface ErrorSummary {
  code?: number;
  message: string;
}

export class KubeSubnetManager implements SubnetManager {
  readonly kind = 'kube' as const;
  private readonly log: pino.Logger;
  private readonly api: CoreV1Api;
  private readonly watcher: Watch;
  private readonly keys: AnnotationKeys;
  private readonly prefix: string;
  private readonly netConfPath: string;
  private readonly resyncMs: number;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly watchIdleMs: number;
  private readonly closing = new AbortController();
  /** the families leases carry, from net-conf.json at acquire time */
  private families: LeaseFamilies = IPV4_ONLY;

  constructor(private readonly opts: KubeSubnetManagerOptions) {
    this.log = (opts.logger ?? pino({ level: 'info' }, pino.destination(2))).child({ component: 'kube-subnet-manager' });
    this.prefix = opts.annotationPrefix ?? DEFAULT_ANNOTATION_PREFIX;
    this.keys = annotationKeys(this.prefix);
    this.netConfPath = opts.netConfPath ?? DEFAULT_NET_CONF_PATH;
    this.resyncMs = Math.max(1, opts.resyncSeconds ?? 300) * 1000;
    this.initialDelayMs = opts.backoff?.initialMs ?? 250;
    this.maxDelayMs = Math.max(this.initialDelayMs, opts.backoff?.maxMs ?? 10_000);
    this.watchIdleMs = opts.watchIdleTimeoutMs ?? DEFAULT_WATCH_IDLE_TIMEOUT_MS;
    const { config, source } = loadKubeConfig(opts, process.env);
    this.log.info({ source, server: config.getCurrentCluster()?.server }, 'using Kubernetes API');
    this.api = config.makeApiClient(CoreV1Api);
    this.watcher = new Watch(config);
  }

  async getNetworkConfig(): Promise<NetworkConfig> {
    let text: string;
    try {
      text = await readFile(this.netConfPath, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read ${this.netConfPath}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    return parseNetworkConfig(text);
  }

  async acquireLease(attrs: LeaseAttrs, signal?: AbortSignal): Promise<Lease> {
    const sig = this.linked(signal);
    const config = await this.getNetworkConfig();
    this.families = { ipv4: config.enableIPv4, ipv6: config.enableIPv6 };
    let node = await this.waitForPodCIDR(sig);
    if (config.enableIPv4) {
      const pod = nodeIPv4PodCIDR(node);
      if ('reason' in pod) throw new KubeSubnetError(`node ${this.opts.nodeName}: ${pod.reason}`);
      if (!cidrContains(config.network, pod.cidr)) {
        throw new KubeSubnetError(
          `Network ${config.network} in ${this.netConfPath} does not contain pod CIDR ${pod.cidr} of node ${this.opts.nodeName}; ` +
            'make net-conf.json Network match the cluster CIDR',
        );
      }
    }
    if (config.enableIPv6) this.checkIPv6PodCIDR(node, config, attrs);

    const published = { ...attrs, publicIP: attrs.publicIP === '' ? '' : this.publishedIP(node, attrs.publicIP) };
    if (attrs.publicIPv6 !== undefined) published.publicIPv6 = this.publishedIP(node, attrs.publicIPv6, 6);
    const changes = annotationChanges(node.metadata?.annotations, annotationsFor(published, this.prefix));
    if (Object.keys(changes).length > 0) {
      node = await this.retrying('publish lease annotations', sig, () =>
        this.api.patchNodeStatus({ name: this.opts.nodeName, body: { metadata: { annotations: changes } } }, STRATEGIC_MERGE),
      );
      this.log.info({ node: this.opts.nodeName, changed: Object.keys(changes) }, 'published lease annotations');
    } else {
      this.log.info({ node: this.opts.nodeName }, 'lease annotations already up to date');
    }

    const result = leaseFromNode(node, this.prefix, this.families);
    if (!result.lease) throw new KubeSubnetError(`node ${this.opts.nodeName} does not show the published lease: ${result.reason}`);
    return result.lease;
  }

  /** EnableIPv6: the node needs an IPv6 pod CIDR inside IPv6Network, and an IPv6 address to publish. */
  private checkIPv6PodCIDR(node: V1Node, config: NetworkConfig, attrs: LeaseAttrs): void {
    const pod = nodeIPv6PodCIDR(node);
    if ('reason' in pod) {
      throw new KubeSubnetError(`node ${this.opts.nodeName}: ${pod.reason}, but EnableIPv6 is true (is the cluster dual-stack, with an IPv6 --cluster-cidr?)`);
    }
    if (!config.ipv6Network || !cidrContains(config.ipv6Network, pod.cidr, 6)) {
      throw new KubeSubnetError(
        `IPv6Network ${config.ipv6Network ?? '(none)'} in ${this.netConfPath} does not contain IPv6 pod CIDR ${pod.cidr} of node ${this.opts.nodeName}; ` +
          'make net-conf.json IPv6Network match the cluster\'s IPv6 CIDR',
      );
    }
    if (attrs.publicIPv6 === undefined) {
      throw new KubeSubnetError(`EnableIPv6 is true but node ${this.opts.nodeName} has no IPv6 address to publish (give --public-ipv6, or an interface with a global IPv6 address)`);
    }
  }

  async watchLeases(onLeases: (leases: Lease[]) => void, signal: AbortSignal): Promise<void> {
    const sig = this.linked(signal);
    // Kept across events and re-lists: an event costs what it changes, not the cluster's size.
    const known = new LeaseList((lease) => lease.nodeName ?? '');
    const refused = new Map<string, string>();
    // Per Node, the fields its lease is made of as last seen: an event that
    // leaves them alone (a status heartbeat, a label) is dropped unparsed.
    const seen = new Map<string, string>();
    const emit = (always: boolean): void => {
      const leases = known.take(always);
      if (!leases) return;
      try {
        onLeases(leases);
      } catch (err) {
        this.log.error({ err: summarize(err) }, 'lease handler failed');
      }
    };
    const batch = new Coalescer(() => emit(false), this.opts.coalesceMs ?? DEFAULT_COALESCE_MS);
    const apply = (node: V1Node): void => {
      const name = node.metadata?.name;
      if (!name) return;
      const result = leaseFromNode(node, this.prefix, this.families);
      if (result.lease) {
        known.set(name, result.lease);
        refused.delete(name);
        return;
      }
      known.delete(name);
      if (refused.get(name) !== result.reason) {
        refused.set(name, result.reason);
        // Nodes flannel has not reached yet are normal; a managed node with garbage is not.
        const managed = node.metadata?.annotations?.[this.keys.kubeSubnetManager] === 'true';
        this.log[managed ? 'warn' : 'debug']({ node: name, reason: result.reason }, 'ignoring node without a usable lease');
      }
    };
    /** Applies a Node if its lease fields changed; true when they did. */
    const observe = (node: V1Node): boolean => {
      const name = node.metadata?.name;
      if (!name) return false;
      const fields = leaseFields(node, this.keys);
      if (seen.get(name) === fields) return false;
      seen.set(name, fields);
      apply(node);
      return true;
    };

    this.log.info('watching Nodes for subnet leases');
    let delay = this.initialDelayMs;
    // The newest resourceVersion seen (list, events, bookmarks); watches resume from it.
    let resourceVersion = '';
    let listFrom: ListFrom = 'cache';
    let needList = true;
    let relistAt = 0;
    while (!sig.aborted) {
      if (needList) {
        try {
          // Served from the API server's watch cache: "0" (whatever it holds)
          // at first, then "not older than what we saw"; a quorum read from
          // etcd only after the cache could not serve that version.
          const from = listFrom === 'quorum' ? '' : resourceVersion || '0';
          const list = await withDeadline(sig, this.opts.listTimeoutMs ?? 60_000, (deadline) =>
            this.api.listNode(from ? { resourceVersion: from } : {}, withSignal(deadline)),
          );
          resourceVersion = list.metadata?.resourceVersion ?? '';
          listFrom = 'cache';
          batch.reset();
          // Leases equal to the held ones keep their objects; Nodes gone from the list are dropped.
          seen.clear();
          for (const node of list.items) observe(node);
          const present = new Set(list.items.map((n) => n.metadata?.name));
          known.keepOnly(present);
          for (const name of refused.keys()) if (!present.has(name)) refused.delete(name);
        } catch (err) {
          if (sig.aborted) break;
          // 410 Gone, or 504 "Too large resource version" from a cache behind us: read from etcd instead.
          const code = summarize(err).code;
          if (code === 410 || code === 504) listFrom = 'quorum';
          this.opts.metrics?.apiError('list nodes');
          this.log.warn({ err: summarize(err), retryInMs: delay }, 'listing Nodes failed; keeping the last known leases');
          await pause(delay, sig);
          delay = Math.min(delay * 2, this.maxDelayMs);
          continue;
        }
        this.log.debug({ resourceVersion, leases: known.size }, 'listed Nodes');
        emit(true);
        needList = false;
        relistAt = Date.now() + jittered(this.resyncMs);
      }

      const started = Date.now();
      const end = await withDeadline(sig, Math.max(1, relistAt - Date.now()), (cycle) => this.watchOnce(
        resourceVersion,
        cycle,
        (type, node) => {
          const rv = node.metadata?.resourceVersion;
          if (rv) resourceVersion = rv;
          let changed: boolean;
          if (type === 'DELETED') {
            const name = node.metadata?.name;
            if (!name) return;
            seen.delete(name);
            refused.delete(name);
            changed = known.delete(name);
          } else {
            changed = observe(node);
          }
          this.opts.metrics?.leaseEvent?.(changed ? 'changed' : 'ignored');
          if (changed) batch.changed();
        },
        (rv) => {
          resourceVersion = rv;
        },
      ));
      // What the watch delivered goes out before a re-list replaces it.
      batch.flush();
      if (sig.aborted) break;
      if (end.kind === 'stopped') {
        this.log.debug('periodic resync: re-listing Nodes');
        delay = this.initialDelayMs;
        needList = true;
        continue;
      }
      const brief = Date.now() - started < 1000;
      this.opts.metrics?.watchRestart(end.kind);
      if (end.kind === 'error') this.opts.metrics?.apiError('watch nodes');
      // A watch the server ended, or one gone silent, resumes where it stopped
      // (the watch cache replays what it missed); after an error or 410 Gone, list again.
      needList = end.kind !== 'closed' && end.kind !== 'idle';
      if (end.kind === 'error') this.log.warn({ err: end.error, retryInMs: delay }, 'Node watch failed; re-listing');
      else if (end.kind === 'expired') this.log.info({ reason: end.kind }, 'Node watch ended; re-listing');
      else if (end.kind === 'idle') this.log.warn({ silentSeconds: this.watchIdleMs / 1000, resourceVersion }, 'no event or bookmark on the Node watch: presuming its connection dead, watching again from where it stopped');
      else this.log.debug({ resourceVersion }, 'Node watch ended; watching again from where it stopped');
      if (end.kind === 'error' || brief) {
        await pause(delay, sig);
        delay = Math.min(delay * 2, this.maxDelayMs);
      } else {
        delay = this.initialDelayMs;
      }
    }
    batch.cancel();
  }

  /** flannel's CompleteLease: NetworkUnavailable=False once the agent is ready (unless switched off). */
  async leaseReady(signal: AbortSignal): Promise<void> {
    if (this.opts.setNodeNetworkUnavailable === false) return;
    const sig = this.linked(signal);
    const node = await this.retrying(`read node ${this.opts.nodeName}`, sig, () => this.api.readNode({ name: this.opts.nodeName }));
    await this.markNetworkAvailable(node, sig);
  }

  async close(): Promise<void> {
    this.closing.abort(new KubeSubnetError('subnet manager closed'));
  }

  /** Marks the node's network ready, unless it already is. */
  async markNetworkAvailable(node: V1Node, signal: AbortSignal): Promise<void> {
    const current = node.status?.conditions?.find((c) => c.type === 'NetworkUnavailable');
    if (current?.status === 'False') return;
    const now = new Date().toISOString();
    const condition = {
      type: 'NetworkUnavailable',
      status: 'False',
      reason: 'FlannelIsUp',
      message: 'Flannel is running on this node',
      lastTransitionTime: now,
      lastHeartbeatTime: now,
    };
    await this.retrying('set NetworkUnavailable=False', signal, () =>
      this.api.patchNodeStatus({ name: this.opts.nodeName, body: { status: { conditions: [condition] } } }, STRATEGIC_MERGE),
    );
    this.log.info({ node: this.opts.nodeName }, 'set node condition NetworkUnavailable=False');
  }

  private async waitForPodCIDR(signal: AbortSignal): Promise<V1Node> {
    let delay = this.initialDelayMs;
    let logged = false;
    for (;;) {
      const node = await this.retrying(`read node ${this.opts.nodeName}`, signal, () => this.api.readNode({ name: this.opts.nodeName }));
      if (node.spec?.podCIDR || node.spec?.podCIDRs?.length) return node;
      const fields = { node: this.opts.nodeName, retryInMs: delay };
      if (!logged) this.log.info(fields, 'waiting for spec.podCIDR (is the controller manager allocating node CIDRs?)');
      else this.log.debug(fields, 'still waiting for spec.podCIDR');
      logged = true;
      await sleep(delay, signal);
      delay = Math.min(delay * 2, this.maxDelayMs);
    }
  }

  /** The address to publish: a user's public-ip-overwrite (public-ipv6-overwrite) annotation wins, as in flannel. */
  private publishedIP(node: V1Node, detected: string, family: 4 | 6 = 4): string {
    const annotation = family === 4 ? this.keys.publicIPOverwrite : this.keys.publicIPv6Overwrite;
    const overwrite = node.metadata?.annotations?.[annotation];
    if (overwrite === undefined || overwrite === '') return detected;
    const ip = parseIp(overwrite);
    if (ip?.family !== family) {
      this.log.warn({ annotation, value: overwrite }, 'ignoring an invalid public IP overwrite');
      return detected;
    }
    if (overwrite !== detected) this.log.info({ detected, overwrite }, 'publishing the public IP from the overwrite annotation');
    return overwrite;
  }

  /** Runs `call` until it succeeds, backing off on transient errors; fatal API errors throw at once. */
  private async retrying<T>(what: string, signal: AbortSignal, call: () => Promise<T>): Promise<T> {
    let delay = this.initialDelayMs;
    for (let attempt = 1; ; attempt++) {
      signal.throwIfAborted();
      try {
        return await call();
      } catch (err) {
        signal.throwIfAborted();
        const summary = summarize(err);
        this.opts.metrics?.apiError(what.replace(` ${this.opts.nodeName}`, ''));
        if (summary.code !== undefined && FATAL_CODES.has(summary.code)) {
          throw new KubeSubnetError(`${what}: HTTP ${summary.code}: ${summary.message}`);
        }
        this.log.warn({ err: summary, attempt, retryInMs: delay }, `${what} failed; retrying`);
        await sleep(delay, signal);
        delay = Math.min(delay * 2, this.maxDelayMs);
      }
    }
  }

  /** One watch from `resourceVersion` until it closes, fails, expires, stays silent for watchIdleMs or `stop` aborts. */
  private watchOnce(
    resourceVersion: string,
    stop: AbortSignal,
    onEvent: (type: 'ADDED' | 'MODIFIED' | 'DELETED', node: V1Node) => void,
    onBookmark: (resourceVersion: string) => void = () => undefined,
  ): Promise<WatchEnd> {
    return new Promise((resolve) => {
      let controller: AbortController | undefined;
      let finished = false;
      let idleTimer: NodeJS.Timeout | undefined;
      // One timer re-armed when it fires, not one per event: a burst of thousands of events costs a clock read each.
      let lastHeard = performance.now();
      const checkIdle = (): void => {
        const quietMs = performance.now() - lastHeard;
        if (quietMs >= this.watchIdleMs) return finish({ kind: 'idle' });
        idleTimer = setTimeout(checkIdle, this.watchIdleMs - quietMs);
      };
      const finish = (end: WatchEnd): void => {
        if (finished) return;
        finished = true;
        clearTimeout(idleTimer);
        stop.removeEventListener('abort', onStop);
        // A request still waiting for its response headers cannot be aborted
        // (client-node hands out the controller only with the response): it is
        // left to TCP to fail, and aborted then, while a new watch goes on.
        controller?.abort();
        resolve(end);
      };
      const onStop = (): void => finish({ kind: 'stopped' });
      if (stop.aborted) return finish({ kind: 'stopped' });
      stop.addEventListener('abort', onStop, { once: true });
      // Counted from the request on: a connection dead before the response headers counts too.
      if (this.watchIdleMs > 0) idleTimer = setTimeout(checkIdle, this.watchIdleMs);

      const query: Record<string, string | boolean> = { allowWatchBookmarks: true };
      if (resourceVersion) query.resourceVersion = resourceVersion;
      const handle = (type: string, object: unknown): void => {
        if (finished) return;
        lastHeard = performance.now();
        if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') return onEvent(type, object as V1Node);
        if (type === 'ERROR') {
          const status = object as { code?: number; message?: string } | undefined;
          if (status?.code === 410) return finish({ kind: 'expired' });
          return finish({ kind: 'error', error: { ...(status?.code ? { code: status.code } : {}), message: status?.message ?? 'watch error event' } });
        }
        // BOOKMARK only moves the resourceVersion, so the next watch need not start from an old one the cache forgot.
        if (type === 'BOOKMARK') {
          const rv = (object as { metadata?: { resourceVersion?: unknown } } | undefined)?.metadata?.resourceVersion;
          if (typeof rv === 'string' && rv) onBookmark(rv);
        }
      };
      const done = (err: unknown): void => finish(err ? { kind: 'error', error: summarize(err) } : { kind: 'closed' });
      this.watcher.watch('/api/v1/nodes', query, handle, done).then(
        (c) => {
          controller = c;
          if (finished) c.abort();
        },
        (err: unknown) => finish({ kind: 'error', error: summarize(err) }),
      );
    });
  }

  private linked(signal?: AbortSignal): AbortSignal {
    return signal ? AbortSignal.any([signal, this.closing.signal]) : this.closing.signal;
  }
}

/** Chooses the API credentials the way client-go's BuildConfigFromFlags does. */
export function loadKubeConfig(
  opts: Pick<KubeSubnetManagerOptions, 'kubeconfig' | 'apiServerUrl'>,
  env: NodeJS.ProcessEnv,
): { config: KubeConfig; source: string } {
  const config = new KubeConfig();
  let source: string;
  if (opts.kubeconfig) {
    try {
      config.loadFromFile(opts.kubeconfig);
    } catch (err) {
      throw new KubeSubnetError(`cannot load kubeconfig ${opts.kubeconfig}: ${kubeconfigProblem(err)}`);
    }
    if (!config.getCurrentCluster()) throw new KubeSubnetError(`kubeconfig ${opts.kubeconfig} has no current cluster`);
    source = `kubeconfig ${opts.kubeconfig}`;
    if (opts.apiServerUrl) setServer(config, opts.apiServerUrl);
  } else if (opts.apiServerUrl) {
    const name = 'tsflannel';
    config.loadFromOptions({
      clusters: [{ name, server: opts.apiServerUrl, skipTLSVerify: false }],
      users: [{ name }],
      contexts: [{ name, cluster: name, user: name }],
      currentContext: name,
    });
    source = 'API server URL without credentials';
  } else if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT) {
    config.loadFromCluster();
    source = 'in-cluster service account';
  } else if (env.KUBECONFIG) {
    return loadKubeConfig({ kubeconfig: env.KUBECONFIG.split(':').find(Boolean)! }, {});
  } else {
    throw new KubeSubnetError('no Kubernetes API configured: run in a pod, pass --kubeconfig-file, or set KUBECONFIG');
  }
  // client-node refuses http:// servers unless TLS checks are "skipped"; with
  // no TLS there is nothing to skip, and kubectl accepts such servers too.
  const server = config.getCurrentCluster()!.server;
  if (server.startsWith('http:')) setServer(config, server, true);
  return { config, source };
}

function setServer(config: KubeConfig, server: string, plainHttp = false): void {
  const current = config.getCurrentCluster()!;
  config.loadFromOptions({
    clusters: config.clusters.map((c) => (c.name === current.name ? { ...c, server, ...(plainHttp ? { skipTLSVerify: true } : {}) } : c)),
    users: config.users,
    contexts: config.contexts,
    currentContext: config.currentContext,
  });
}

// YAML errors quote the offending lines, which may hold a token: report only where it broke.
function kubeconfigProblem(err: unknown): string {
  const e = err as { code?: unknown; reason?: unknown; mark?: { line?: number }; message?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (typeof e.reason === 'string') return `invalid YAML (${e.reason}${e.mark?.line !== undefined ? ` at line ${e.mark.line + 1}` : ''})`;
  return 'invalid kubeconfig';
}

/** Request options that abort the call with `signal`: a stalled response must not hold the lease watch forever. */
function withSignal(signal: AbortSignal): ConfigurationOptions {
  const middleware: ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(signal);
      return new Observable(Promise.resolve(ctx));
    },
    post: (res) => new Observable(Promise.resolve(res)),
  };
  return { middleware: [middleware], middlewareMergeStrategy: 'append' };
}

/** The Node fields a lease is made of: pod CIDRs and flannel's annotations (status, labels and other annotations are not). */
export function leaseFields(node: V1Node, keys: AnnotationKeys): string {
  const ann = node.metadata?.annotations ?? {};
  return JSON.stringify([node.spec?.podCIDR ?? null, node.spec?.podCIDRs ?? null, Object.values(keys).map((k) => ann[k] ?? null)]);
}

/** `ms` scaled by a random factor in [0.8, 1.2): periodic work of agents started together drifts apart. */
export function jittered(ms: number, random: () => number = Math.random): number {
  return Math.round(ms * (0.8 + 0.4 * random()));
}

/** What may be logged about an API error: the HTTP code and the server's message, never headers. */
function summarize(err: unknown): ErrorSummary {
  if (err instanceof ApiException) {
    const body = (typeof err.body === 'string' ? safeJson(err.body) : err.body) as { message?: unknown } | undefined;
    const message = typeof body?.message === 'string' ? body.message : `HTTP ${err.code}`;
    return { code: err.code, message: message.slice(0, 300) };
  }
  const e = err as { statusCode?: unknown; name?: unknown; message?: unknown };
  const summary: ErrorSummary = { message: `${typeof e.name === 'string' ? e.name : 'Error'}: ${String(e.message ?? err).slice(0, 300)}` };
  if (typeof e.statusCode === 'number') summary.code = e.statusCode;
  return summary;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Runs `task` with a signal that aborts with `signal` or after `ms`. A plain
 * timer, not AbortSignal.any([signal, AbortSignal.timeout(ms)]): Node 20
 * holds the timeout signal inside such a composite only weakly, so after a
 * garbage collection the deadline never fired and a list whose answer was
 * cut off mid-body (node-fetch never notices a short Content-Length body)
 * held the lease watch forever.
 */
export async function withDeadline<T>(signal: AbortSignal, ms: number, task: (deadline: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = new AbortController();
  const onAbort = (): void => deadline.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => deadline.abort(new DOMException(`no complete answer within ${ms} ms`, 'TimeoutError')), ms);
  try {
    return await task(deadline.signal);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}

/** Waits `ms`, or rejects with the signal's reason when it aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Waits `ms`, ending early (without error) when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(ms, signal).catch(() => undefined);
}
