// The wireguard backend (flannel's `wireguard`): one encrypted device,
// flannel-wg, and per remote node one WireGuard peer (its public key, its
// public IP and our ListenPort, its pod subnet as allowed IPs). The kernel
// holds one route, the whole cluster network via flannel-wg, as flannel
// does: WireGuard's allowed IPs then pick the peer, and a pod address with
// no peer is dropped on flannel-wg instead of leaving in cleartext through
// the default route. Kernel WireGuard when the kernel has it (probed by
// creating the link), wireguard-go otherwise; both configured through `wg`.
import type { Logger } from 'pino';
import * as nl from '../../netlink/index.js';
import type { Backend, BackendData, ExternalInterface, Lease, ReconcileReport, WireguardBackendConfig } from '../types.js';
import { canonicalCidr, cidrContainsCidr, networkAddress, parseCidr, type Cidr } from '../../net/ip.js';
import { checkExternal, emptyReport, ensureOnlyAddress, errorText, netnsOpts, requireCidr, silentLogger, SkipLog } from './common.js';
import { keyFileFromEnv, loadOrCreateKey, type KeyPair } from './wireguard-keys.js';
import { diffPeers, isEmptyDiff, parseDump, planPeers, wgSetArgs, type DeviceDump, type PeerSettings } from './wireguard-peers.js';
import { startUserspace, wg, wgDump, WgToolError, withSecretFile, type ToolOptions } from './wireguard-tool.js';

export const WIREGUARD_DEVICE = 'flannel-wg';
/**
 * Outer IPv4 20 + UDP 8 + WireGuard header 16 (type, receiver index,
 * counter) + Poly1305 tag 16. WireGuard pads only up to the device MTU, so
 * a full-size packet costs exactly this. flannel subtracts 80, which is the
 * IPv6-underlay figure; tsflannel's endpoints are IPv4 only, so 60 is exact.
 */
export const WIREGUARD_OVERHEAD_V4 = 60;

const RTPROT_KERNEL = 2;

export type WireguardImpl = 'kernel' | 'wireguard-go';

export interface WireguardBackendOptions {
  config: WireguardBackendConfig;
  /** the cluster network: routed as a whole through flannel-wg */
  network: string;
  netns?: string;
  logger?: Logger;
  /** private key file; default WIREGUARD_KEY_FILE or /run/flannel/wgkey */
  keyFile?: string;
  deviceName?: string;
}

export class WireguardBackend implements Backend {
  readonly type = 'wireguard' as const;
  readonly deviceName: string;
  private readonly config: WireguardBackendConfig;
  private readonly network: Cidr;
  private readonly nsOpts: nl.InNetns;
  private readonly tool: ToolOptions;
  private readonly log: Logger;
  private readonly skipLog: SkipLog;
  private readonly keyFile: string;
  private key?: KeyPair;
  private ext?: ExternalInterface;
  private own?: Cidr;
  private implementation?: WireguardImpl;

  constructor(opts: WireguardBackendOptions) {
    this.config = opts.config;
    if (opts.config.mode === 'ipv6') throw new Error('wireguard Mode "ipv6": the wireguard backend of tsflannel carries IPv4 only');
    this.network = requireCidr(opts.network, 'cluster network');
    this.deviceName = opts.deviceName ?? WIREGUARD_DEVICE;
    this.nsOpts = netnsOpts(opts.netns);
    this.tool = opts.netns ? { netns: opts.netns } : {};
    this.keyFile = opts.keyFile ?? keyFileFromEnv();
    this.log = (opts.logger ?? silentLogger).child({ backend: 'wireguard', device: this.deviceName });
    this.skipLog = new SkipLog(this.log);
  }

  /** Which WireGuard runs flannel-wg; known after prepare(). */
  get impl(): WireguardImpl | undefined {
    return this.implementation;
  }

  get publicKey(): string | undefined {
    return this.key?.publicKey;
  }

  async prepare(ext: ExternalInterface): Promise<BackendData> {
    checkExternal(ext);
    this.ext = ext;
    const key = loadOrCreateKey(this.keyFile);
    this.key = key;
    if (key.created) this.log.info({ file: key.file }, 'generated the WireGuard private key');
    if (key.tightened) this.log.warn({ file: key.file }, 'WireGuard key file was readable by others; made it 0600');
    this.ensureDevice();
    this.configureInterface();
    this.log.info(
      {
        impl: this.implementation,
        listenPort: this.config.listenPort,
        mode: this.config.mode,
        keepalive: this.config.persistentKeepaliveInterval,
        psk: Boolean(this.config.psk),
        mtu: this.mtu(),
        publicKey: key.publicKey,
      },
      'WireGuard config',
    );
    return { PublicKey: key.publicKey };
  }

  async configure(own: Lease): Promise<{ mtu: number }> {
    this.own = requireCidr(own.subnet, 'own subnet');
    this.configureLink();
    const report = emptyReport();
    this.ensureRoutes(report);
    if (report.errors.length > 0) throw new Error(report.errors.join('; '));
    return { mtu: this.mtu() };
  }

  reconcile(remote: Lease[]): ReconcileReport {
    const { ext, own, key } = this;
    if (!ext || !own || !key) throw new Error('WireguardBackend.reconcile called before prepare() and configure()');
    const report = emptyReport();
    let dump: DeviceDump;
    try {
      dump = this.healDevice();
    } catch (err) {
      report.errors.push(`${this.deviceName}: ${errorText(err)}`);
      return report;
    }
    const plan = planPeers(remote, {
      network: this.network,
      ownSubnet: own,
      ownPublicKey: key.publicKey,
      ownIPs: [...new Set([ext.ip, ext.publicIP])],
      port: this.config.listenPort,
    });
    this.skipLog.record(plan.skipped, report);
    this.applyPeers(plan.peers, dump, report);
    this.ensureRoutes(report);
    return report;
  }

  /** Pod MTU: flannel-wg's MTU. Backend.MTU, like flannel's, is the MTU of the encrypted packets. */
  private mtu(): number {
    const outer = this.config.mtu ?? this.ext?.mtu ?? 0;
    const mtu = outer - WIREGUARD_OVERHEAD_V4;
    if (mtu < 68) throw new Error(`WireGuard MTU ${mtu} is too small (MTU ${outer} - ${WIREGUARD_OVERHEAD_V4})`);
    return mtu;
  }

  /**
   * Makes flannel-wg exist: adopts a working one (kernel, or userspace with
   * a live UAPI socket), replaces anything else by that name, and creates
   * it in the kernel when it can, else through wireguard-go.
   */
  private ensureDevice(): void {
    const link = nl.linkByName(this.deviceName, this.nsOpts);
    if (link) {
      const impl = this.implOf(link);
      if (impl && this.answers()) {
        this.implementation = impl;
        return;
      }
      this.log.warn({ type: link.type }, 'a device by our name exists but is not a working WireGuard device; replacing it');
      nl.linkDelete(this.deviceName, this.nsOpts);
    }
    this.implementation = this.create();
    if (!this.answers()) throw new Error(`${this.deviceName} was created (${this.implementation}) but \`wg show\` cannot reach it`);
  }

  private implOf(link: nl.Link): WireguardImpl | undefined {
    if (link.type === 'wireguard') return 'kernel';
    if (link.type === 'tuntap' || link.type === 'tun') return 'wireguard-go';
    return undefined;
  }

  private create(): WireguardImpl {
    try {
      nl.createWireguard({ ...this.nsOpts, name: this.deviceName, mtu: this.mtu() });
      this.log.info('created kernel WireGuard device');
      return 'kernel';
    } catch (err) {
      if (!nl.isWireguardUnsupported(err)) throw err;
    }
    try {
      startUserspace(this.deviceName, this.tool);
    } catch (err) {
      throw new Error(`this kernel has no WireGuard, and its userspace implementation did not start: ${errorText(err)}`);
    }
    this.log.info('kernel has no WireGuard; started wireguard-go');
    return 'wireguard-go';
  }

  /** `wg show` reaches the device; a missing wg is an error, not a broken device. */
  private answers(): boolean {
    try {
      wgDump(this.deviceName, this.tool);
      return true;
    } catch (err) {
      if (err instanceof WgToolError && err.notInstalled) throw err;
      return false;
    }
  }

  /** Private key and listen port; peers are the reconcile's business. */
  private configureInterface(): void {
    const key = this.key!;
    wg(['set', this.deviceName, 'listen-port', String(this.config.listenPort), 'private-key', key.file], this.tool);
  }

  /** Address `<subnet network>/32` only, the MTU, up (the source for host → remote pod traffic). */
  private configureLink(): void {
    const own = this.own;
    if (!own) throw new Error('WireguardBackend used before configure()');
    ensureOnlyAddress(this.deviceName, `${networkAddress(own)}/32`, this.nsOpts, this.log);
    const mtu = this.mtu();
    let link = nl.requireLink(this.deviceName, this.nsOpts);
    if (link.mtu !== mtu) link = nl.linkSet(this.deviceName, { mtu }, this.nsOpts);
    if (!link.up) nl.setUp(this.deviceName, this.nsOpts);
  }

  /**
   * Before each reconcile: a device deleted (wireguard-go then exits too),
   * downed, readdressed or given another key or port by hand is rebuilt;
   * the peer diff that follows finds it empty and programs every peer.
   */
  private healDevice(): DeviceDump {
    const link = nl.linkByName(this.deviceName, this.nsOpts);
    let dump: DeviceDump | undefined;
    if (link && this.implOf(link)) {
      try {
        dump = parseDump(wgDump(this.deviceName, this.tool));
      } catch {
        dump = undefined;
      }
    }
    if (!link || !dump) {
      this.log.warn({ found: link ? link.type : 'nothing' }, 'device missing or not answering; rebuilding');
      this.ensureDevice();
      this.configureInterface();
      this.configureLink();
      return parseDump(wgDump(this.deviceName, this.tool));
    }
    if (dump.privateKey !== this.key!.privateKey || dump.listenPort !== this.config.listenPort) {
      this.log.warn({ listenPort: dump.listenPort }, 'device key or port changed; setting them back');
      this.configureInterface();
    }
    if (!link.up || link.mtu !== this.mtu()) this.configureLink();
    else {
      const want = `${networkAddress(this.own!)}/32`;
      const addrs = nl.addrList({ ...this.nsOpts, dev: this.deviceName, family: 'inet' });
      if (addrs.length !== 1 || addrs[0].cidr !== want) this.configureLink();
    }
    return dump;
  }

  private settings(): PeerSettings {
    return { persistentKeepalive: this.config.persistentKeepaliveInterval, ...(this.config.psk ? { psk: this.config.psk } : {}) };
  }

  /** One `wg set` for the whole difference; nothing at all when there is none. */
  private applyPeers(desired: Parameters<typeof diffPeers>[0], dump: DeviceDump, report: ReconcileReport): void {
    const s = this.settings();
    const diff = diffPeers(desired, dump.peers, s);
    if (isEmptyDiff(diff)) return;
    for (const u of diff.update) this.log.info({ peer: u.peer.publicKey, subnet: u.peer.lease.subnet, why: u.why }, 'updating peer');
    for (const a of diff.add) this.log.info({ peer: a.publicKey, subnet: a.lease.subnet, endpoint: a.endpoint }, 'adding peer');
    for (const r of diff.remove) this.log.info({ peer: r }, 'removing peer');
    try {
      withSecretFile(s.psk, (pskFile) => wg(wgSetArgs(this.deviceName, diff, s, pskFile), this.tool));
      report.added += diff.add.length;
      report.updated += diff.update.length;
      report.removed += diff.remove.length;
    } catch (err) {
      report.errors.push(`wg set ${this.deviceName}: ${errorText(err)}`);
    }
  }

  /**
   * The cluster network via flannel-wg, and no other route into it: a route
   * to a remote pod subnet via the underlay or an old flannel.1 (a previous
   * backend's) would carry pod traffic unencrypted, so it is removed.
   */
  private ensureRoutes(report: ReconcileReport): void {
    const link = nl.linkByName(this.deviceName, this.nsOpts);
    if (!link) return;
    const dst = canonicalCidr(this.network);
    const own = canonicalCidr(this.own!);
    let routes: nl.Route[];
    try {
      routes = nl.routeList({ ...this.nsOpts, family: 'inet' });
    } catch (err) {
      report.errors.push(`reading routes: ${errorText(err)}`);
      return;
    }
    let present = false;
    for (const r of routes) {
      if (r.protocol === RTPROT_KERNEL || r.dst === 'default' || r.dst === own) continue;
      const cidr = parseCidr(r.dst, 4);
      if (!cidr || !cidrContainsCidr(this.network, cidr)) continue;
      if (r.linkIndex === link.index && r.dst === dst && !r.gw && r.metric === 0 && r.scope === nl.RouteScope.link) {
        present = true;
        continue;
      }
      if (r.linkIndex === 0) continue; // blackhole/unreachable: no traffic leaves through them
      try {
        const dev = nl.linkByIndex(r.linkIndex, this.nsOpts)?.name;
        const spec: nl.RouteSpec = { ...this.nsOpts, dst: r.dst, metric: r.metric, ...(dev ? { dev } : {}), ...(r.gw ? { gw: r.gw } : {}) };
        if (nl.routeDelete(spec)) {
          report.removed++;
          this.log.warn({ dst: r.dst, dev, gw: r.gw }, 'removed a route that would carry pod traffic around WireGuard');
        }
      } catch (err) {
        report.errors.push(`remove route ${r.dst}: ${errorText(err)}`);
      }
    }
    if (present) return;
    try {
      nl.routeReplace({ ...this.nsOpts, dst, dev: this.deviceName, scope: nl.RouteScope.link });
      report.added++;
    } catch (err) {
      report.errors.push(`route ${dst} dev ${this.deviceName}: ${errorText(err)}`);
    }
  }
}
