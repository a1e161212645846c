// tsflanneld's life cycle, in flannel's order: pick the external interface,
// let the backend create its device, take the subnet lease, write the subnet
// file, install masquerade rules, then keep the kernel equal to the leases.
import type { Logger } from 'pino';
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError } from './config.js';
import type { AgentOptions } from './options.js';
import type { Backend, ExternalInterface, Lease, NetworkConfig, SubnetManager } from './types.js';
import { writeSubnetEnv } from '../flannel/subnet-env.js';
import { newMetrics, startHealthServer, type AgentMetrics } from './health.js';
import { chooseExternalInterface } from './external.js';
import { createBackend } from './backend/index.js';
import { IptablesManager } from './iptables.js';
import { gatewayCidr } from '../net/ipv4.js';

export interface AgentDeps {
  subnetManager: SubnetManager;
  logger: Logger;
}

export class Agent {
  readonly metrics: AgentMetrics = newMetrics();
  private readonly abort = new AbortController();
  private lease?: Lease;
  private backend?: Backend;
  private iptables?: IptablesManager;
  private latest: Lease[] | undefined;
  private health?: Server;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly opts: AgentOptions,
    private readonly deps: AgentDeps,
  ) {}

  /** Runs until stop() is called; rejects if start-up fails. */
  async run(): Promise<void> {
    const { logger: log, subnetManager: sm } = this.deps;
    if (this.opts.healthzPort > 0) {
      this.health = await startHealthServer(this.opts.healthzIP, this.opts.healthzPort, this.metrics);
      log.info({ address: this.health.address() }, 'serving /healthz and /metrics');
    }
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
    log.info({ subnet: lease.subnet, backendData }, 'acquired lease');
    const { mtu } = await backend.configure(lease);
    this.writeSubnetFile(config, lease, mtu);
    if (this.opts.ipMasq) {
      this.iptables = new IptablesManager({ network: config.network, subnet: lease.subnet, ipMasq: true, logger: log });
      await this.iptables.ensure();
      log.info('installed masquerade and forward rules');
    }
    this.metrics.ready = true;

    this.timer = setInterval(() => void this.resync(), this.opts.resyncSeconds * 1000);
    await sm.watchLeases((leases) => this.onLeases(leases), this.abort.signal);
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
    return chooseExternalInterface(sel);
  }

  private writeSubnetFile(config: NetworkConfig, lease: Lease, mtu: number): void {
    const subnet = gatewayCidr(lease.subnet);
    if (!subnet) throw new Error(`lease subnet ${JSON.stringify(lease.subnet)} is not an IPv4 CIDR`);
    writeSubnetEnv(this.opts.subnetFile, {
      network: config.network,
      subnet,
      mtu,
      ipMasq: this.opts.ipMasq,
    });
    this.deps.logger.info({ file: this.opts.subnetFile }, 'wrote subnet file');
  }

  private onLeases(leases: Lease[]): void {
    this.latest = leases;
    this.metrics.leasesKnown = leases.length;
    this.reconcile('watch', true);
  }

  /** `edge`: a lease event, applied as the writes it stands for; the periodic pass stays exact. */
  private reconcile(reason: string, edge = false): void {
    if (!this.backend || !this.lease || !this.latest) return;
    const own = this.lease.subnet;
    const remote = this.latest.filter((l) => l.subnet !== own);
    const report = edge && this.backend.update ? this.backend.update(remote) : this.backend.reconcile(remote);
    this.metrics.reconciles += 1;
    this.metrics.reconcileErrors += report.errors.length;
    this.metrics.routesProgrammed = report.programmed;
    this.metrics.lastSyncSeconds = Math.floor(Date.now() / 1000);
    const changed = report.added + report.updated + report.removed;
    if (changed > 0 || report.errors.length > 0) {
      this.deps.logger.info({ reason, ...report, remote: remote.length }, 'reconciled');
    }
  }

  /**
   * Periodic repair: a device, route, neighbour, FDB entry or rule removed
   * by hand comes back within one period (reconcile heals the device too).
   */
  private async resync(): Promise<void> {
    try {
      this.reconcile('resync');
      if (this.iptables) await this.iptables.ensure();
    } catch (err) {
      this.metrics.reconcileErrors += 1;
      this.deps.logger.error({ err }, 'resync failed');
    }
  }

  /** Stops watching; routes stay so pods keep talking while the agent restarts. */
  async stop(removeRules: boolean): Promise<void> {
    this.abort.abort();
    if (this.timer) clearInterval(this.timer);
    if (removeRules && this.iptables) await this.iptables.remove();
    await this.deps.subnetManager.close();
    this.health?.close();
  }
}
