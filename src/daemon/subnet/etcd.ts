// The etcd subnet manager: flannel's etcd v3 layout, so tsflanneld and
// flanneld nodes can share one store.
//   <prefix>/config                     net-conf.json
//   <prefix>/subnets/10.244.1.0-24      {"PublicIP":...,"BackendType":...,"BackendData":{...}}
//   <prefix>/subnets/10.244.1.0-24&fd00:10:244:1::-64   dual-stack, "PublicIPv6" and "BackendV6Data" set
//   <prefix>/subnets/0.0.0.0-0&fd00:10:244:1::-64       IPv6-only (flannel's key for an empty IPv4 subnet)
// A node's key hangs on an etcd lease with a TTL; a key without a lease is
// a reservation made by an operator and is kept without a TTL.
import {
  Etcd3,
  EtcdError,
  EtcdLeaseInvalidError,
  EtcdWatchStreamEnded,
  GRPCGenericError,
  isRecoverableError,
  Range,
  type IKeyValue,
  type IOptions,
} from 'etcd3';
import { InterceptingCall, type Interceptor } from '@grpc/grpc-js';
import pino from 'pino';
import { parseNetworkConfig } from '../config.js';
import { etcdClientOptions, type EtcdSecurity } from './etcd-client.js';
import type { BackendData, Lease, LeaseAttrs, NetworkConfig, PriorLease, SubnetManager } from '../types.js';
import { addressOrderKey, cidrContainsIp, cidrOverlaps, parseCidr, parseIp } from '../../net/ip.js';
import { inRange, ipv6RangeOf, leaseKey, parseLeaseKey, pickFreeSubnet, type SubnetRange } from './allocate.js';
import { LeaseList } from './lease-list.js';
import { Coalescer, DEFAULT_COALESCE_MS } from './coalesce.js';
import { renewalDelayMs, renewalRetryMs } from './renewal.js';

export interface EtcdSubnetManagerOptions {
  endpoints: string[];
  /** default /coreos.com/network, as flannel */
  prefix?: string;
  /** TTL of this node's key; default 86400 s, as flannel */
  leaseTtlSeconds?: number;
  nodeName?: string;
  logger?: pino.Logger;
  /** renew at the latest this long before the lease runs out */
  renewMarginSeconds?: number;
  /** the subnet this node had before (subnet.env): asked for first when free */
  previousSubnet?: string;
  /** the IPv6 subnet this node had before (subnet.env's FLANNEL_IPV6_SUBNET) */
  previousIPv6Subnet?: string;
  /**
   * Called when another node has taken our subnet (our key expired while we
   * were cut off and someone else claimed it). flannel exits then; the agent
   * should too. Renewal stops.
   */
  onLeaseLost?: (reason: string) => void;
  /**
   * Called after each read of the network configuration that etcd answered
   * (the key there or not): these TLS files and credentials work, which is
   * all the start-up access check (main.ts) could find out.
   */
  onConfigRead?: () => void;
  /** random source for picking among free subnets (tests) */
  random?: () => number;
  /** deadline of each etcd request, default 5000 ms */
  requestTimeoutMs?: number;
  /** TLS files and user/password (flannel's --etcd-* flags) */
  security?: EtcdSecurity;
  /** counts API errors and watch restarts (tsflannel_api_errors_total, tsflannel_watch_restarts_total) */
  metrics?: { apiError(operation: string): void; watchRestart(reason: string): void; leaseEvent?(result: 'changed' | 'ignored'): void };
  /** lease changes within this long of the last delivery go to the backend together (Coalescer), default 200 ms */
  coalesceMs?: number;
  /** keys per range request when listing leases, default 1000 */
  listPageSize?: number;
  /** gRPC keepalive pings while a call is open, default every 30 s, answered within 10 s (as kube-apiserver's etcd client) */
  keepalive?: { timeMs: number; timeoutMs: number };
}

/** Our own faults: retrying cannot help, so acquireLease gives up on them. */
export class SubnetError extends Error {
  override readonly name = 'SubnetError';
}

class LeaseLostError extends Error {
  override readonly name = 'LeaseLostError';
}

/** Key held by someone else or created meanwhile: look again soon. */
class ConflictError extends Error {
  override readonly name = 'ConflictError';
}

/** Refused locally because the endpoint failed several times in a row. */
class EndpointDownError extends Error {
  override readonly name = 'EndpointDownError';
}

/** Errors that waiting can cure: etcd down, slow, or a race with another writer. */
function isTransient(err: unknown): boolean {
  return (
    err instanceof GRPCGenericError ||
    err instanceof EtcdError ||
    err instanceof EtcdLeaseInvalidError ||
    err instanceof EtcdWatchStreamEnded ||
    err instanceof EndpointDownError ||
    err instanceof ConflictError ||
    (err instanceof Error && isRecoverableError(err))
  );
}

export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';
export const DEFAULT_LEASE_TTL_SECONDS = 24 * 60 * 60;
/** flannel's AcquireLease gives up after this many lost races. */
const RACE_RETRIES = 10;
const MAX_RENEW_INTERVAL_MS = 60_000;
/** keys per range request when listing leases (about 250 bytes each) */
const LIST_PAGE = 1000;
const MIN_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5_000;
const NO_LEASE = '0';
/**
 * kube-apiserver's etcd client values. etcd refuses pings more often than
 * its --grpc-keepalive-min-time (5 s by default) and, without an open call,
 * any ping at all: pings go out only while a call (the lease watch) is open.
 */
const KEEPALIVE_TIME_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;

interface StoredLease {
  key: string;
  /** '' for an IPv6-only key */
  subnet: string;
  ipv6Subnet?: string;
  /** undefined when the value cannot be read as LeaseAttrs */
  attrs: LeaseAttrs | undefined;
  value: string;
  modRevision: string;
  createRevision: string;
  leaseId: string;
}

interface OwnLease {
  key: string;
  subnet: string;
  ipv6Subnet?: string;
  attrs: LeaseAttrs;
  value: string;
  /** etcd lease ID, NO_LEASE for a reservation */
  leaseId: string;
  expiration?: Date;
  stop: AbortController;
  /** cuts the renewal loop's wait short: set while it waits */
  nudge?: () => void;
}

// ---------- value encoding (flannel's LeaseAttrs JSON) ----------

/**
 * flannel's LeaseAttrs JSON, fields in Go's order. PublicIP is a Go ip.IP4
 * value there, never absent: an IPv6-only node writes its zero value,
 * 0.0.0.0, as flanneld does; PublicIPv6 is a pointer, null when unset.
 */
export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  const hasData = Object.keys(attrs.backendData).length > 0;
  const hasV6Data = attrs.backendV6Data !== undefined && Object.keys(attrs.backendV6Data).length > 0;
  return JSON.stringify({
    PublicIP: attrs.publicIP === '' ? ZERO_IPV4 : attrs.publicIP,
    PublicIPv6: attrs.publicIPv6 ?? null,
    BackendType: attrs.backendType,
    // host-gw has nothing to publish; flannel then leaves the field out.
    ...(hasData ? { BackendData: attrs.backendData } : {}),
    ...(hasV6Data ? { BackendV6Data: attrs.backendV6Data } : {}),
  });
}

const ZERO_IPV4 = '0.0.0.0';

/** Whether a stored lease names the same node as `mine`: by IPv4 public address, or IPv6 for an IPv6-only node. */
function sameHolder(stored: LeaseAttrs | undefined, mine: LeaseAttrs): boolean {
  if (!stored) return false;
  return mine.publicIP !== '' ? stored.publicIP === mine.publicIP : stored.publicIPv6 === mine.publicIPv6;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function decodeBackendData(raw: unknown): BackendData | undefined {
  if (raw === undefined || raw === null) return {};
  if (!isRecord(raw)) return undefined;
  const data: BackendData = {};
  if (raw.VNI !== undefined) {
    if (typeof raw.VNI !== 'number' || !Number.isInteger(raw.VNI)) return undefined;
    data.VNI = raw.VNI;
  }
  if (raw.VtepMAC !== undefined) {
    if (typeof raw.VtepMAC !== 'string') return undefined;
    data.VtepMAC = raw.VtepMAC;
  }
  if (raw.PublicKey !== undefined) {
    if (typeof raw.PublicKey !== 'string') return undefined;
    data.PublicKey = raw.PublicKey;
  }
  return data;
}

/** LeaseAttrs from a stored value; undefined if it is not one we can use. */
export function decodeLeaseAttrs(value: string): LeaseAttrs | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch {
    return undefined;
  }
  if (!isRecord(raw)) return undefined;
  const { PublicIP, PublicIPv6, BackendType } = raw;
  if (typeof PublicIP !== 'string' || parseIp(PublicIP, 4) === undefined) return undefined;
  if (PublicIPv6 !== undefined && PublicIPv6 !== null && (typeof PublicIPv6 !== 'string' || parseIp(PublicIPv6, 6) === undefined)) return undefined;
  if (BackendType !== 'vxlan' && BackendType !== 'host-gw' && BackendType !== 'wireguard') return undefined;
  const backendData = decodeBackendData(raw.BackendData);
  if (!backendData) return undefined;
  const hasV6 = typeof PublicIPv6 === 'string';
  // 0.0.0.0 next to an IPv6 address is flannel's "no IPv4 address" (an IPv6-only node).
  const attrs: LeaseAttrs = { publicIP: hasV6 && PublicIP === ZERO_IPV4 ? '' : PublicIP, backendType: BackendType, backendData };
  if (hasV6) attrs.publicIPv6 = PublicIPv6;
  if (raw.BackendV6Data !== undefined && raw.BackendV6Data !== null) {
    const backendV6Data = decodeBackendData(raw.BackendV6Data);
    if (!backendV6Data) return undefined;
    attrs.backendV6Data = backendV6Data;
  }
  return attrs;
}

// ---------- etcd client ----------

/**
 * clientv3's WithRequireLeader on the lease watch, as flanneld asks for it:
 * a member cut off from the rest of its cluster has no leader and receives
 * no writes, so a watch on it would go quiet while the others carry on. With
 * this metadata the member ends the watch once it has been without a leader
 * for a few election timeouts, and the watch lists again on another member.
 */
const requireLeaderOnWatch: Interceptor = (options, nextCall) => {
  if (options.method_definition.path !== '/etcdserverpb.Watch/Watch') return new InterceptingCall(nextCall(options));
  return new InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      metadata.set('hasleader', 'true');
      next(metadata, listener);
    },
  });
};

// ---------- small async helpers ----------

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(ok);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function backoffMs(failures: number, maxMs: number): number {
  const base = Math.min(maxMs, MIN_BACKOFF_MS * 2 ** Math.min(failures - 1, 16));
  // Jitter so that many agents do not hammer a recovering etcd in step.
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function anySignal(signals: (AbortSignal | undefined)[]): AbortSignal {
  return AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined));
}

/**
 * Per-endpoint circuit breaker in the shape etcd3 expects. etcd3's own one
 * keeps an endpoint blocked for 5 s after three failures; with a single etcd
 * that delays renewal after an outage by as much, which eats into short
 * TTLs. Blocked calls are refused without calling through, which is what
 * lets etcd3 move on to the next endpoint.
 */
type HostPolicy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;

function hostBreaker(halfOpenMs: number): HostPolicy {
  let failures = 0;
  let openUntil = 0;
  const policy = {
    async execute<T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
      if (Date.now() < openUntil) throw new EndpointDownError('etcd endpoint marked down after repeated failures; retrying it shortly');
      try {
        const result = await fn({ signal: signal ?? new AbortController().signal });
        failures = 0;
        return result;
      } catch (err) {
        if (err instanceof Error && isRecoverableError(err) && ++failures >= 3) {
          openUntil = Date.now() + halfOpenMs;
          failures = 0;
        }
        throw err;
      }
    },
  };
  // etcd3 only ever calls execute(); the other IPolicy members are events it never reads.
  return policy as unknown as HostPolicy;
}

// ---------- the manager ----------

export class EtcdSubnetManager implements SubnetManager {
  readonly kind = 'etcd' as const;
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly subnetsPrefix: string;
  private readonly ttl: number;
  private readonly renewIntervalMs: number;
  private readonly log: pino.Logger;
  private readonly closing = new AbortController();
  private own: OwnLease | undefined;
  private previousSubnet: string | undefined;
  private previousIPv6Subnet: string | undefined;
  private readonly background = new Set<Promise<void>>();

  constructor(private readonly opts: EtcdSubnetManagerOptions) {
    if (opts.endpoints.length === 0) throw new TypeError('EtcdSubnetManager needs at least one etcd endpoint');
    this.prefix = (opts.prefix ?? DEFAULT_ETCD_PREFIX).replace(/\/+$/, '');
    this.subnetsPrefix = `${this.prefix}/subnets/`;
    this.ttl = opts.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    this.previousSubnet = opts.previousSubnet;
    this.previousIPv6Subnet = opts.previousIPv6Subnet;
    if (!Number.isInteger(this.ttl) || this.ttl < 2) throw new TypeError(`leaseTtlSeconds must be an integer >= 2, got ${this.ttl}`);
    // flannel renews an hour before expiry; short TTLs renew at a third.
    const margin = opts.renewMarginSeconds ?? Math.min(3600, (this.ttl * 2) / 3);
    if (!(margin > 0 && margin < this.ttl)) throw new TypeError(`renewMarginSeconds must be in (0, ${this.ttl}), got ${margin}`);
    // Renewal also checks that our key still exists, so it runs at least once a minute.
    this.renewIntervalMs = Math.max(500, Math.min(MAX_RENEW_INTERVAL_MS, (this.ttl - margin) * 1000));
    this.log = (opts.logger ?? pino({ level: 'info' }, pino.destination(2))).child({ component: 'etcd-subnet' });
    const timeout = opts.requestTimeoutMs ?? 5000;
    this.client = new Etcd3({
      ...etcdClientOptions(opts.endpoints, opts.security ?? {}),
      dialTimeout: timeout,
      // Unary calls get a deadline; the watch stream lives on, and keepAlive sets its own.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: { host: () => hostBreaker(Math.min(1000, this.renewIntervalMs)) },
      // A connection that dies without a FIN or RST (the etcd host lost power,
      // a NAT or load balancer forgot the flow) is otherwise never noticed by
      // the lease watch, which only reads: it would wait on it until TCP gives
      // up on the unanswered renewals (about 15 min), seeing no lease change.
      // A ping left unanswered closes it; the watch breaks and lists again
      // over a new connection.
      grpcOptions: {
        'grpc.keepalive_time_ms': opts.keepalive?.timeMs ?? KEEPALIVE_TIME_MS,
        'grpc.keepalive_timeout_ms': opts.keepalive?.timeoutMs ?? KEEPALIVE_TIMEOUT_MS,
        interceptors: [requireLeaderOnWatch],
      },
    });
  }

  private get configKey(): string {
    return `${this.prefix}/config`;
  }

  async getNetworkConfig(): Promise<NetworkConfig> {
    const text = await this.client.get(this.configKey).string();
    this.opts.onConfigRead?.();
    if (text === null) {
      throw new SubnetError(`no network configuration in etcd at ${this.configKey} (written with the etcd v3 API?)`);
    }
    return parseNetworkConfig(text);
  }

  async acquireLease(attrs: LeaseAttrs, signal?: AbortSignal, prior?: PriorLease): Promise<Lease> {
    if (attrs.publicIP !== '' || attrs.publicIPv6 === undefined) {
      if (parseIp(attrs.publicIP, 4) === undefined) throw new TypeError(`publicIP must be an IPv4 address, got ${attrs.publicIP}`);
    }
    if (attrs.publicIPv6 !== undefined && parseIp(attrs.publicIPv6, 6) === undefined) {
      throw new TypeError(`publicIPv6 must be an IPv6 address, got ${attrs.publicIPv6}`);
    }
    if (prior?.subnet) this.previousSubnet = prior.subnet;
    if (prior?.ipv6Subnet) this.previousIPv6Subnet = prior.ipv6Subnet;
    const stop = anySignal([signal, this.closing.signal]);
    const own = await this.retrying('acquire subnet lease', stop, () => this.acquireOnce(attrs));
    // The old renewal keeps running until the new lease is safely in place.
    const previous = this.own;
    previous?.stop.abort();
    if (previous && previous.leaseId !== NO_LEASE && previous.leaseId !== own.leaseId) {
      // Its key now hangs on the new lease, so revoking deletes nothing.
      this.client.leaseClient.leaseRevoke({ ID: previous.leaseId }).catch(() => undefined);
    }
    this.own = own;
    this.track(this.renewLoop(own));
    this.log.info({ subnet: own.subnet, ipv6Subnet: own.ipv6Subnet, key: own.key, ttl: own.leaseId === NO_LEASE ? 0 : this.ttl }, 'acquired subnet lease');
    return this.toLease(own);
  }

  async watchLeases(onLeases: (leases: Lease[]) => void, signal: AbortSignal): Promise<void> {
    const stop = anySignal([signal, this.closing.signal]);
    // Kept across watch events and re-lists: an event costs what it changes, not the cluster's size.
    const list = new LeaseList((lease) => addressOrderKey(lease.subnet || lease.ipv6Subnet || ''));
    let first = true;
    const emit = (state: Map<string, StoredLease>) => {
      this.noticeOwnKey(state);
      // The first list goes out even when empty: the agent waits for it.
      const leases = list.take(first);
      if (!leases) return;
      first = false;
      try {
        onLeases(leases);
      } catch (err) {
        this.log.error({ err: errText(err) }, 'lease handler failed');
      }
    };
    // Watch responses in a burst (thousands of keys written or expiring at once) become a few lease sets.
    let current = new Map<string, StoredLease>();
    const batch = new Coalescer(() => emit(current), this.opts.coalesceMs ?? DEFAULT_COALESCE_MS);
    let failures = 0;
    while (!stop.aborted) {
      try {
        const snapshot = await this.list();
        const state = new Map(snapshot.entries.map((e) => [e.key, e]));
        batch.reset();
        current = state;
        list.replaceAll(this.leaseEntries(state.values()));
        emit(state);
        if (failures > 0) this.log.info('watching subnet leases again');
        failures = 0;
        try {
          await this.watchFrom(snapshot.revision, state, list, () => batch.changed(), stop);
        } finally {
          batch.flush();
        }
      } catch (err) {
        if (stop.aborted) break;
        failures++;
        this.opts.metrics?.watchRestart('error');
        const log = failures === 1 ? this.log.warn.bind(this.log) : this.log.debug.bind(this.log);
        log({ err: errText(err), failures }, 'subnet lease watch failed; listing again with backoff');
        await sleep(backoffMs(failures, MAX_BACKOFF_MS), stop);
      }
    }
  }

  /**
   * Our key gone from a listing or a watch (deleted, or etcd wiped and
   * restored): re-register now rather than at the next renewal tick, which
   * may be a minute away, so the other nodes get our routes back at once.
   */
  private noticeOwnKey(state: Map<string, StoredLease>): void {
    const own = this.own;
    if (!own || state.has(own.key) || !own.nudge) return;
    this.log.warn({ subnet: own.subnet, key: own.key }, 'our subnet lease is gone from etcd (deleted, or etcd wiped?); re-registering now');
    own.nudge();
  }

  async close(): Promise<void> {
    // Like flannel, the key is left in place: a restarted agent finds it again.
    this.closing.abort();
    await Promise.allSettled([...this.background]);
    this.client.close();
  }

  // ---------- acquisition ----------

  private async acquireOnce(attrs: LeaseAttrs): Promise<OwnLease> {
    const config = await this.getNetworkConfig();
    if (config.enableIPv4 && attrs.publicIP === '') throw new SubnetError('EnableIPv4 is true but this node publishes no IPv4 address');
    if (config.enableIPv6 && attrs.publicIPv6 === undefined) {
      throw new SubnetError('EnableIPv6 is true but this node publishes no IPv6 address (give --public-ipv6, or an interface with a global IPv6 address)');
    }
    const value = encodeLeaseAttrs(attrs);
    const grant = this.lazyGrant();
    try {
      for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
        const own = await this.tryAcquire(config, attrs, value, grant.get);
        if (own) {
          if (own.leaseId !== grant.id) await grant.release();
          return own;
        }
        this.log.debug({ attempt }, 'lost a race for a subnet; trying another');
      }
    } catch (err) {
      await grant.release();
      throw err;
    }
    await grant.release();
    throw new SubnetError(`no subnet acquired after ${RACE_RETRIES} attempts: other nodes keep taking the ones we pick`);
  }

  /** One etcd lease per acquisition, granted when first needed and reused across lost races. */
  private lazyGrant(): { get: () => Promise<string>; id: string | undefined; release: () => Promise<void> } {
    const state = {
      id: undefined as string | undefined,
      get: async () => {
        state.id ??= (await this.client.leaseClient.leaseGrant({ TTL: this.ttl })).ID;
        return state.id;
      },
      release: async () => {
        if (state.id === undefined) return;
        const id = state.id;
        state.id = undefined;
        await this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
      },
    };
    return state;
  }

  /** One pass of flannel's AcquireLease; undefined when a race was lost. */
  private async tryAcquire(
    config: NetworkConfig,
    attrs: LeaseAttrs,
    value: string,
    grant: () => Promise<string>,
  ): Promise<OwnLease | undefined> {
    const { entries } = await this.list();
    let others = entries;
    const mine = entries.find((e) => sameHolder(e.attrs, attrs)) ?? this.formerSelf(entries, attrs);
    if (mine) {
      if (fitsNetwork(config, mine.subnet, mine.ipv6Subnet)) return this.reuse(mine, value, attrs, grant);
      this.log.warn({ subnet: mine.subnet, network: config.network, subnetLen: config.subnetLen }, 'our old subnet does not fit the network config; releasing it');
      await this.client.if(mine.key, 'Mod', '==', mine.modRevision).then(this.client.delete().key(mine.key)).commit();
      others = entries.filter((e) => e !== mine);
    }
    const subnet = config.enableIPv4 ? this.pickSubnet(config, this.previousSubnet, others.map((e) => e.subnet)) : '';
    const v6Range = ipv6RangeOf(config);
    const ipv6Subnet = v6Range && this.pickSubnet(v6Range, this.previousIPv6Subnet, others.flatMap((e) => e.ipv6Subnet ?? []));
    const key = this.subnetsPrefix + leaseKey(ipv6Subnet === undefined ? { subnet } : { subnet, ipv6Subnet });
    const leaseId = await grant();
    const created = await this.client
      .if(key, 'Create', '==', 0)
      .then(this.client.put(key).value(value).lease(leaseId))
      .commit();
    if (!created.succeeded) return undefined;
    if (subnet !== '' && ipv6Subnet !== undefined && (await this.lostDualStackRace(key, created.header.revision, subnet, ipv6Subnet))) {
      await this.client.if(key, 'Create', '==', created.header.revision).then(this.client.delete().key(key)).commit();
      return undefined;
    }
    return this.ownLease(key, subnet, attrs, value, leaseId, ipv6Subnet);
  }

  /**
   * A dual-stack key names both subnets, so Create == 0 on it guards only the
   * pair: two nodes may pick the same IPv4 subnet with different IPv6 ones
   * (each family is picked apart) and both succeed. After creating, the key
   * created first that shares either subnet wins; the later one yields and
   * picks again. Both sides check after their own create, so exactly one of
   * them sees the other and yields.
   */
  private async lostDualStackRace(key: string, revision: string, subnet: string, ipv6Subnet: string): Promise<boolean> {
    const ours = BigInt(revision);
    const { entries } = await this.list();
    return entries.some((e) => e.key !== key && BigInt(e.createRevision) < ours && (e.subnet === subnet || e.ipv6Subnet === ipv6Subnet));
  }

  /** The previous subnet when it is free and in range, else a free one; throws when the range is full. */
  private pickSubnet(range: SubnetRange, previous: string | undefined, taken: string[]): string {
    const preferred = this.preferredSubnet(range, previous, taken);
    if (preferred) this.log.info({ subnet: preferred }, 'found previously leased subnet, reusing');
    else if (previous) this.log.warn({ previous }, 'previously leased subnet is taken or outside the network; picking another');
    const subnet = preferred ?? pickFreeSubnet(range, taken, this.opts.random);
    if (!subnet) {
      throw new SubnetError(`out of subnets: all /${range.subnetLen} subnets from ${range.subnetMin} to ${range.subnetMax} are taken`);
    }
    return subnet;
  }

  /**
   * Our lease published under an address this node no longer has: it sits
   * on the subnet our subnet.env names and carries our VTEP MAC (the device
   * keeps its MAC when its underlay address changes) or, with WireGuard, our
   * public key (kept in its key file). Updated in place, it keeps the
   * subnet, so pods keep their addresses. host-gw publishes nothing of the
   * kind, so its old lease cannot be told from another node's.
   */
  private formerSelf(entries: StoredLease[], attrs: LeaseAttrs): StoredLease | undefined {
    // An IPv6-only node is known by its IPv6 subnet and its IPv6 VTEP's MAC.
    const v6only = attrs.publicIP === '';
    const idOf = (a: LeaseAttrs | undefined): string | undefined => {
      const data = v6only ? a?.backendV6Data : a?.backendData;
      if (data?.VtepMAC) return `mac ${data.VtepMAC.toLowerCase()}`;
      // WireGuard keys are base64: case matters.
      return data?.PublicKey ? `key ${data.PublicKey}` : undefined;
    };
    const id = idOf(attrs);
    const previous = v6only ? this.previousIPv6Subnet : this.previousSubnet;
    if (!id || !previous) return undefined;
    const former = entries.find((e) => (v6only ? e.ipv6Subnet : e.subnet) === previous && idOf(e.attrs) === id);
    if (former) {
      this.log.warn(
        { subnet: former.subnet, oldPublicIP: former.attrs?.publicIP, publicIP: attrs.publicIP },
        `found this node's lease under an older public IP (same subnet and ${id.startsWith('mac') ? 'VTEP MAC' : 'WireGuard public key'}); updating it in place`,
      );
    }
    return former;
  }

  private preferredSubnet(range: SubnetRange, previous: string | undefined, taken: string[]): string | undefined {
    if (!previous || !inRange(range, previous)) return undefined;
    const net = parseCidr(previous)!;
    const free = taken.every((t) => {
      const other = parseCidr(t);
      return !other || !cidrOverlaps(net, other);
    });
    return free ? previous : undefined;
  }

  private async reuse(mine: StoredLease, value: string, attrs: LeaseAttrs, grant: () => Promise<string>): Promise<OwnLease | undefined> {
    // An operator's reservation (no lease) stays without a TTL, as in flannel.
    const leaseId = mine.leaseId === NO_LEASE ? NO_LEASE : await grant();
    const put = this.client.put(mine.key).value(value);
    if (leaseId !== NO_LEASE) put.lease(leaseId);
    const updated = await this.client.if(mine.key, 'Mod', '==', mine.modRevision).then(put).commit();
    if (!updated.succeeded) return undefined;
    return this.ownLease(mine.key, mine.subnet, attrs, value, leaseId, mine.ipv6Subnet);
  }

  private ownLease(key: string, subnet: string, attrs: LeaseAttrs, value: string, leaseId: string, ipv6Subnet?: string): OwnLease {
    const own: OwnLease = { key, subnet, attrs, value, leaseId, stop: new AbortController() };
    if (ipv6Subnet !== undefined) own.ipv6Subnet = ipv6Subnet;
    if (leaseId !== NO_LEASE) own.expiration = new Date(Date.now() + this.ttl * 1000);
    return own;
  }

  // ---------- renewal ----------

  private async renewLoop(own: OwnLease): Promise<void> {
    const stop = anySignal([own.stop.signal, this.closing.signal]);
    let failures = 0;
    let outageSince = 0;
    // Jittered (renewal.ts) so that thousands of agents started together do not renew in the same second,
    // and retried gently enough that they do not flood an etcd coming back.
    let round = 0;
    while (
      await this.renewalWait(own, failures === 0 ? renewalDelayMs(this.renewIntervalMs, round) : renewalRetryMs(failures, this.renewIntervalMs), stop)
    ) {
      try {
        await this.renewOnce(own);
        if (failures > 0) {
          this.log.info({ subnet: own.subnet, outageMs: Date.now() - outageSince }, 'etcd reachable again; subnet lease renewed');
        }
        // After an outage every agent came back within seconds: spread them over the interval again.
        round = failures > 0 ? 0 : round + 1;
        failures = 0;
      } catch (err) {
        if (stop.aborted) return;
        if (err instanceof LeaseLostError) {
          this.log.error({ subnet: own.subnet, err: err.message }, 'subnet lease lost; renewal stopped');
          this.opts.onLeaseLost?.(err.message);
          return;
        }
        if (failures === 0) outageSince = Date.now();
        failures++;
        this.opts.metrics?.apiError('renew subnet lease');
        // First failure is a warning; afterwards one line every ~10 attempts.
        if (failures === 1 || failures % 10 === 0) {
          this.log.warn({ subnet: own.subnet, err: errText(err), failures }, 'cannot renew subnet lease (etcd unreachable?); retrying with backoff');
        }
      }
    }
  }

  /** Sleeps until the next renewal, or less when nudged; false once stopped. */
  private async renewalWait(own: OwnLease, ms: number, stop: AbortSignal): Promise<boolean> {
    const nudged = new AbortController();
    own.nudge = () => nudged.abort();
    try {
      await sleep(ms, AbortSignal.any([stop, nudged.signal]));
    } finally {
      own.nudge = undefined;
    }
    return !stop.aborted;
  }

  /** Keeps the lease alive and makes sure our key still exists; recreates it if it expired. */
  private async renewOnce(own: OwnLease): Promise<void> {
    const alive = own.leaseId === NO_LEASE ? true : (await this.keepAlive(own.leaseId)) > 0;
    const kv = (await this.client.get(own.key).exec()).kvs[0];
    const holder = kv ? decodeLeaseAttrs(kv.value.toString()) : undefined;
    if (kv && sameHolder(holder, own.attrs)) {
      if (alive) {
        if (own.leaseId !== NO_LEASE) own.expiration = new Date(Date.now() + this.ttl * 1000);
        return;
      }
      // The key is ours but hangs on a lease that is gone: move it to a fresh one.
      await this.rebind(own, kv);
      return;
    }
    if (kv) {
      throw new LeaseLostError(`subnet ${own.subnet || own.ipv6Subnet} now belongs to ${(holder?.publicIP || holder?.publicIPv6) ?? 'an unreadable lease'}`);
    }
    await this.recreate(own);
  }

  private async rebind(own: OwnLease, kv: IKeyValue): Promise<void> {
    const leaseId = (await this.client.leaseClient.leaseGrant({ TTL: this.ttl })).ID;
    const res = await this.client
      .if(own.key, 'Mod', '==', kv.mod_revision)
      .then(this.client.put(own.key).value(own.value).lease(leaseId))
      .commit();
    if (!res.succeeded) throw new ConflictError(`subnet ${own.subnet} changed while renewing`);
    this.adopt(own, leaseId);
  }

  private async recreate(own: OwnLease): Promise<void> {
    const leaseId = (await this.client.leaseClient.leaseGrant({ TTL: this.ttl })).ID;
    const res = await this.client
      .if(own.key, 'Create', '==', 0)
      .then(this.client.put(own.key).value(own.value).lease(leaseId))
      .commit();
    if (!res.succeeded) {
      this.client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
      throw new ConflictError(`subnet ${own.subnet} was created by someone else while we re-acquired it`);
    }
    this.adopt(own, leaseId);
    this.log.warn({ subnet: own.subnet }, 'subnet lease had expired (etcd out of reach for longer than its TTL?); re-acquired the same subnet');
  }

  private adopt(own: OwnLease, leaseId: string): void {
    own.leaseId = leaseId;
    own.expiration = new Date(Date.now() + this.ttl * 1000);
  }

  /** One LeaseKeepAlive round trip; the remaining TTL, 0 when etcd no longer knows the lease. */
  private async keepAlive(leaseId: string): Promise<number> {
    const timeout = this.opts.requestTimeoutMs ?? 5000;
    const stream = await this.client.leaseClient.leaseKeepAlive({ deadline: Date.now() + timeout });
    return new Promise<number>((resolve, reject) => {
      stream.on('data', (res) => {
        stream.end();
        resolve(Number(res.TTL));
      });
      stream.on('error', reject);
      stream.on('end', () => reject(new Error('keepalive stream ended without an answer')));
      stream.write({ ID: leaseId });
    });
  }

  // ---------- listing and watching ----------

  /**
   * Every lease, in pages of LIST_PAGE keys read at the first page's
   * revision: one consistent snapshot, and no response near gRPC's 4 MiB
   * message limit however many nodes there are.
   */
  private async list(): Promise<{ revision: string; entries: StoredLease[] }> {
    const entries: StoredLease[] = [];
    const all = Range.prefix(this.subnetsPrefix);
    let start = all.start;
    let revision: string | undefined;
    for (;;) {
      const page = this.client.getAll().inRange(new Range(start, all.end)).limit(this.opts.listPageSize ?? LIST_PAGE);
      const res = await (revision === undefined ? page : page.revision(revision)).exec();
      revision ??= res.header.revision;
      for (const kv of res.kvs) {
        const entry = this.decode(kv);
        if (entry) entries.push(entry);
      }
      const last = res.kvs.at(-1);
      if (!res.more || !last) break;
      start = Buffer.concat([last.key, Buffer.from([0])]);
    }
    return { revision, entries };
  }

  private decode(kv: IKeyValue): StoredLease | undefined {
    const key = kv.key.toString();
    const subnets = parseLeaseKey(key.slice(this.subnetsPrefix.length));
    if (!subnets) return undefined;
    const value = kv.value.toString();
    return { key, ...subnets, attrs: decodeLeaseAttrs(value), value, modRevision: kv.mod_revision, createRevision: kv.create_revision, leaseId: kv.lease };
  }

  /** Applies watch events from `revision + 1` on; rejects when the watch breaks, resolves on stop. */
  private watchFrom(
    revision: string,
    state: Map<string, StoredLease>,
    list: LeaseList,
    emit: (state: Map<string, StoredLease>) => void,
    stop: AbortSignal,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const watcher = this.client
        .watch()
        .prefix(this.subnetsPrefix)
        .startRevision((BigInt(revision) + 1n).toString())
        .watcher();
      let finished = false;
      const finish = (err?: Error) => {
        if (finished) return;
        finished = true;
        stop.removeEventListener('abort', onStop);
        watcher.removeAllListeners();
        // etcd3 may still emit errors on a cancelled watcher; an unheard 'error' would crash us.
        watcher.on('error', () => undefined);
        watcher.cancel().catch(() => undefined);
        if (err) reject(err);
        else resolve();
      };
      const onStop = () => finish();
      stop.addEventListener('abort', onStop, { once: true });
      watcher.on('data', (res) => {
        for (const ev of res.events) {
          const key = ev.kv.key.toString();
          if (ev.type === 'Delete') {
            this.opts.metrics?.leaseEvent?.(state.has(key) ? 'changed' : 'ignored');
            state.delete(key);
            list.delete(key);
            continue;
          }
          const entry = this.decode(ev.kv);
          this.opts.metrics?.leaseEvent?.(entry && entry.value !== state.get(key)?.value ? 'changed' : 'ignored');
          if (!entry) continue;
          state.set(key, entry);
          const lease = this.leaseOf(entry);
          if (lease) list.set(key, lease);
          else list.delete(key);
        }
        emit(state);
      });
      watcher.on('disconnected', (err) => finish(err ?? new Error('watch disconnected')));
      watcher.on('error', (err) => finish(err));
      watcher.on('end', () => finish(new Error('watch ended')));
    });
  }

  /** The readable entries as leases, keyed by their etcd key. */
  private *leaseEntries(entries: Iterable<StoredLease>): Generator<[string, Lease]> {
    for (const entry of entries) {
      const lease = this.leaseOf(entry);
      if (lease) yield [entry.key, lease];
    }
  }

  private leaseOf(entry: StoredLease): Lease | undefined {
    if (!entry.attrs) {
      this.log.debug({ key: entry.key }, 'ignoring a subnet lease we cannot read');
      return undefined;
    }
    const lease: Lease = { subnet: entry.subnet, ...entry.attrs, nodeName: entry.key.slice(this.subnetsPrefix.length) };
    if (entry.ipv6Subnet !== undefined) lease.ipv6Subnet = entry.ipv6Subnet;
    return lease;
  }

  private toLease(own: OwnLease): Lease {
    const lease: Lease = { subnet: own.subnet, ...own.attrs, nodeName: this.opts.nodeName ?? own.key.slice(this.subnetsPrefix.length) };
    if (own.ipv6Subnet !== undefined) lease.ipv6Subnet = own.ipv6Subnet;
    if (own.expiration) lease.expiration = own.expiration;
    return lease;
  }

  // ---------- retries ----------

  /** Runs `fn` until it succeeds; etcd trouble is retried with backoff, anything else is thrown. */
  private async retrying<T>(what: string, stop: AbortSignal, fn: () => Promise<T>): Promise<T> {
    for (let failures = 1; ; failures++) {
      try {
        return await fn();
      } catch (err) {
        this.opts.metrics?.apiError(what);
        if (!isTransient(err)) throw err;
        if (stop.aborted) throw stop.reason instanceof Error ? stop.reason : new Error(`${what}: aborted`);
        const log = failures === 1 || failures % 10 === 0 ? this.log.warn.bind(this.log) : this.log.debug.bind(this.log);
        log({ err: errText(err), failures }, `cannot ${what} (etcd unreachable?); retrying with backoff`);
        if (!(await sleep(backoffMs(failures, MAX_BACKOFF_MS), stop))) {
          throw stop.reason instanceof Error ? stop.reason : new Error(`${what}: aborted`);
        }
      }
    }
  }

  private track(task: Promise<void>): void {
    const tracked = task.catch((err: unknown) => this.log.error({ err: errText(err) }, 'background task failed'));
    this.background.add(tracked);
    void tracked.finally(() => this.background.delete(tracked));
  }
}

/**
 * flannel keeps a node's old subnets only while they still fit Network and
 * SubnetLen, and IPv6Network and IPv6SubnetLen; a family that is off must
 * have no subnet (isSubnetConfigCompat, isIPv6SubnetConfigCompat).
 */
function fitsNetwork(config: NetworkConfig, subnet: string, ipv6Subnet?: string): boolean {
  const fits = (cidr: string, network: string, len: number): boolean => {
    const net = parseCidr(cidr);
    const within = parseCidr(network);
    return net !== undefined && within !== undefined && net.prefix === len && cidrContainsIp(within, net.ip);
  };
  if (config.enableIPv4 ? !fits(subnet, config.network, config.subnetLen) : subnet !== '') return false;
  const v6 = ipv6RangeOf(config);
  return v6 ? ipv6Subnet !== undefined && fits(ipv6Subnet, v6.network, v6.subnetLen) : ipv6Subnet === undefined;
}
