// The VXLAN backend: one flannel.<VNI> device, and per remote node one
// onlink route, one permanent ARP entry and one FDB entry (or a plain route
// with DirectRouting). The IPv6 instance (family 6) runs the same code on
// flannel-v6.<VNI>, on the IPv6 view of every lease (family.ts).
// Reconciliation is exact and level-triggered: what the kernel holds on our
// devices is read, compared with the leases, and only the difference is
// written, so an unchanged cluster costs four reads.
import type { Logger } from 'pino';
import * as nl from '../../netlink/index.js';
import type { Backend, BackendData, ExternalInterface, Lease, ReconcileReport, VxlanBackendConfig } from '../types.js';
import { networkAddress, type Cidr, type Family } from '../../net/ip.js';
import { externalView, LeaseViews } from './family.js';
import {
  baseMetric,
  describeLease,
  normalizeMac,
  planVxlan,
  planVxlanLease,
  type DesiredFdb,
  type DesiredNeigh,
  type LeasePlan,
  type PerNexthop,
  type Plan,
  type PlanContext,
  type Skipped,
} from './plan.js';
import {
  checkExternal,
  emptyReport,
  ensureOnlyAddress,
  errorText,
  leaseError,
  netnsOpts,
  planContext,
  applyEntries,
  nexthopDelEntry,
  NexthopSupport,
  plannedRouteDelEntry,
  removal,
  requireCidr,
  routeDelEntry,
  routeReplaceEntry,
  silentLogger,
  SkipLog,
  withoutServedSubnets,
  type BatchOutcome,
  type RouteDevices,
} from './common.js';
import { PeerModel, type PeerChange } from './peers.js';
import { exactDiff } from './exact.js';

interface CachedPlan {
  plan: LeasePlan | Skipped;
  subnet: string;
  publicIP: string;
  backendType: string;
  mac: string | undefined;
}

interface PlanMemo {
  /** planOne's result for each remote lease, in order */
  inputs: readonly (LeasePlan | Skipped)[];
  plan: Plan;
}

/** The kernel's default VXLAN port, also flannel's. */
export const DEFAULT_VXLAN_PORT = 8472;
/** inner Ethernet 14 + outer IPv4 20 + UDP 8 + VXLAN 8 */
export const VXLAN_OVERHEAD_V4 = 50;
/**
 * inner Ethernet 14 + outer IPv6 40 + UDP 8 + VXLAN 8. flanneld takes 50
 * for flannel-v6 too, so full-size packets over an IPv6 underlay do not fit.
 */
export const VXLAN_OVERHEAD_V6 = 70;

export interface VxlanBackendOptions {
  config: VxlanBackendConfig;
  /** the cluster network of `family`, e.g. 10.244.0.0/16: which underlay routes are ours */
  network: string;
  /** 4 (default): flannel.<VNI> on the IPv4 leases; 6: flannel-v6.<VNI> on their IPv6 halves */
  family?: Family;
  /** node netns path; absent = this process's netns */
  netns?: string;
  logger?: Logger;
  /** default flannel.<VNI>, or flannel-v6.<VNI> for family 6 */
  deviceName?: string;
  /** VTEP MAC to create the device with (flannel keeps it across reboots); default random */
  vtepMac?: string;
}

export class VxlanBackend implements Backend {
  readonly type = 'vxlan' as const;
  readonly deviceName: string;
  readonly family: Family;
  private readonly config: VxlanBackendConfig;
  private readonly views: LeaseViews;
  private readonly network: Cidr;
  private readonly nsOpts: nl.InNetns;
  private readonly log: Logger;
  private readonly skipLog: SkipLog;
  /** per-peer routes go through nexthop objects unless the kernel has none */
  private readonly nexthops: NexthopSupport;
  private ext?: ExternalInterface;
  private extCidr?: Cidr;
  private vtepMac?: string;
  private own?: Cidr;
  /** what the last passes wrote, peer by peer; undefined = unknown, take the exact pass */
  private model?: PeerModel;
  /** per lease object: its plan, and the fields it was planned from (a lease changed in place is planned again) */
  private planCache = new WeakMap<Lease, CachedPlan>();
  /** the last exact pass's plan and its inputs: an unchanged lease list is not planned again */
  private lastPlan?: PlanMemo;
  /**
   * The kernel's tables as read by the last exact pass that found nothing
   * to write for `plans`. Only a byte-equal dump of every table (the kernel
   * read and compared entry by entry, every pass) skips decoding and the
   * diff: the diff is a function of the dump, so it would again be empty.
   */
  private quiet?: { plans: readonly LeasePlan[]; nexthop: boolean; text: nl.TableText };
  /**
   * The plans the exact pass built `model` from, with every peer written;
   * cleared when an event changes the model. A later pass over the same
   * plans that fails nowhere would build the same model again.
   */
  private modelPlans?: readonly LeasePlan[];

  constructor(opts: VxlanBackendOptions) {
    this.config = opts.config;
    if (!Number.isInteger(opts.config.vni) || opts.config.vni < 0 || opts.config.vni > 0xffffff) {
      throw new Error(`VXLAN VNI ${opts.config.vni} is out of range 0..16777215`);
    }
    this.family = opts.family ?? 4;
    this.views = new LeaseViews(this.family);
    this.network = requireCidr(opts.network, 'cluster network', this.family);
    this.deviceName = opts.deviceName ?? (this.family === 6 ? `flannel-v6.${opts.config.vni}` : `flannel.${opts.config.vni}`);
    this.nsOpts = netnsOpts(opts.netns);
    this.log = (opts.logger ?? silentLogger).child({ backend: 'vxlan', device: this.deviceName });
    this.skipLog = new SkipLog(this.log);
    this.nexthops = new NexthopSupport(this.log);
    if (opts.vtepMac !== undefined) {
      const mac = normalizeMac(opts.vtepMac);
      if (!mac) throw new Error(`VTEP MAC ${JSON.stringify(opts.vtepMac)} is not a unicast MAC`);
      this.vtepMac = mac;
    }
  }

  async prepare(extAll: ExternalInterface): Promise<BackendData> {
    const ext = externalView(extAll, this.family);
    this.extCidr = checkExternal(ext, this.family);
    this.ext = ext;
    this.forgetPlans();
    const { config } = this;
    this.log.info(
      { vni: config.vni, port: this.port(), directRouting: config.directRouting, iface: ext.name, local: ext.ip },
      'VXLAN config',
    );
    const link = this.ensureDevice();
    return { VNI: config.vni, VtepMAC: link.mac };
  }

  async configure(ownLease: Lease): Promise<{ mtu: number }> {
    const own = this.views.of(ownLease);
    if (!own) throw new Error(`our lease has no IPv${this.family} subnet`);
    this.own = requireCidr(own.subnet, 'own subnet', this.family);
    // Plans depend on our own subnet and interface: forget those made before.
    this.forgetPlans();
    this.model = undefined;
    this.ensureDevice();
    const link = this.configureDevice();
    return { mtu: link.mtu };
  }

  reconcile(leases: Lease[]): ReconcileReport {
    const ctx = this.context('reconcile');
    const { usable: remote, skipped: served } = this.withoutServed(this.views.all(leases));
    const report = emptyReport();
    const before = this.model;
    const beforePlans = this.modelPlans;
    this.model = undefined;
    this.modelPlans = undefined;
    try {
      this.healDevice();
    } catch (err) {
      report.errors.push(`${this.deviceName}: ${errorText(err)}`);
      return report;
    }
    const devs = this.devices();
    const req = this.stateRequest(devs);
    // The shim dumps the kernel's tables on its own thread while the
    // leases are planned here (planning writes nothing).
    let pending: nl.PendingTableDump;
    try {
      pending = nl.startTableDump(req);
    } catch (err) {
      this.quiet = undefined;
      report.errors.push(`reading the kernel's tables: ${errorText(err)}`);
      return report;
    }
    let plan: Plan;
    let model: PeerModel;
    try {
      plan = this.planAll(remote, ctx);
      this.skipLog.record(served.length > 0 ? [...served, ...plan.skipped] : plan.skipped, report);
      // The peer model this pass leaves when every peer's writes succeed
      // (they nearly always do), built while the dump may still be running:
      // the last one when it came from these very plans with no event since.
      model = before !== undefined && beforePlans === plan.plans ? before : this.buildModel(remote, plan, new Set(), ctx);
    } catch (err) {
      // The shim keeps a dump until it is collected: collect it, or its
      // 150,000 lines would stay for the agent's life.
      try {
        pending.wait();
      } catch {
        // the planning error is the one to report
      }
      throw err;
    }
    let failed: Set<LeasePlan>;
    try {
      failed = this.apply(plan.plans, report, pending.wait(), req, devs);
    } catch (err) {
      this.quiet = undefined;
      report.errors.push(`reading the kernel's tables: ${errorText(err)}`);
      return report;
    }
    if (failed.size === 0) {
      this.model = model;
      this.modelPlans = plan.plans;
    } else this.model = this.buildModel(remote, plan, failed, ctx);
    return report;
  }

  /**
   * What the peers hold after an exact pass over `plan` in which the
   * writes of `failed` failed. Leases refused only because another lease
   * claims the same subnet or MAC wait on it, as do failed ones: while any
   * wait, events take the exact pass.
   */
  private buildModel(remote: readonly Lease[], plan: Plan, failed: ReadonlySet<LeasePlan>, ctx: PlanContext): PeerModel {
    const waiting = new Set<Lease>([...failed].map((p) => p.lease));
    for (const s of plan.skipped) if (!('reason' in this.planOne(s.lease, ctx))) waiting.add(s.lease);
    return new PeerModel(remote, failed.size ? plan.plans.filter((p) => !failed.has(p)) : plan.plans, waiting);
  }

  /**
   * planVxlan over the remote leases, or the last pass's plan when every
   * lease is the same object at the same position and still plans the same
   * (planOne re-plans a lease changed in place, which breaks the match).
   */
  private planAll(remote: readonly Lease[], ctx: PlanContext): Plan {
    const inputs: (LeasePlan | Skipped)[] = new Array(remote.length);
    const last = this.lastPlan;
    let same = last !== undefined && last.inputs.length === remote.length;
    for (let i = 0; i < remote.length; i++) {
      const p = this.planOne(remote[i]!, ctx);
      inputs[i] = p;
      if (same && last!.inputs[i] !== p) same = false;
    }
    if (same) return last!.plan;
    const plan = planVxlan(remote, ctx, { directRouting: this.config.directRouting }, (_, i) => inputs[i]!);
    this.lastPlan = { inputs, plan };
    return plan;
  }

  private forgetPlans(): void {
    this.planCache = new WeakMap();
    this.lastPlan = undefined;
    this.quiet = undefined;
    this.modelPlans = undefined;
  }

  /**
   * Edge-triggered: applies only what changed since the last pass, from
   * the model of what this backend wrote, without reading the kernel. Falls
   * back to the exact reconcile when there is no model yet, when leases
   * conflict or wait, when many peers changed at once, or after a failure.
   */
  update(leases: Lease[]): ReconcileReport {
    const model = this.model;
    if (!model) return this.reconcile(leases);
    const ctx = this.context('update');
    const { usable: remote, skipped: served } = this.withoutServed(this.views.all(leases));
    // a lease held back is reported (and routed once free) by the exact pass
    if (served.length > 0) return this.reconcile(leases);
    const changes = model.changes(remote, (lease) => this.planOne(lease, ctx), Math.max(64, remote.length >> 4));
    if ('exact' in changes) {
      this.log.debug({ why: changes.exact }, 'lease change needs the exact pass');
      return this.reconcile(leases);
    }
    const report = emptyReport();
    if (changes.length > 0) {
      // The model changes: the exact pass builds its own again.
      this.modelPlans = undefined;
      const entries: nl.BatchEntry[] = [];
      const outcomes: BatchOutcome[] = [];
      const owner: PeerChange[] = [];
      const devs = this.devices();
      const nexthop = this.nexthops.enabled;
      // How many peers use each gateway's nexthop once these changes are in:
      // a nexthop is deleted only when none does (the kernel would take
      // every route on it along).
      const users = nexthop ? model.nexthopUsersAfter(changes) : undefined;
      changes.forEach((c, i) => {
        for (const [entry, outcome] of peerEntries(c, devs, this.deviceName, i + 1, users)) {
          entries.push(entry);
          outcomes.push(outcome);
          owner.push(c);
        }
      });
      const failed = new Set<PeerChange>();
      const res = applyEntries(entries, outcomes.map((o, i) => ({
        ok: o.ok,
        fail: (rep, err) => {
          if (!nl.isNotFound(err) || entries[i]!.kind.endsWith('.set') || entries[i]!.kind.endsWith('.append') || entries[i]!.kind === 'route.replace') failed.add(owner[i]!);
          o.fail(rep, err);
        },
      })), this.nsOpts, report);
      this.nexthops.note(res.nexthopsUnsupported);
      for (const c of changes) if (!failed.has(c)) model.commit(c);
      // A failure leaves the kernel unknown: the next event takes the exact pass.
      if (failed.size > 0) this.model = undefined;
    }
    report.programmed = model.programmed;
    return report;
  }

  /**
   * The leases without those on a subnet a local interface still serves:
   * cni0 keeping its old gateway after this node's subnet moved, while
   * another node holds that subnet now (or this node's own old lease).
   */
  private withoutServed(remote: Lease[]): ReturnType<typeof withoutServedSubnets> {
    const own = this.own;
    if (!own) return { usable: remote, skipped: [] };
    return withoutServedSubnets(remote, { family: this.family, network: this.network, own, nsOpts: this.nsOpts, log: this.log });
  }

  private context(what: string): PlanContext {
    const { ext, extCidr, own } = this;
    if (!ext || !extCidr || !own) throw new Error(`VxlanBackend.${what} called before prepare() and configure()`);
    return planContext(this.network, own, ext, extCidr);
  }

  /**
   * Plans of leases seen before are reused: the same lease object with the
   * same planned fields plans the same entries. A lease changed in place
   * (another subnet, public IP, type or VTEP MAC) is planned again.
   */
  private planOne(lease: Lease, ctx: PlanContext): LeasePlan | Skipped {
    const c = this.planCache.get(lease);
    if (c && c.subnet === lease.subnet && c.publicIP === lease.publicIP && c.backendType === lease.backendType && c.mac === lease.backendData?.VtepMAC) {
      return c.plan;
    }
    const plan = planVxlanLease(lease, ctx, { directRouting: this.config.directRouting });
    this.planCache.set(lease, { plan, subnet: lease.subnet, publicIP: lease.publicIP, backendType: lease.backendType, mac: lease.backendData?.VtepMAC });
    return plan;
  }

  private port(): number {
    return this.config.port || DEFAULT_VXLAN_PORT;
  }

  private mtu(ext: ExternalInterface): number {
    if (this.config.mtu !== undefined) return this.config.mtu;
    return ext.mtu - (this.family === 6 ? VXLAN_OVERHEAD_V6 : VXLAN_OVERHEAD_V4);
  }

  /**
   * Creates the device, or adopts an equal one (keeping its MAC and the
   * peers programmed on it), or recreates one with other attributes. A MAC
   * we already published is reused so peers need not learn a new one.
   */
  private ensureDevice(): nl.Link {
    const ext = this.ext;
    if (!ext) throw new Error('VxlanBackend used before prepare()');
    const mtu = this.mtu(ext);
    if (!Number.isInteger(mtu) || mtu < 68) throw new Error(`VXLAN MTU ${mtu} is too small (underlay MTU ${ext.mtu})`);
    const spec: nl.VxlanSpec = {
      ...this.nsOpts,
      name: this.deviceName,
      vni: this.config.vni,
      local: ext.ip,
      dev: ext.name,
      port: this.port(),
      learning: false,
      mtu,
    };
    // A device left by an earlier run keeps its MAC even when it must be
    // recreated (say, the underlay address changed): the MAC is how peers
    // and the subnet manager recognise this node's lease.
    this.vtepMac ??= this.existingMac();
    if (this.vtepMac) spec.mac = this.vtepMac;
    const { link, recreated } = nl.ensureVxlan(spec);
    if (recreated) this.log.warn('device existed with other attributes; recreated it');
    if (!this.vtepMac) this.vtepMac = link.mac.toLowerCase();
    if (this.family === 6) this.quietIPv6();
    if (link.mac.toLowerCase() !== this.vtepMac) {
      this.log.warn({ want: this.vtepMac, got: link.mac }, 'device MAC differs from the VTEP MAC; setting it back');
      return nl.linkSet(this.deviceName, { mac: this.vtepMac }, this.nsOpts);
    }
    return link;
  }

  /**
   * flannel-v6 takes no router advertisements (flanneld sets accept_ra 0)
   * and skips duplicate address detection: its /128 is unique by lease, and
   * DAD would hold it tentative, unusable as a source, for a second.
   */
  private quietIPv6(): void {
    for (const key of ['accept_ra', 'accept_dad']) {
      try {
        nl.sysctlSet(`net/ipv6/conf/${this.deviceName}/${key}`, '0', this.nsOpts);
      } catch (err) {
        this.log.warn({ err: errorText(err), key }, 'could not set an IPv6 sysctl of the device');
      }
    }
  }

  private existingMac(): string | undefined {
    const link = nl.linkByName(this.deviceName, this.nsOpts);
    return link?.type === 'vxlan' ? normalizeMac(link.mac) : undefined;
  }

  /** Address `<subnet network>/32` (`/128` for IPv6: the source for host → remote pod traffic) and nothing else. */
  private configureDevice(): nl.Link {
    const own = this.own;
    if (!own) throw new Error('VxlanBackend used before configure()');
    ensureOnlyAddress(this.deviceName, `${networkAddress(own)}/${this.family === 6 ? 128 : 32}`, this.nsOpts, this.log);
    let link = nl.requireLink(this.deviceName, this.nsOpts);
    if (!link.up) link = nl.setUp(this.deviceName, this.nsOpts);
    return link;
  }

  /**
   * One cheap look before each reconcile: a device deleted or changed by
   * someone else is rebuilt with the same MAC and address, after which the
   * diff below finds it empty and programs every peer again.
   */
  private healDevice(): void {
    const link = nl.linkByName(this.deviceName, this.nsOpts);
    // VNI and port come from the config alone: a device re-created by
    // someone else with other ones carries no traffic to any peer.
    const vx = link?.vxlan;
    if (link && link.type === 'vxlan' && link.up && link.mac.toLowerCase() === this.vtepMac && vx && vx.vni === this.config.vni && vx.port === this.port()) return;
    const found = link ? `${link.type}${link.up ? '' : ' (down)'}${vx ? ` VNI ${vx.vni} port ${vx.port}` : ''}` : 'nothing';
    this.log.warn({ found }, 'device missing or changed; rebuilding');
    this.ensureDevice();
    this.configureDevice();
  }

  /** The three tables this backend owns entries in, one dump each. */
  private stateRequest(devs: RouteDevices): nl.TableStateRequest {
    return {
      ...this.nsOpts,
      routeDevs: [this.deviceName, devs.underlay],
      neighDev: this.deviceName,
      fdbDev: this.deviceName,
      nexthops: true,
      ...(this.family === 6 ? { family: 'inet6' as const } : {}),
    };
  }

  private devices(): RouteDevices {
    return { overlay: this.deviceName, underlay: this.ext!.name };
  }

  /**
   * Exact pass: diff the plans against the kernel and write the difference
   * in one batch. Departed peers first, routes before their neighbours, so no
   * packet is sent towards a half-removed peer; FDB removals also make room
   * for MACs that moved to another remote. Then per peer ARP, FDB, route, as
   * flannel does (the kernel would ARP for the gateway if the route came
   * first); a failing step stops that peer only, the next pass retries it.
   */
  private apply(plans: LeasePlan[], report: ReconcileReport, text: nl.TableText, req: nl.TableStateRequest, devs: RouteDevices): Set<LeasePlan> {
    this.nexthops.note(text.nexthopsUnsupported === true);
    const nexthop = this.nexthops.enabled;
    const quiet = this.quiet;
    this.quiet = undefined;
    // Every entry read is compared on every pass: here as text against the
    // dump that last diffed to nothing for these very plans (same plans and
    // same dump give the same, empty, diff); any difference takes the diff.
    if (quiet && quiet.plans === plans && quiet.nexthop === nexthop && nl.sameTableText(quiet.text, text)) {
      this.quiet = quiet;
      report.programmed = plans.length;
      return new Set();
    }
    // Table by table, the same rule: a table whose text and desired entries
    // both equal those of the last quiet pass diffs to nothing again, so
    // after a MAC change only the neighbour and FDB tables are decoded and
    // diffed, not the routes and nexthops (two thirds of the entries).
    const same = quiet && quiet.nexthop === nexthop ? quietTables(quiet.plans, quiet.text, plans, text) : NONE_QUIET;
    const wantNeighs: DesiredNeigh[] = [];
    const wantFdb: DesiredFdb[] = [];
    for (const p of plans) {
      if (p.neigh) wantNeighs.push(p.neigh);
      if (p.fdb) wantFdb.push(p.fdb);
    }
    // The rest is compared line by line with what the plans would print;
    // only the lines that differ are decoded and diffed (exact.ts).
    const diff = exactDiff({
      routes: plans.map((p) => p.route),
      neighs: wantNeighs,
      fdb: wantFdb,
      text,
      routeDevs: req.routeDevs,
      devs,
      network: this.network,
      metric: baseMetric(this.family),
      nexthop,
      known: same,
      ...(this.family === 6 ? { kernelNeigh: kernelNeighV6 } : {}),
    });
    const { routes, neighs, fdb } = diff;
    const nhDiff = diff.nexthops;
    const failed = new Set<LeasePlan>();
    const nexthopRemovals = nhDiff?.remove ?? [];
    if (routes.write.length + routes.remove.length + neighs.write.length + neighs.remove.length + fdb.add.length + fdb.remove.length + nexthopRemovals.length === 0) {
      report.programmed = plans.length;
      this.quiet = { plans, nexthop, text };
      return failed;
    }
    const entries: nl.BatchEntry[] = [];
    const outcomes: BatchOutcome[] = [];
    const push = (e: nl.BatchEntry, o: BatchOutcome): void => {
      entries.push(e);
      outcomes.push(o);
    };
    for (const r of routes.remove) push(routeDelEntry(r, devs), removal(`route ${r.dst}${r.gw ? ` via ${r.gw}` : ''}`));
    for (const n of neighs.remove) push({ kind: 'neigh.del', dev: this.deviceName, ip: n.ip }, removal(`neighbour ${n.ip}`));
    for (const e of fdb.remove) {
      push({ kind: 'fdb.del', dev: this.deviceName, mac: e.mac, dst: e.dst }, removal(`fdb ${e.mac} dst ${e.dst}`, !fdb.moved.has(e.mac)));
    }

    // Keyed by the plans' own objects, which the diffs hand back: no key
    // strings built per peer (one plan per subnet, gateway and MAC).
    const routeWrites = new Map(routes.write.map((w) => [w.route, w]));
    const neighWrites = new Map(neighs.write.map((w) => [w.neigh, w]));
    const fdbAdds = new Set(fdb.add);
    // Per peer ARP, FDB, route; all neighbours first, then all FDB entries,
    // then all routes (a peer's group skips its later steps after a failure).
    const neighSteps: nl.BatchEntry[] = [];
    const neighOutcomes: BatchOutcome[] = [];
    const fdbSteps: nl.BatchEntry[] = [];
    const fdbOutcomes: BatchOutcome[] = [];
    const routeSteps: nl.BatchEntry[] = [];
    const routeOutcomes: BatchOutcome[] = [];
    let group = 0;
    for (const p of plans) {
      const r = routeWrites.get(p.route);
      const n = p.neigh ? neighWrites.get(p.neigh) : undefined;
      const f = p.fdb && fdbAdds.has(p.fdb) ? p.fdb : undefined;
      if (!r && !n && !f) {
        report.programmed++;
        continue;
      }
      group++;
      const peer = new PeerWrites(p, failed);
      if (n) {
        neighSteps.push({ kind: 'neigh.set', dev: this.deviceName, ip: n.neigh.ip, mac: n.neigh.mac, group });
        neighOutcomes.push(new PeerStep(peer, 'neighbour', n.existed, !f && !r));
      }
      if (f) {
        fdbSteps.push({ kind: 'fdb.append', dev: this.deviceName, mac: f.mac, dst: f.dst, group });
        fdbOutcomes.push(new PeerStep(peer, 'fdb', fdb.moved.has(f.mac), !r));
      }
      if (r) {
        routeSteps.push(routeReplaceEntry(p.route, devs, group, nexthop));
        routeOutcomes.push(new PeerStep(peer, 'route', r.existed, true));
      }
    }
    // (a loop: spreading 50,000 arguments into push would overflow the stack)
    for (const [es, os] of [[neighSteps, neighOutcomes], [fdbSteps, fdbOutcomes], [routeSteps, routeOutcomes]] as const) {
      for (let i = 0; i < es.length; i++) push(es[i]!, os[i]!);
    }
    // Last, our nexthops no route needs (their routes were replaced above).
    for (const n of nexthopRemovals) push(nexthopDelEntry(n, devs), removal(`nexthop ${n.id} via ${n.gw ?? '-'}`, false));
    this.nexthops.note(applyEntries(entries, outcomes, this.nsOpts, report).nexthopsUnsupported);
    return failed;
  }
}

/**
 * One peer's writes in an exact pass: it counts as programmed when its last
 * step succeeds, and its first failure is the one reported (the shim skips
 * the later steps of its group). Objects rather than closures: an exact
 * pass at 5,000 new peers makes 15,000 steps.
 */
class PeerWrites {
  constructor(
    private readonly plan: LeasePlan,
    private readonly failed: Set<LeasePlan>,
  ) {}

  fail(rep: ReconcileReport, step: string, err: nl.NetlinkError): void {
    if (this.failed.has(this.plan)) return;
    this.failed.add(this.plan);
    leaseError(rep, this.plan.lease, step, err);
  }
}

class PeerStep implements BatchOutcome {
  constructor(
    private readonly peer: PeerWrites,
    private readonly step: string,
    private readonly existed: boolean,
    private readonly last: boolean,
  ) {}

  ok(rep: ReconcileReport): void {
    if (this.existed) rep.updated++;
    else rep.added++;
    if (this.last) rep.programmed++;
  }

  fail(rep: ReconcileReport, err: nl.NetlinkError): void {
    this.peer.fail(rep, this.step, err);
  }
}

/** Which tables' diffs are known empty (quietTables). */
interface QuietTables {
  routes: boolean;
  neighs: boolean;
  fdb: boolean;
}

const NONE_QUIET: QuietTables = { routes: false, neighs: false, fdb: false };

/**
 * Per table: is its dump text byte-equal to the last quiet pass's, and are
 * the entries the plans want of it equal, in order, to that pass's? Then its
 * diff, a function of these two, is empty again. Routes go with the nexthop
 * dump (the route form depends on it); a device missing or nexthop support
 * changing counts for every table.
 */
function quietTables(before: readonly LeasePlan[], beforeText: nl.TableText, plans: readonly LeasePlan[], text: nl.TableText): QuietTables {
  const meta =
    before.length === plans.length &&
    (beforeText.nexthopsUnsupported === true) === (text.nexthopsUnsupported === true) &&
    beforeText.missing.length === text.missing.length &&
    beforeText.missing.every((m, i) => m === text.missing[i]);
  if (!meta) return NONE_QUIET;
  let routes = beforeText.routes === text.routes && (beforeText.nexthops ?? '') === (text.nexthops ?? '');
  let neighs = beforeText.neighs === text.neighs;
  let fdb = beforeText.fdb === text.fdb;
  for (let i = 0; i < plans.length && (routes || neighs || fdb); i++) {
    const a = before[i]!;
    const b = plans[i]!;
    if (a === b) continue;
    routes &&= a.route.dst === b.route.dst && a.route.gw === b.route.gw && a.route.via === b.route.via;
    neighs &&= a.neigh === b.neigh || (a.neigh !== undefined && b.neigh !== undefined && a.neigh.ip === b.neigh.ip && a.neigh.mac === b.neigh.mac);
    fdb &&= a.fdb === b.fdb || (a.fdb !== undefined && b.fdb !== undefined && a.fdb.mac === b.fdb.mac && a.fdb.dst === b.fdb.dst);
  }
  return { routes, neighs, fdb };
}

/**
 * IPv6 neighbours the kernel keeps on flannel-v6 by itself: multicast
 * (ff00::/8, e.g. ff02::16 for MLD reports) and link-local. Never ours.
 */
function kernelNeighV6(ip: string): boolean {
  return /^ff[0-9a-f]{2}:/i.test(ip) || /^fe[89ab][0-9a-f]:/i.test(ip);
}

/**
 * The writes one peer's change stands for. Stale entries go first (an FDB
 * entry must be deleted before its MAC can point elsewhere), then ARP, FDB
 * and route as in the exact pass, then a neighbour no longer needed.
 */
function peerEntries(
  c: PeerChange,
  devs: RouteDevices,
  dev: string,
  group: number,
  nexthopUsers: PerNexthop<number> | undefined,
): [nl.BatchEntry, BatchOutcome][] {
  const out: [nl.BatchEntry, BatchOutcome][] = [];
  const { before, after } = c;
  if (!before && !after) return out; // a refused lease left: nothing was written for it
  const who = describeLease((after ?? before)!.lease);
  const write = (step: string, existed: boolean): BatchOutcome => ({
    ok: (rep) => {
      if (existed) rep.updated++;
      else rep.added++;
    },
    fail: (rep, err) => leaseError(rep, (after ?? before)!.lease, step, err),
  });
  const nexthop = nexthopUsers !== undefined;
  // The old gateway's nexthop goes once no peer uses it (after the route).
  const dropNexthop = (): void => {
    const r = before?.route;
    if (!r || !nexthop || (nexthopUsers[r.via].get(r.gw) ?? 0) > 0) return;
    if (after && after.route.via === r.via && after.route.gw === r.gw) return;
    out.push([nexthopDelEntry(r, devs), removal(`nexthop via ${r.gw} of ${who}`, false)]);
  };
  if (!after) {
    const b = before!;
    out.push([plannedRouteDelEntry(b.route, devs, nexthop), removal(`route ${b.route.dst} of ${who}`)]);
    dropNexthop();
    if (b.neigh) out.push([{ kind: 'neigh.del', dev, ip: b.neigh.ip }, removal(`neighbour ${b.neigh.ip} of ${who}`)]);
    if (b.fdb) out.push([{ kind: 'fdb.del', dev, mac: b.fdb.mac, dst: b.fdb.dst }, removal(`fdb ${b.fdb.mac} of ${who}`)]);
    return out;
  }
  const fdbMoved = before?.fdb !== undefined && (before.fdb.mac !== after.fdb?.mac || before.fdb.dst !== after.fdb?.dst);
  if (fdbMoved) out.push([{ kind: 'fdb.del', dev, mac: before!.fdb!.mac, dst: before!.fdb!.dst }, removal(`fdb ${before!.fdb!.mac} of ${who}`, false)]);
  if (after.neigh && (before?.neigh?.ip !== after.neigh.ip || before.neigh.mac !== after.neigh.mac)) {
    out.push([{ kind: 'neigh.set', dev, ip: after.neigh.ip, mac: after.neigh.mac, group }, write('neighbour', before?.neigh !== undefined)]);
  }
  if (after.fdb && (fdbMoved || !before?.fdb)) {
    out.push([{ kind: 'fdb.append', dev, mac: after.fdb.mac, dst: after.fdb.dst, group }, write('fdb', fdbMoved)]);
  }
  const r = before?.route;
  if (!r || r.gw !== after.route.gw || r.via !== after.route.via) {
    out.push([routeReplaceEntry(after.route, devs, group, nexthop), write('route', r !== undefined)]);
    dropNexthop();
  }
  if (before?.neigh && (!after.neigh || after.neigh.ip !== before.neigh.ip)) {
    out.push([{ kind: 'neigh.del', dev, ip: before.neigh.ip }, removal(`neighbour ${before.neigh.ip} of ${who}`, false)]);
  }
  return out;
}
