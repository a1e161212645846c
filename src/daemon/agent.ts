// tsflanneld's life cycle, in flannel's order: pick the external interface,
// let the backend create its device, take the subnet lease, install the
// forward and masquerade rules, write the subnet file (so no CNI ADD runs
// before the rules exist), then keep the kernel equal to the leases.
import type { Logger } from 'pino';
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from './config.js';
import type { AgentOptions } from './options.js';
import type { Backend, ExternalInterface, Lease, NetworkConfig, SubnetManager } from './types.js';
import { writeSubnetEnv } from '../flannel/subnet-env.js';
import { startEndpoints, type HealthSource, type Probe } from './health.js';
import { defaultMetrics, type AgentMetrics } from './metrics.js';
import { chooseExternalInterface } from './external.js';
import { createBackend } from './backend/index.js';
import { cleanUpOtherMode, createTrafficManager, type TrafficManager, type TrafficMode } from './traffic/index.js';
import { ensureBlackholeRoute } from './traffic/blackhole.js';

export interface AgentDeps {
  subnetManager: SubnetManager;
  logger: Logger;
  metrics?: AgentMetrics;
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
  private backend?: Backend;
  private traffic?: TrafficManager;
  private latest: Lease[] | undefined;
  private servers: Server[] = [];
  private timer?: NodeJS.Timeout;
  /** when a resync last finished (or the loop started); undefined before */
  private lastTick?: number;
  private markedReady = false;
  private resyncing = false;

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
    const config = await this.networkConfig();
    const ext = this.externalInterface();
    log.info({ iface: ext.name, ip: ext.ip, publicIP: ext.publicIP, mtu: ext.mtu, backend: config.backend.type }, 'using interface');

    const backend = createBackend(config.backend, { network: config.network, logger: log });
    this.backend = backend;
    const backendData = await backend.prepare(ext);
    const lease = await sm.acquireLease(
      { publicIP: ext.publicIP, backendType: config.backend.type, backendData },
      this.abort.signal,
    );
    this.lease = lease;
    this.readiness.leaseHeld = true;
    log.info({ subnet: lease.subnet, backendData }, 'acquired lease');
    const { mtu } = await backend.configure(lease);
    this.readiness.deviceReady = true;
    await this.setUpTraffic(config.enableNFTables ? 'nftables' : 'iptables', config.network, lease.subnet);
    this.ensureBlackhole();
    this.writeSubnetFile(config, lease, mtu);
    this.readiness.subnetFileWritten = true;

    this.lastTick = Date.now();
    this.timer = setInterval(() => void this.resync(), this.opts.resyncSeconds * 1000);
    await sm.watchLeases((leases) => this.onLeases(leases), this.abort.signal);
  }

  /** Liveness: the process answers, and once started its resync loop keeps turning. */
  live(): Probe {
    if (this.lastTick === undefined) return { ok: true, detail: 'starting' };
    const late = Date.now() - this.lastTick;
    const limit = Math.max(3 * this.opts.resyncSeconds * 1000, 30_000);
    return late > limit ? { ok: false, detail: `resync loop stalled for ${Math.round(late / 1000)} s` } : { ok: true, detail: 'running' };
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

  private externalInterface(): ExternalInterface {
    const sel: Parameters<typeof chooseExternalInterface>[0] = { iface: this.opts.iface, ifaceRegex: this.opts.ifaceRegex };
    if (this.opts.publicIP) sel.publicIP = this.opts.publicIP;
    if (this.opts.ifaceCanReach) sel.ifaceCanReach = this.opts.ifaceCanReach;
    return chooseExternalInterface(sel);
  }

  /**
   * Removes the other mode's rules (a switch between iptables and nftables
   * leaves nothing behind, as in flanneld), then installs ours: forward
   * accepts by default, the masquerade set with --ip-masq.
   */
  private async setUpTraffic(mode: TrafficMode, network: string, subnet: string): Promise<void> {
    const log = this.deps.logger;
    try {
      if (await cleanUpOtherMode(mode, { logger: log })) log.info({ mode }, 'removed the rules of the other traffic mode');
    } catch (err) {
      log.warn({ err: (err as Error).message, mode }, 'could not remove the other traffic mode\'s rules');
    }
    const { ipMasq, iptablesForwardRules: forwardRules } = this.opts;
    if (ipMasq || forwardRules) {
      this.traffic = createTrafficManager(
        mode,
        { network, subnet, ipMasq, forwardRules, randomFully: !this.opts.ipMasqFullyRandomDisable },
        { logger: log },
      );
      await this.traffic.ensure();
      log.info({ mode, ipMasq, forwardRules }, 'installed traffic rules');
    }
    this.readiness.rulesInstalled = true;
  }

  private ensureBlackhole(): void {
    if (!this.opts.ipBlackholeRoute || !this.lease) return;
    try {
      if (ensureBlackholeRoute(this.lease.subnet)) this.deps.logger.info({ subnet: this.lease.subnet }, 'added blackhole route');
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message }, 'could not ensure the blackhole route');
    }
  }

  private writeSubnetFile(config: NetworkConfig, lease: Lease, mtu: number): void {
    const [net, len] = lease.subnet.split('/');
    const octets = net.split('.').map(Number);
    octets[3] += 1; // the gateway is the first address of the node subnet
    writeSubnetEnv(this.opts.subnetFile, {
      network: config.network,
      subnet: `${octets.join('.')}/${len}`,
      mtu,
      ipMasq: this.opts.ipMasq,
    });
    this.deps.logger.info({ file: this.opts.subnetFile }, 'wrote subnet file');
  }

  private onLeases(leases: Lease[]): void {
    this.latest = leases;
    this.metrics.leasesKnown.set(leases.length);
    this.reconcile('watch');
  }

  private reconcile(reason: string): void {
    if (!this.backend || !this.lease || !this.latest) return;
    const own = this.lease.subnet;
    const remote = this.latest.filter((l) => l.subnet !== own);
    const end = this.metrics.reconcileDuration.startTimer({ reason });
    const report = this.backend.reconcile(remote);
    end();
    this.metrics.reconciles.inc();
    this.metrics.reconcileErrors.inc(report.errors.length);
    this.metrics.routesProgrammed.set(remote.length - report.errors.length);
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
   */
  private async resync(): Promise<void> {
    // One resync at a time; a stuck one stops the ticks, and /healthz notices.
    if (this.resyncing) return;
    this.resyncing = true;
    try {
      this.reconcile('resync');
      if (this.traffic) {
        const repaired = await this.traffic.ensure();
        if (repaired.length > 0) {
          this.metrics.trafficRepairs.inc({ mode: this.traffic.mode });
          this.deps.logger.warn({ mode: this.traffic.mode, repaired }, 'traffic rules were changed; restored them');
        }
      }
      this.ensureBlackhole();
    } catch (err) {
      this.metrics.reconcileErrors.inc();
      this.deps.logger.error({ err }, 'resync failed');
    } finally {
      this.resyncing = false;
      this.lastTick = Date.now();
    }
  }

  /** Stops watching; routes stay so pods keep talking while the agent restarts. */
  async stop(removeRules: boolean): Promise<void> {
    this.abort.abort();
    if (this.timer) clearInterval(this.timer);
    if (removeRules && this.traffic) await this.traffic.cleanUp();
    await this.deps.subnetManager.close();
    for (const server of this.servers) server.close();
  }
}
