// tsflanneld's life cycle, in flannel's order: pick the external interface,
// let the backend create its device, take the subnet lease, install the
// forward and masquerade rules, write the subnet file (so no CNI ADD runs
// before the rules exist), then keep the kernel equal to the leases. Each
// enabled family (EnableIPv4, EnableIPv6) gets its own backend instance
// (flannel.<VNI> and flannel-v6.<VNI>) and its own rule set; one lease
// carries both halves.
import type { Logger } from 'pino';
import type { Server } from 'node:http';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from './config.js';
import type { AgentOptions } from './options.js';
import type { Backend, BackendData, ExternalInterface, Lease, LeaseAttrs, NetworkConfig, PriorLease, ReconcileReport, SubnetManager } from './types.js';
import { readSubnetEnv, subnetEnvFor, writeSubnetEnv, type SubnetEnv } from '../flannel/subnet-env.js';
import { canonicalCidr, parseCidr, type Family } from '../net/ip.js';
import { startEndpoints, type HealthSource, type Probe } from './health.js';
import { defaultMetrics, type AgentMetrics } from './metrics.js';
import { chooseExternalInterface } from './external.js';
import { createBackend } from './backend/index.js';
import { externalView } from './backend/family.js';
import { cleanUpFamily, cleanUpOtherMode, createTrafficManager, ensureTrafficAtStart, type TrafficManager, type TrafficMode } from './traffic/index.js';
import { ensureBlackholeRoute } from './traffic/blackhole.js';
import { startCniService, type CniService } from './cni-service.js';

export interface AgentDeps {
  subnetManager: SubnetManager;
  logger: Logger;
  metrics?: AgentMetrics;
}

/** One enabled family: its cluster network and the backend instance programming it. */
interface FamilyBackend {
  family: Family;
  network: string;
  backend: Backend;
}

/** The key a lease is known by: its IPv4 subnet, or its IPv6 subnet in an IPv6-only cluster. */
export function leaseKey(l: Lease): string {
  return l.subnet || l.ipv6Subnet || '';
}

/** The families net-conf.json enables, IPv4 first. */
export function enabledFamilies(config: NetworkConfig): Family[] {
  const out: Family[] = [];
  if (config.enableIPv4) out.push(4);
  if (config.enableIPv6) out.push(6);
  return out;
}

/** What /readyz waits for, in the order start-up reaches it. */
interface Readiness {
  leaseHeld: boolean;
  deviceReady: boolean;
  rulesInstalled: boolean;
  subnetFileWritten: boolean;
  firstReconcileDone: boolean;
}

export class Agent implements HealthSource {
  readonly metrics: AgentMetrics;
  private readonly abort = new AbortController();
  private readonly readiness: Readiness = {
    leaseHeld: false,
    deviceReady: false,
    rulesInstalled: false,
    subnetFileWritten: false,
    firstReconcileDone: false,
  };
  private lease?: Lease;
  private backends: FamilyBackend[] = [];
  private traffic: TrafficManager[] = [];
  private latest: Lease[] | undefined;
  /** the last lease set that held our own lease: what a store outage falls back on */
  private lastGood: Lease[] = [];
  /** set while our lease is missing from the store: peers are kept until then */
  private graceUntil: number | undefined;
  private graceTimer?: NodeJS.Timeout;
  /** stale leases of this node already reported, so the log says it once */
  private readonly staleSeen = new Set<string>();
  /** what we published, to publish again when our Node lost it */
  private attrs?: LeaseAttrs;
  private republishing = false;
  /** set when the agent must exit (and be restarted) rather than carry on */
  private fatal?: Error;
  private servers: Server[] = [];
  private timer?: NodeJS.Timeout;
  /** when a resync last finished (or the loop started); undefined before */
  private lastTick?: number;
  private markedReady = false;
  /** a traffic-rule check is running (one at a time) */
  private resyncing = false;
  /** when the running traffic-rule check started: /healthz reports one that is stuck */
  private rulesSince?: number;
  private cni?: CniService;
  /** writes the subnet file; set while the rules that must come first failed at start */
  private pendingSubnetFile?: () => void;

  constructor(
    private readonly opts: AgentOptions,
    private readonly deps: AgentDeps,
  ) {
    this.metrics = deps.metrics ?? defaultMetrics();
  }

  /** Runs until stop() is called; rejects if start-up fails. */
  async run(): Promise<void> {
    const { logger: log, subnetManager: sm } = this.deps;
    await this.startServers();
    // Before the lease: a pod call made while the agent starts gets the same
    // answer the standalone plugin would give, without a process start-up.
    if (this.opts.cniSocket) {
      this.cni = await startCniService({ path: this.opts.cniSocket, workers: this.opts.cniWorkers, logger: log, log: { level: this.opts.logLevel, format: this.opts.logFormat }, metrics: this.metrics });
    }
    const config = await this.networkConfig();
    const ext = this.externalInterface(config);
    log.info(
      { iface: ext.name, ip: ext.ip, publicIP: ext.publicIP, ...(ext.ipv6 ? { ipv6: ext.ipv6, publicIPv6: ext.publicIPv6 } : {}), mtu: ext.mtu, backend: config.backend.type },
      'using interface',
    );

    this.attrs = await this.prepareBackends(config, ext);
    const prior = this.priorLease();
    const lease = await sm.acquireLease(this.attrs, this.abort.signal, prior);
    this.lease = lease;
    this.readiness.leaseHeld = true;
    log.info({ subnet: lease.subnet, ipv6Subnet: lease.ipv6Subnet, backendData: this.attrs.backendData, backendV6Data: this.attrs.backendV6Data }, 'acquired lease');
    if (config.enableIPv6 && !lease.ipv6Subnet) throw new Error('EnableIPv6 is set but our lease has no IPv6 subnet (Kubernetes: does the Node have an IPv6 podCIDR?)');
    if (prior.subnet && prior.subnet !== lease.subnet) {
      log.warn(
        { previous: prior.subnet, subnet: lease.subnet },
        'this node\'s subnet changed: pods of the old subnet lose the overlay; the plugin moves the bridge to the new gateway at the next ADD once none of them is left',
      );
    }
    let mtu = Infinity;
    // cni0 carries both families and a pod has one MTU: the smaller one wins
    // (with a VXLAN IPv6 underlay that is flannel-v6's, 70 below the underlay).
    for (const b of this.backends) mtu = Math.min(mtu, (await b.backend.configure(lease)).mtu);
    this.readiness.deviceReady = true;
    const rulesIn = await this.setUpTraffic(config.enableNFTables ? 'nftables' : 'iptables', this.trafficScopes(lease));
    this.ensureBlackhole();
    // The subnet file lets the plugin wire pods: it waits for the rules (a
    // pod wired before them would leave unmasqueraded, or be dropped by a
    // FORWARD policy DROP), and the resync writes it once they are in. Pods
    // already running keep their local connectivity meanwhile.
    if (rulesIn) {
      this.writeSubnetFile(config, lease, mtu);
      this.readiness.subnetFileWritten = true;
    } else {
      this.pendingSubnetFile = () => this.writeSubnetFile(config, lease, mtu);
      // An earlier run's file naming another subnet would have pods wired
      // on an address range that is not ours any more.
      if ((prior.subnet && prior.subnet !== lease.subnet) || (prior.ipv6Subnet && prior.ipv6Subnet !== lease.ipv6Subnet)) {
        rmSync(this.opts.subnetFile, { force: true });
        log.warn({ file: this.opts.subnetFile, previous: prior.subnet ?? prior.ipv6Subnet }, 'removed the subnet file of the previous subnet; the new one is written once the traffic rules are in');
      }
    }

    this.lastTick = Date.now();
    this.timer = setInterval(() => void this.resync(), this.opts.resyncSeconds * 1000);
    await sm.watchLeases((leases) => this.onLeases(leases), this.abort.signal);
    if (this.fatal) throw this.fatal;
  }

  /** Liveness: the process answers, and once started its resync loop keeps turning. */
  live(): Probe {
    if (this.lastTick === undefined) return { ok: true, detail: 'starting' };
    const late = Date.now() - this.lastTick;
    const limit = Math.max(3 * this.opts.resyncSeconds * 1000, 30_000);
    if (late > limit) return { ok: false, detail: `resync loop stalled for ${Math.round(late / 1000)} s` };
    const rules = this.rulesSince === undefined ? 0 : Date.now() - this.rulesSince;
    if (rules > limit) return { ok: false, detail: `traffic rule check stuck for ${Math.round(rules / 1000)} s` };
    return { ok: true, detail: 'running' };
  }

  /** Readiness: lease, device, rules, subnet file and a first reconcile. */
  ready(): Probe {
    const waiting = (Object.keys(this.readiness) as (keyof Readiness)[]).filter((k) => !this.readiness[k]);
    const ok = waiting.length === 0;
    this.metrics.ready.set(ok ? 1 : 0);
    return ok ? { ok, detail: 'ready' } : { ok, detail: `waiting for ${waiting.join(', ')}` };
  }

  private async startServers(): Promise<void> {
    const { opts } = this;
    const log = this.deps.logger;
    const registry = this.metrics.registry;
    if (opts.healthzPort > 0) {
      const server = await startEndpoints(opts.healthzIP, opts.healthzPort, { health: this, ...(opts.metricsAddr ? {} : { registry }) });
      this.servers.push(server);
      log.info({ address: server.address() }, opts.metricsAddr ? 'serving /healthz and /readyz' : 'serving /healthz, /readyz and /metrics');
    }
    if (opts.metricsAddr) {
      const server = await startEndpoints(opts.metricsAddr.host, opts.metricsAddr.port, { registry });
      this.servers.push(server);
      log.info({ address: server.address() }, 'serving /metrics');
    }
  }

  /** The network config may not be in etcd yet: wait for it, as flanneld does. */
  private async networkConfig(): Promise<NetworkConfig> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.deps.subnetManager.getNetworkConfig();
      } catch (err) {
        if (this.abort.signal.aborted || err instanceof ConfigError) throw err;
        if (attempt === 1 || attempt % 30 === 0) {
          this.deps.logger.warn({ err: (err as Error).message, attempt }, 'network config not available yet; retrying');
        }
        await sleep(1000, undefined, { signal: this.abort.signal });
      }
    }
  }

  private externalInterface(config: NetworkConfig): ExternalInterface {
    const sel: Parameters<typeof chooseExternalInterface>[0] = {
      iface: this.opts.iface,
      ifaceRegex: this.opts.ifaceRegex,
      families: { ipv4: config.enableIPv4, ipv6: config.enableIPv6 },
    };
    if (this.opts.publicIP) sel.publicIP = this.opts.publicIP;
    if (this.opts.publicIPv6) sel.publicIPv6 = this.opts.publicIPv6;
    if (this.opts.ifaceCanReach) sel.ifaceCanReach = this.opts.ifaceCanReach;
    return chooseExternalInterface(sel);
  }

  /**
   * One backend per enabled family, each creating its device before the
   * lease is published: the IPv4 half fills PublicIP and BackendData, the
   * IPv6 half PublicIPv6 and BackendV6Data (flannel's names).
   */
  private async prepareBackends(config: NetworkConfig, ext: ExternalInterface): Promise<LeaseAttrs> {
    const log = this.deps.logger;
    const families = enabledFamilies(config);
    if (families.length === 0) throw new ConfigError('net-conf.json enables neither IPv4 nor IPv6');
    const attrs: LeaseAttrs = { publicIP: '', backendType: config.backend.type, backendData: {} };
    // Every family's backend is made before any touches the kernel: a
    // backend refusing a family (wireguard and IPv6) leaves no device behind.
    const made = families.map((family) => {
      const network = family === 6 ? config.ipv6Network : config.network;
      if (!network) throw new ConfigError(family === 6 ? 'EnableIPv6 needs IPv6Network' : 'EnableIPv4 needs Network');
      const backend = createBackend(config.backend, { network, logger: log, ...(family === 6 ? { family } : {}) });
      return { family, network, backend };
    });
    for (const { family, network, backend } of made) {
      this.backends.push({ family, network, backend });
      const data: BackendData = await backend.prepare(ext);
      if (family === 4) {
        attrs.publicIP = ext.publicIP;
        attrs.backendData = data;
      } else {
        attrs.publicIPv6 = externalView(ext, 6).publicIP;
        attrs.backendV6Data = data;
      }
    }
    return attrs;
  }

  /** The subnets an earlier run wrote to subnet.env (flanneld asks for them again). */
  private priorLease(): PriorLease {
    let env: SubnetEnv;
    try {
      env = readSubnetEnv(this.opts.subnetFile);
    } catch {
      return {};
    }
    const prior: PriorLease = {};
    const v4 = parseCidr(env.subnet, 4);
    if (v4) prior.subnet = canonicalCidr(v4);
    const v6 = env.ipv6Subnet === undefined ? undefined : parseCidr(env.ipv6Subnet, 6);
    if (v6) prior.ipv6Subnet = canonicalCidr(v6);
    if (prior.subnet || prior.ipv6Subnet) {
      this.deps.logger.info({ ...prior, file: this.opts.subnetFile }, 'previous subnet from the subnet file');
    }
    return prior;
  }

  /** Per enabled family: the cluster network and our subnet, which the rules are written for. */
  private trafficScopes(lease: Lease): { network: string; subnet: string }[] {
    return this.backends.map((b) => ({ network: b.network, subnet: b.family === 6 ? lease.ipv6Subnet ?? '' : lease.subnet }));
  }

  /**
   * Removes the other mode's rules (a switch between iptables and nftables
   * leaves nothing behind, as in flanneld), then installs ours: forward
   * accepts by default, the masquerade set with --ip-masq. A failure (a held
   * xtables lock, a missing or failing tool) does not stop the agent: it is
   * counted and the resync retries. Returns whether the wanted rules are in.
   */
  private async setUpTraffic(mode: TrafficMode, scopes: { network: string; subnet: string }[]): Promise<boolean> {
    const log = this.deps.logger;
    try {
      if (await cleanUpOtherMode(mode, { logger: log })) log.info({ mode }, 'removed the rules of the other traffic mode');
    } catch (err) {
      log.warn({ err: (err as Error).message, mode }, 'could not remove the other traffic mode\'s rules');
    }
    const { ipMasq, iptablesForwardRules: forwardRules } = this.opts;
    // A manager even with both switches off: it removes what an earlier run
    // with them on left (a FLANNEL-POSTRTG kept would go on masquerading).
    let installed = true;
    for (const { network, subnet } of scopes) {
      const manager = createTrafficManager(
        mode,
        { network, subnet, ipMasq, forwardRules, randomFully: !this.opts.ipMasqFullyRandomDisable },
        { logger: log },
      );
      // Pushed first: the resync retries a removal that failed here.
      this.traffic.push(manager);
      if (!(await ensureTrafficAtStart(manager, { ipMasq, forwardRules }, log))) {
        this.metrics.trafficFailures.inc({ mode });
        installed = false;
      }
    }
    if ((ipMasq || forwardRules) && installed) log.info({ mode, ipMasq, forwardRules, networks: scopes.map((s) => s.network) }, 'installed traffic rules');
    // A family this node no longer runs (dual-stack turned off, or IPv4):
    // its rules from an earlier run would keep accepting and masquerading
    // the old network.
    for (const family of [4, 6] as const) {
      if (this.backends.some((b) => b.family === family)) continue;
      try {
        if (await cleanUpFamily(mode, family, { logger: log })) log.info({ mode, family }, 'removed the rules of a family this node no longer runs');
      } catch (err) {
        log.warn({ err: (err as Error).message, mode, family }, 'could not remove the rules of a family this node no longer runs');
      }
    }
    // With both switches off no rule is wanted: an earlier run's leftovers
    // that could not be removed yet hold nothing back.
    this.readiness.rulesInstalled = installed || !(ipMasq || forwardRules);
    return this.readiness.rulesInstalled;
  }

  /** One blackhole per family the node has a subnet of. */
  private ensureBlackhole(): void {
    if (!this.opts.ipBlackholeRoute || !this.lease) return;
    for (const subnet of [this.lease.subnet, this.lease.ipv6Subnet]) {
      if (!subnet) continue;
      try {
        if (ensureBlackholeRoute(subnet)) this.deps.logger.info({ subnet }, 'added blackhole route');
      } catch (err) {
        this.deps.logger.warn({ err: (err as Error).message, subnet }, 'could not ensure the blackhole route');
      }
    }
  }

  /** The subnet file held back at start, once the rules are in; then the first reconcile makes the agent ready. */
  private writePendingSubnetFile(): void {
    if (!this.pendingSubnetFile) return;
    try {
      this.pendingSubnetFile();
    } catch (err) {
      this.deps.logger.error({ err: (err as Error).message, file: this.opts.subnetFile }, 'could not write the subnet file; the resync retries');
      return;
    }
    this.pendingSubnetFile = undefined;
    this.readiness.subnetFileWritten = true;
    this.reconcile('rules-installed');
  }

  private writeSubnetFile(config: NetworkConfig, lease: Lease, mtu: number): void {
    writeSubnetEnv(this.opts.subnetFile, subnetEnvFor(config, lease, mtu, this.opts.ipMasq));
    this.deps.logger.info({ file: this.opts.subnetFile }, 'wrote subnet file');
  }

  private onLeases(leases: Lease[]): void {
    this.latest = leases;
    this.metrics.leasesKnown.set(leases.length);
    this.trackStoreLoss(leases);
    this.checkOwnNode(leases);
    this.reconcile('watch', true);
  }

  /**
   * Kubernetes mode: our Node object is the lease. A Node re-created (by a
   * kubelet re-registering) comes back without flannel's annotations, so we
   * publish them again; one with another podCIDR means our subnet changed,
   * and the agent exits so that its restart takes the new subnet, rewrites
   * the subnet file and rebuilds its rules (the etcd manager re-registers by
   * itself, and exits likewise when its subnet is taken).
   */
  private checkOwnNode(leases: Lease[]): void {
    if (this.deps.subnetManager.kind !== 'kube' || !this.lease || this.fatal) return;
    const mine = leases.find((l) => l.nodeName === this.opts.nodeName);
    if (mine && (mine.subnet !== this.lease.subnet || (this.lease.ipv6Subnet !== undefined && mine.ipv6Subnet !== this.lease.ipv6Subnet))) {
      this.exitForRestart(`this Node's pod CIDR changed from ${describeCidrs(this.lease)} to ${describeCidrs(mine)}`);
      return;
    }
    if (!mine && !this.republishing) void this.republish();
  }

  private async republish(): Promise<void> {
    const { subnetManager: sm, logger: log } = this.deps;
    if (!this.attrs || !this.lease) return;
    this.republishing = true;
    try {
      log.warn({ node: this.opts.nodeName }, 'our Node lost its lease annotations (deleted and re-created?); publishing them again');
      const lease = await sm.acquireLease(this.attrs, this.abort.signal);
      if (lease.subnet !== this.lease.subnet || lease.ipv6Subnet !== this.lease.ipv6Subnet) {
        this.exitForRestart(`this Node's pod CIDR changed from ${describeCidrs(this.lease)} to ${describeCidrs(lease)}`);
      } else {
        log.info({ subnet: lease.subnet, ipv6Subnet: lease.ipv6Subnet }, 'published our lease annotations again');
        // A re-created Node may come with NetworkUnavailable=True (a kubelet whose
        // cloud provider configures routes writes it, and the Node is then tainted
        // network-unavailable): flannel's CompleteLease again, for the new object.
        if (this.readiness.firstReconcileDone) {
          this.markedReady = false;
          void this.markLeaseReady();
        }
      }
    } catch (err) {
      if (!this.abort.signal.aborted) log.error({ err }, 'publishing our lease again failed; retrying at the next Node change');
    } finally {
      this.republishing = false;
    }
  }

  private exitForRestart(reason: string): void {
    if (this.fatal) return;
    this.fatal = new Error(`${reason}: exiting so that the restarted agent takes the new subnet`);
    this.abort.abort();
  }

  /**
   * A listing without our own lease means the store lost it (etcd wiped or
   * restored from an old backup), not that every other node left: the
   * subnet manager re-registers us at once and the other agents do the
   * same, so the peers programmed now are kept for a grace period and only
   * then reconciled to what the store holds.
   */
  private trackStoreLoss(leases: Lease[]): void {
    if (!this.lease) return;
    const own = leaseKey(this.lease);
    if (leases.some((l) => leaseKey(l) === own)) {
      if (this.graceUntil === undefined) this.lastGood = leases;
      return;
    }
    if (this.graceUntil !== undefined || this.lastGood.length <= 1) return;
    const seconds = this.opts.storeLossGraceSeconds;
    this.graceUntil = Date.now() + seconds * 1000;
    this.deps.logger.warn(
      { leases: leases.length, kept: this.lastGood.length - 1, graceSeconds: seconds },
      'our own lease is missing from the lease store (store wiped or restored?): keeping the programmed peers while re-registering',
    );
    this.graceTimer = setTimeout(() => {
      this.graceUntil = undefined;
      this.lastGood = this.latest?.some((l) => leaseKey(l) === own) ? this.latest : [];
      this.deps.logger.info({ leases: this.latest?.length ?? 0 }, 'store-loss grace period over; reconciling to what the store holds');
      this.reconcile('grace-over');
    }, seconds * 1000);
    this.graceTimer.unref();
  }

  /** What to program: the store's leases, plus, during a store-loss grace period, the peers known before. */
  private effectiveLeases(): Lease[] {
    const current = this.latest ?? [];
    if (this.graceUntil === undefined) return current;
    const present = new Set(current.map(leaseKey));
    return [...current, ...this.lastGood.filter((l) => !present.has(leaseKey(l)))];
  }

  /**
   * A lease with our VTEP MAC under another subnet or public IP is an old
   * lease of this very node (published before an address change): never a
   * peer. Programming it would put our own subnet behind flannel.1.
   */
  private isOwnStale(l: Lease): boolean {
    const mine = this.lease?.backendData.VtepMAC?.toLowerCase();
    const mine6 = this.lease?.backendV6Data?.VtepMAC?.toLowerCase();
    const stale =
      (mine !== undefined && l.backendData.VtepMAC?.toLowerCase() === mine) ||
      (mine6 !== undefined && l.backendV6Data?.VtepMAC?.toLowerCase() === mine6);
    const key = `${leaseKey(l)} ${l.publicIP || l.publicIPv6}`;
    if (stale && leaseKey(l) !== leaseKey(this.lease!) && !this.staleSeen.has(key)) {
      this.staleSeen.add(key);
      this.deps.logger.warn(
        { subnet: l.subnet, ipv6Subnet: l.ipv6Subnet, publicIP: l.publicIP, publicIPv6: l.publicIPv6 },
        'ignoring a lease with this node\'s own VTEP MAC (left from before an address or subnet change; it expires with its TTL)',
      );
    }
    return stale;
  }

  /** `edge`: a lease event, applied as the writes it stands for; the periodic pass stays exact. */
  private reconcile(reason: string, edge = false): void {
    if (this.backends.length === 0 || !this.lease || !this.latest) return;
    const own = leaseKey(this.lease);
    const remote = this.effectiveLeases().filter((l) => leaseKey(l) !== own && !this.isOwnStale(l));
    const end = this.metrics.reconcileDuration.startTimer({ reason });
    const report = this.reconcileFamilies(remote, edge);
    end();
    this.metrics.reconciles.inc();
    this.metrics.reconcileErrors.inc(report.errors.length);
    this.metrics.routesProgrammed.set(report.programmed);
    this.metrics.lastSync.set(Math.floor(Date.now() / 1000));
    const changed = report.added + report.updated + report.removed;
    if (changed > 0 || report.errors.length > 0) {
      this.deps.logger.info({ reason, ...report, remote: remote.length }, 'reconciled');
    }
    if (!this.readiness.firstReconcileDone && this.readiness.subnetFileWritten) {
      this.readiness.firstReconcileDone = true;
      this.metrics.ready.set(this.ready().ok ? 1 : 0);
      this.deps.logger.info('ready: first reconcile done');
      void this.markLeaseReady();
    }
  }

  /** Every family's backend on the same remote leases; one report for them all. */
  private reconcileFamilies(remote: Lease[], edge: boolean): ReconcileReport {
    const [first, ...rest] = this.backends.map(({ backend }) => (edge && backend.update ? backend.update(remote) : backend.reconcile(remote)));
    const report = first!;
    for (const r of rest) {
      report.added += r.added;
      report.updated += r.updated;
      report.removed += r.removed;
      report.programmed += r.programmed;
      report.errors.push(...r.errors);
    }
    return report;
  }

  /** flannel's CompleteLease: tell the subnet manager the node's network works (kube: NetworkUnavailable=False). */
  private async markLeaseReady(): Promise<void> {
    if (this.markedReady || !this.deps.subnetManager.leaseReady) return;
    this.markedReady = true;
    try {
      await this.deps.subnetManager.leaseReady(this.abort.signal);
    } catch (err) {
      if (!this.abort.signal.aborted) this.deps.logger.warn({ err: (err as Error).message }, 'could not mark the node network available');
    }
  }

  /**
   * Periodic repair: a device, route, neighbour, FDB entry or rule removed
   * by hand comes back within one period (reconcile heals the device too).
   * The kernel pass runs on every tick; the rule check, which spawns
   * iptables or nft once per rule and family and can take seconds on a
   * loaded node, runs beside it, one at a time, so a slow rule check never
   * delays the repair of a route.
   */
  private async resync(): Promise<void> {
    try {
      this.reconcile('resync');
      this.ensureBlackhole();
    } catch (err) {
      this.metrics.reconcileErrors.inc();
      this.deps.logger.error({ err }, 'resync failed');
    }
    this.lastTick = Date.now();
    // One rule check at a time; a stuck one is what /healthz reports.
    if (this.resyncing) return;
    this.resyncing = true;
    this.rulesSince = Date.now();
    try {
      let allIn = true;
      // Each family's rules apart: a failing iptables run must not leave the ip6tables rules unrepaired.
      for (const traffic of this.traffic) {
        try {
          const repaired = await traffic.ensure();
          // rules that failed at start and go in now are no repair of a change
          if (repaired.length > 0 && this.readiness.rulesInstalled) {
            this.metrics.trafficRepairs.inc({ mode: traffic.mode });
            this.deps.logger.warn({ mode: traffic.mode, repaired }, 'traffic rules were changed; restored them');
          }
        } catch (err) {
          allIn = false;
          this.metrics.reconcileErrors.inc();
          this.metrics.trafficFailures.inc({ mode: traffic.mode });
          this.deps.logger.error({ err, mode: traffic.mode }, 'checking the traffic rules failed');
        }
      }
      if (allIn && !this.readiness.rulesInstalled) {
        this.readiness.rulesInstalled = true;
        this.deps.logger.info({ modes: this.traffic.map((t) => t.mode) }, 'installed the traffic rules that failed at start');
      }
      if (this.readiness.rulesInstalled) this.writePendingSubnetFile();
    } finally {
      this.resyncing = false;
      this.rulesSince = undefined;
    }
  }

  /** Stops watching; routes stay so pods keep talking while the agent restarts. */
  async stop(removeRules: boolean): Promise<void> {
    this.abort.abort();
    if (this.timer) clearInterval(this.timer);
    if (this.graceTimer) clearTimeout(this.graceTimer);
    if (removeRules) for (const traffic of this.traffic) await traffic.cleanUp();
    await this.cni?.stop();
    await this.deps.subnetManager.close();
    for (const server of this.servers) server.close();
  }
}

function describeCidrs(l: Lease): string {
  return [l.subnet, l.ipv6Subnet].filter(Boolean).join(' + ');
}
