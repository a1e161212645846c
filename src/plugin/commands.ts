// The CNI verbs of tsflannel. Each parses its config, then changes (or
// inspects) the node; ADD undoes what it did when a later step fails.
import { closeSync, constants as fsc, readFileSync } from 'node:fs';
import type { PluginContext } from '../cni/skel.js';
import type { Result } from '../cni/result.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { assertKnownCniArgs } from '../cni/env.js';
import { clip } from '../cni/validate.js';
import * as nl from '../netlink/index.js';
import type { Link } from '../netlink/index.js';
import { kernelFsOf, openRegularSync, PathGuardError } from '../fs/guard.js';
import { parsePodSubnetEnv, SubnetEnvError, type PodSubnetEnv } from '../flannel/subnet-env.js';
import { HostLocalIpam, requestedIps, type Allocation } from '../ipam/index.js';
import { cidrContainsIp, formatIp, parseCidr, parseIp, type Ip } from '../net/ip.js';
import { parsePluginConfig, type PluginConfig } from './config.js';
import { createLogger, type PluginLogger } from './log.js';
import { hostVethName } from './names.js';
import { applyPodRoutes, attachPod, bridgeAddressesIn, deletePodVeth, ensureBridge, isPeerOf, podRoutes, safeIsNetns, staleBridgeAddresses, type PodRoute, type RouteFamily } from './network.js';
import { checkRangesInSubnet, nodeSubnet, rangeSetsFor, type NodeSubnet } from './subnet.js';
import { cniErrorOf } from './errors.js';
import { checkAttachment } from './check.js';
import { requestedMac } from './mac.js';

interface Prepared {
  cfg: PluginConfig;
  log: PluginLogger;
}

/** CNI_ARGS keys tsflannel knows (Kubernetes runtimes send these, with IgnoreUnknown=1). */
const KNOWN_ARGS = ['K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID', 'IP', 'MAC'];

function prepare(ctx: PluginContext): Prepared {
  const cfg = parsePluginConfig(ctx.conf);
  if (ctx.env.command === 'ADD' || ctx.env.command === 'CHECK' || ctx.env.command === 'DEL') {
    assertKnownCniArgs(ctx.env.args, KNOWN_ARGS);
  }
  // Symlinks and bind mounts can still lead a path into /proc or /sys, where
  // no file of ours belongs (and where Node's recursive mkdir spins forever).
  for (const [key, path] of [['dataDir', cfg.dataDir], ['logFile', cfg.logFile], ['subnetFile', cfg.subnetFile]] as const) {
    const fsType = path === undefined ? undefined : kernelFsOf(path);
    if (fsType) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `"${key}" ${JSON.stringify(clip(path!))} leads into the kernel's ${fsType} file system`);
    }
  }
  const bindings: Record<string, string> = { cmd: ctx.env.command, network: cfg.network };
  if (ctx.env.containerId) bindings.containerId = ctx.env.containerId;
  const pod = ctx.env.args.K8S_POD_NAME;
  if (pod) bindings.pod = `${ctx.env.args.K8S_POD_NAMESPACE ?? ''}/${pod}`;
  return { cfg, log: createLogger(cfg.logLevel, cfg.logFile, bindings) };
}

/**
 * Runs a verb; a failure is logged with its stack at debug level (stderr
 * gets one line from the entry point), and a kernel refusal with a CNI
 * meaning gets its code.
 */
async function reported<T>(log: PluginLogger, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    log.debug({ err, goStack: err instanceof nl.NetlinkError ? err.goStack : undefined }, 'failed');
    throw cniErrorOf(err);
  }
}

/** The node's subnet file; the agent writes it once it holds a lease. */
export function loadSubnetEnv(path: string): PodSubnetEnv {
  try {
    // Reading a FIFO (or a device) would block or never end; the agent writes a plain file.
    const fd = openRegularSync(path, fsc.O_RDONLY);
    try {
      return parsePodSubnetEnv(readFileSync(fd, 'utf8'));
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    const shown = clip(path);
    if (err instanceof SubnetEnvError || (err instanceof PathGuardError && err.reason === 'not-regular')) {
      const reason = err instanceof PathGuardError ? 'not a regular file' : err.message;
      throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid subnet file ${shown}: ${reason}`);
    }
    const code = err instanceof PathGuardError ? err.errno : (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'not found' : code ?? 'read failed';
    throw new CniError(
      ErrorCode.IOFailure,
      `failed to load subnet file ${shown}: ${reason}`,
      'tsflanneld writes it once the node has a subnet lease; check that tsflanneld runs on this node and its log',
    );
  }
}

/**
 * The IPAM store; without a subnet (DEL, GC) it can release but not
 * allocate, and reads no ranges: a cleanup must not fail on ranges edited
 * since the ADD into ones no ADD accepts.
 */
function ipamFor(cfg: PluginConfig, subnet: NodeSubnet | undefined): HostLocalIpam {
  const rangeSets = subnet ? rangeSetsFor(cfg.ranges, subnet) : undefined;
  return new HostLocalIpam({ dataDir: cfg.dataDir, network: cfg.network, rangeSets, lockTimeoutMs: cfg.lockTimeoutMs });
}

function requireNetns(netns: string): void {
  if (!safeIsNetns(netns)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${clip(netns)} is not a network namespace`);
  }
}

/** Runs `fn`, and on failure runs the collected undo steps in reverse. */
async function withRollback<T>(log: PluginLogger, fn: (onUndo: (step: () => unknown) => void) => Promise<T>): Promise<T> {
  const steps: (() => unknown)[] = [];
  try {
    return await fn((step) => steps.push(step));
  } catch (err) {
    for (const step of steps.reverse()) {
      try {
        await step();
      } catch (undoErr) {
        log.error({ err: undoErr }, 'rollback step failed');
      }
    }
    throw err;
  }
}

interface Attached {
  bridge: Link;
  host: Link;
  pod: Link;
  /** one per range set, IPv4 first: `ip/prefix` with its gateway */
  ips: { address: string; gateway: string }[];
}

function resultOf(ctx: PluginContext, cfg: PluginConfig, a: Attached, routes: PodRoute[]): Result {
  const result: Result = {
    cniVersion: ctx.conf.cniVersion,
    interfaces: [
      { name: a.bridge.name, mac: a.bridge.mac },
      { name: a.host.name, mac: a.host.mac },
      { name: ctx.env.ifname, mac: a.pod.mac, sandbox: ctx.env.netns },
    ],
    ips: a.ips.map((ip) => ({ address: ip.address, gateway: ip.gateway, interface: 2 })),
    routes,
  };
  if (cfg.dns) result.dns = cfg.dns;
  return result;
}

/** The pod's gateways by family: the allocation's (its range's gateway), else the node subnet's. */
function routeFamilies(subnet: NodeSubnet, ips: Attached['ips']): RouteFamily[] {
  return subnet.families.map((f) => {
    const own = ips.find((ip) => parseCidr(ip.address)?.ip.family === f.family);
    return { family: f.family, clusterNetwork: f.clusterNetwork, gateway: own?.gateway || f.gateway };
  });
}

/**
 * The attachment as an earlier ADD left it, if it is whole: the leases, the
 * host veth on the bridge, and its peer in the pod carrying every address.
 */
async function existingAttachment(ipam: HostLocalIpam, ctx: PluginContext, bridge: Link, seen: nl.PodInspection): Promise<Attached | undefined> {
  const { containerId, ifname } = ctx.env;
  // The kernel first (`seen`, read by the caller): a fresh ADD stops at the host lookup, without the IPAM lock.
  const { host, pod } = seen;
  if (!host || host.masterIndex !== bridge.index) return undefined;
  if (!pod || !isPeerOf(pod, host)) return undefined;
  const held = await ipam.held(containerId, ifname);
  if (!held || held.length === 0) return undefined;
  if (!held.every((alloc) => seen.podAddresses.includes(alloc.address))) return undefined;
  return { bridge, host, pod, ips: held.map(({ address, gateway }) => ({ address, gateway })) };
}

/**
 * A retried ADD finds the attachment whole; if it asked for addresses the
 * attachment does not hold, that is said, never glossed over.
 */
function checkRequestedHeld(requested: readonly Ip[], ips: Attached['ips']): void {
  const held = new Set(ips.map((ip) => parseCidr(ip.address)).filter((c) => c !== undefined).map((c) => formatIp(c.ip)));
  const missing = requested.map(formatIp).filter((ip) => !held.has(ip));
  if (missing.length > 0) {
    throw new CniError(
      ErrorCode.Internal,
      `failed to allocate all requested IPs: ${missing.join(' ')}`,
      `the attachment already holds ${[...held].join(', ')}; delete the pod (CNI DEL) before asking for other addresses`,
    );
  }
}

/**
 * A retried ADD finds the attachment whole; the pod's MAC is set only when
 * the pair is made, so one asking for another MAC is refused, never
 * answered with a result that claims it (changing it under a running pod
 * would break its neighbours' ARP caches without a word).
 */
function checkRequestedMac(ifname: string, mac: string | undefined, pod: Link): void {
  if (mac === undefined || pod.mac === mac) return;
  throw new CniError(
    ErrorCode.Internal,
    `interface ${ifname} already has MAC ${pod.mac}, not the requested ${mac}`,
    'delete the pod (CNI DEL) before asking for another MAC',
  );
}

export async function add(ctx: PluginContext): Promise<Result> {
  const { cfg, log } = prepare(ctx);
  return reported(log, async () => {
    const { containerId, netns, ifname } = ctx.env;
    if (ifname === 'lo') throw new CniError(ErrorCode.InvalidEnvironment, 'CNI_IFNAME "lo" is the pod\'s loopback, not a name for its network interface');
    const subnet = nodeSubnet(loadSubnetEnv(cfg.subnetFile), cfg.subnetFile);
    if (cfg.ranges) checkRangesInSubnet(cfg.ranges, subnet);
    const sources = { cniArgs: ctx.env.args, conf: ctx.conf.raw, runtimeConfig: ctx.conf.runtimeConfig };
    const requested = requestedIps(sources);
    const mac = requestedMac(sources);
    requireNetns(netns);
    const mtu = cfg.mtu ?? subnet.mtu;
    const ipam = ipamFor(cfg, subnet);
    const gateways = subnet.families.map((f) => f.gatewayCidr);
    // One call per attachment at a time, across processes: a second ADD
    // waits for the first and then finds its work done.
    return ipam.withAttachment(containerId, ifname, async () => {
      const hostName = hostVethName(containerId, ifname);
      // One shim call reads the node side (bridge, its addresses, forwarding)
      // with the attachment's host veth. Nothing is cached between calls, so a
      // bridge deleted, recreated or re-addressed since the last ADD is seen.
      const node = nl.inspectPodAndNode({ netns, hostName, ifname, bridge: cfg.bridge, hostSysctls: forwardingKeys(subnet) });
      let seen: nl.PodInspection = node;
      let bridge = readyBridge(node, cfg, mtu, subnet);
      if (!bridge) {
        // Something to make or fix: the node-side steps, each looking again.
        const before = nl.linkByName(cfg.bridge);
        if (before && !cfg.forceAddress) await moveGateway(cfg.bridge, subnet, ipam, log);
        bridge = ensureBridge(cfg.bridge, mtu, gateways, cfg.forceAddress, log);
        if (before && bridge.mtu > before.mtu) await capOlderPods(cfg.bridge, bridge.mtu, subnet, ipam, log);
        enableForwarding(subnet);
        seen = nl.inspectPod({ netns, hostName, ifname, bridgeIndex: bridge.index });
      }
      const existing = await existingAttachment(ipam, ctx, bridge, seen);
      if (existing) {
        checkRequestedHeld(requested, existing.ips);
        checkRequestedMac(ifname, mac, existing.pod);
        const routes = podRoutes(routeFamilies(subnet, existing.ips), cfg.isDefaultGateway, cfg.routes);
        // A retry may carry new routes; a bad one fails this call, never the pod.
        applyPodRoutes(netns, ifname, routes);
        log.info({ ...loggedIps(existing.ips), veth: hostName }, 'pod already attached');
        return resultOf(ctx, cfg, existing, routes);
      }
      await refuseForeignHostVeth(ipam, ctx.env, seen, hostName);
      return withRollback(log, async (onUndo) => {
        const allocs: Allocation[] = await ipam.allocate(containerId, ifname, requested, { attachmentLocked: true });
        // Undo only what this call made: a lease it merely found stays (an
        // IPv4 pod's lease when the node has just become dual-stack, say).
        const made = allocs.filter((a) => a.created).map((a) => a.address.split('/')[0]!);
        if (made.length > 0) onUndo(() => ipam.release(containerId, ifname, made));
        const ips = allocs.map(({ address, gateway }) => ({ address, gateway }));
        const routes = podRoutes(routeFamilies(subnet, ips), cfg.isDefaultGateway, cfg.routes);
        // One shim call makes the pair and configures the pod; it leaves nothing behind when it fails.
        const veth = attachPod(hostName, netns, ifname, mtu, cfg.bridge, cfg.hairpinMode, { addresses: ips.map((ip) => ip.address), routes, ...(mac ? { mac } : {}) });
        onUndo(() => nl.linkDelete(hostName));
        log.info({ ...loggedIps(ips), veth: hostName }, 'pod attached');
        return resultOf(ctx, cfg, { bridge, host: veth.host, pod: veth.pod, ips }, routes);
      });
    });
  });
}

/**
 * The host veth name keeps 32 bits of a digest of (container ID, ifname),
 * so two attachments on a node can share it (about one ADD in 2^32 / pods
 * per node), and another plugin's random veth name can match it too. A
 * device of that name is this attachment's own leftover, which attachPod
 * replaces, when its peer is CNI_IFNAME in CNI_NETNS (an interrupted ADD:
 * both ends of a pair live and die together), or when IPAM holds a lease
 * for this (container ID, ifname): an ADD leases before it makes the pair
 * and a DEL deletes the pair before it releases, so the link is then this
 * attachment's own, left in an older netns (podman, or a hand-run ADD,
 * reusing the container ID while that netns is still pinned). Anything
 * else belongs to another pod, which replacing it would cut off without a
 * word; this ADD fails instead (kubelet retries with a new sandbox, so a
 * new name). A refused ADD leases nothing, so its retry is refused too.
 */
async function refuseForeignHostVeth(ipam: HostLocalIpam, env: PluginContext['env'], seen: nl.PodInspection, hostName: string): Promise<void> {
  const { containerId, netns, ifname } = env;
  if (!seen.host) return;
  // The inspection looks at the pod only when the host veth is on the bridge.
  const pod = seen.pod ?? nl.linkByName(ifname, { netns });
  if (pod && isPeerOf(pod, seen.host)) return;
  // Read under the attachment's lock (held by add): no call of this attachment can change its leases meanwhile.
  if ((await ipam.find(containerId, ifname, { attachmentLocked: true })).length > 0) return;
  throw new CniError(
    ErrorCode.Internal,
    `host veth name ${hostName}, derived from this container ID and ${ifname}, is taken by a ${seen.host.type} link whose peer is not ${ifname} in ${clip(netns)}`,
    'another attachment holds that name (a digest collision); refusing to replace it; retry with a new container ID',
  );
}

/** Log fields of a pod's addresses: `ip` the first (as before dual-stack), `ips` all of them. */
function loggedIps(ips: Attached['ips']): { ip?: string; ips: string[] } {
  return { ip: ips[0]?.address, ips: ips.map((x) => x.address) };
}

/** The node forwards for its pods: IPv4 always (as before), IPv6 when it has an IPv6 subnet (the reference bridge's EnableIP6Forward). */
function enableForwarding(subnet: NodeSubnet): void {
  for (const key of forwardingKeys(subnet)) nl.sysctlSet(key, '1');
}

function forwardingKeys(subnet: NodeSubnet): string[] {
  const keys = ['net.ipv4.ip_forward'];
  if (subnet.families.some((f) => f.family === 6)) keys.push('net/ipv6/conf/all/forwarding');
  return keys;
}

/**
 * The bridge as `seen` shows it, when the node side needs nothing from
 * this ADD: it is an up bridge of the node MTU carrying every gateway, no
 * old gateway of the cluster network for moveGateway to move, and
 * forwarding on. Otherwise undefined, and the caller runs the steps that
 * make or fix it (each reading the kernel again).
 */
function readyBridge(seen: nl.PodAndNodeInspection, cfg: PluginConfig, mtu: number, subnet: NodeSubnet): Link | undefined {
  const br = seen.bridge;
  if (!br || br.type !== 'bridge' || !br.up || br.mtu !== mtu) return undefined;
  if (!forwardingKeys(subnet).every((k) => seen.hostSysctls[k] === '1')) return undefined;
  const gateways = subnet.families.map((f) => f.gatewayCidr);
  const have = bridgeAddressesIn(seen.bridgeAddrs, gateways.some((g) => g.includes(':')));
  if (!gateways.every((g) => have.includes(g))) return undefined;
  if (!cfg.forceAddress && staleGateways(have, subnet).length > 0) return undefined;
  return br;
}

/** Addresses on the bridge, other than the gateways, inside a cluster network: old gateways moveGateway moves. */
function staleGateways(have: readonly string[], subnet: NodeSubnet): string[] {
  const clusters = subnet.families.map((f) => parseCidr(f.clusterNetwork)).filter((c) => c !== undefined);
  const gateways = subnet.families.map((f) => f.gatewayCidr);
  return have.filter((c) => {
    if (gateways.includes(c)) return false;
    const ip = parseCidr(c)?.ip;
    return ip !== undefined && clusters.some((n) => cidrContainsIp(n, ip));
  });
}

/**
 * The node's subnet changed (a new lease, a reassigned podCIDR) and the
 * bridge still carries the old gateway. With no pod left on the old subnet
 * the address is moved; pods still holding old addresses are named, since
 * moving the gateway away from them would cut them off. Only old gateways
 * inside the cluster network move by themselves: any other address on the
 * bridge was put there by someone else, and ensureBridge refuses it (code 7,
 * naming forceAddress).
 */
async function moveGateway(bridge: string, subnet: NodeSubnet, ipam: HostLocalIpam, log: PluginLogger): Promise<void> {
  const gateways = subnet.families.map((f) => f.gatewayCidr);
  const stale = staleGateways(staleBridgeAddresses(bridge, gateways), subnet);
  if (stale.length === 0) return;
  const oldNets = stale.map((c) => parseCidr(c)).filter((c) => c !== undefined);
  const holders = (await ipam.list()).filter((l) => {
    const ip = parseIp(l.ip);
    return ip !== undefined && oldNets.some((n) => cidrContainsIp(n, ip));
  });
  const wanted = gateways.join(', ');
  if (holders.length > 0) {
    const pods = holders.map((h) => `${h.ip} (container ${h.containerId}${h.ifname ? ` ${h.ifname}` : ''})`);
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      `the node's subnet changed to ${wanted}, but "${bridge}" still serves the old subnet ${stale.join(', ')} ` +
        `for ${holders.length} pod(s): ${pods.join(', ')}`,
      `delete those pods (their addresses belong to the old subnet and cannot move); the next ADD then moves ${bridge} to ${wanted}`,
    );
  }
  for (const old of stale) nl.addrDelete(bridge, old);
  log.warn({ bridge, removed: stale, gateways }, 'node subnet changed and no pod holds an old address: moved the bridge to the new gateway');
}

/** A host route to one pod address: /32 or /128. */
function hostRoute(ip: string): string {
  return `${ip}/${ip.includes(':') ? 128 : 32}`;
}

/**
 * The bridge MTU was raised under running pods, which keep their smaller
 * MTU. A packet routed to one of them that fits the bridge but not the pod
 * would be dropped by the bridge without a word; a host route carrying the
 * pod's MTU makes the node send "fragmentation needed" / "packet too big"
 * (or fragment) instead, so path MTU discovery keeps working for traffic
 * from other nodes.
 */
async function capOlderPods(bridge: string, mtu: number, subnet: NodeSubnet, ipam: HostLocalIpam, log: PluginLogger): Promise<void> {
  const capped: string[] = [];
  for (const lease of await ipam.list()) {
    if (!lease.ifname) continue;
    const veth = nl.linkByName(hostVethName(lease.containerId, lease.ifname));
    if (!veth || veth.mtu >= mtu) continue;
    const family = lease.ip.includes(':') ? 6 : 4;
    const src = subnet.families.find((f) => f.family === family)?.gateway;
    const spec: nl.RouteSpec = { dst: hostRoute(lease.ip), dev: bridge, mtu: veth.mtu };
    if (src) spec.src = src;
    nl.routeReplace(spec);
    capped.push(`${lease.ip} mtu ${veth.mtu}`);
  }
  if (capped.length > 0) log.warn({ bridge, mtu, pods: capped }, 'pods made before the MTU raise keep their MTU; routes to them carry it');
}

/** The host route capOlderPods gave a pod, gone with the pod (absent mostly; never fails a DEL). */
function dropPodRoute(bridge: string, ip: string): void {
  try {
    nl.routeDelete({ dst: hostRoute(ip), dev: bridge });
  } catch {
    // no bridge, or no such route: nothing to remove
  }
}

/**
 * DEL must succeed when anything is already gone: the netns (containerd's
 * second DEL has none), the veth, the lease, even the subnet file.
 */
export async function del(ctx: PluginContext): Promise<void> {
  const { cfg, log } = prepare(ctx);
  return reported(log, async () => {
    const { containerId, netns, ifname } = ctx.env;
    const ipam = ipamFor(cfg, undefined);
    await ipam.withAttachment(
      containerId,
      ifname,
      async () => {
        // The attachment's leases, from its record (the whole store is read
        // only when it has none), outside the store lock (this attachment's
        // leases change only under its lock, held here): the leases found
        // are released after the veth is gone, each read again.
        const leased = (await ipam.find(containerId, ifname, { attachmentLocked: true })).map((l) => l.ip);
        // The teardown also drops the pod's MTU route (capOlderPods), if it has one.
        deletePodVeth(hostVethName(containerId, ifname), netns, ifname, leased, log, { dev: cfg.bridge, dsts: leased.map(hostRoute) });
        const released = await ipam.releaseFound(containerId, ifname, leased);
        if (released.length > 0) log.info({ ips: released }, 'released');
      },
      true,
    );
  });
}

export async function check(ctx: PluginContext): Promise<void> {
  const { cfg, log } = prepare(ctx);
  return reported(log, async () => {
    const prev = ctx.conf.prevResult;
    if (!prev) throw new CniError(ErrorCode.InvalidNetworkConfig, 'CHECK needs prevResult in the network config');
    const mac = requestedMac({ cniArgs: ctx.env.args, conf: ctx.conf.raw, runtimeConfig: ctx.conf.runtimeConfig });
    requireNetns(ctx.env.netns);
    const subnet = nodeSubnet(loadSubnetEnv(cfg.subnetFile), cfg.subnetFile);
    await checkAttachment({
      env: ctx.env,
      prev,
      ...(mac ? { mac } : {}),
      bridge: cfg.bridge,
      gatewayCidrs: subnet.families.map((f) => f.gatewayCidr),
      hostVeth: hostVethName(ctx.env.containerId, ctx.env.ifname),
      ipam: ipamFor(cfg, subnet),
    });
  });
}

/** Releases leases, and their host veths, of attachments the runtime no longer knows. */
export async function gc(ctx: PluginContext): Promise<void> {
  const { cfg, log } = prepare(ctx);
  const valid = ctx.conf.validAttachments;
  // (GC's failures keep their own codes; it runs no pod-facing kernel step first.)
  if (!valid) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, 'GC needs "cni.dev/valid-attachments" in the network config');
  }
  const removed = await ipamFor(cfg, undefined).gc(valid.map((a) => ({ containerId: a.containerID, ifname: a.ifname })));
  // A live attachment may share the derived name (a digest collision, with
  // the stale one's veth long gone with its netns): its link stays.
  const live = new Set(valid.map((a) => hostVethName(a.containerID, a.ifname)));
  for (const lease of removed) {
    const name = lease.ifname ? hostVethName(lease.containerId, lease.ifname) : undefined;
    if (name && !live.has(name)) nl.linkDelete(name);
    dropPodRoute(cfg.bridge, lease.ip);
  }
  if (removed.length > 0) log.info({ removed: removed.map((l) => `${l.ip} ${l.containerId}`) }, 'garbage collected');
}

/**
 * Ready means: ADD could serve a pod now. The agent wrote a valid subnet
 * file, the config fits it (ranges inside the node subnet, routes of the
 * node's families, a "bridge" name no other kind of link holds) and the
 * pool has room. No bridge needed: ADD makes it. A node on which every
 * ADD would fail must not report ready (kubelet would keep scheduling pods
 * onto it).
 */
export async function status(ctx: PluginContext): Promise<void> {
  const { cfg } = prepare(ctx);
  let subnet: NodeSubnet;
  try {
    subnet = nodeSubnet(loadSubnetEnv(cfg.subnetFile), cfg.subnetFile);
  } catch (err) {
    // The file's own hint when it has one: an invalid file was written, just not right.
    const cni = err instanceof CniError ? err : undefined;
    const hint = cni?.code === ErrorCode.IOFailure ? 'tsflanneld has not written the subnet file yet' : cni?.details;
    throw new CniError(ErrorCode.PluginNotAvailable, (err as Error).message, hint);
  }
  // ADD's checks before it touches anything, with its codes and words: a
  // config that does not fit this node's subnet is 7 here as there.
  if (cfg.ranges) checkRangesInSubnet(cfg.ranges, subnet);
  podRoutes(routeFamilies(subnet, []), cfg.isDefaultGateway, cfg.routes);
  const ipam = ipamFor(cfg, subnet);
  const link = nl.linkByName(cfg.bridge);
  if (link && link.type !== 'bridge') {
    throw new CniError(
      ErrorCode.PluginNotAvailable,
      `"bridge" names ${cfg.bridge}, which is a ${link.type} link, not a bridge: ADD cannot attach pods to it`,
      `set "bridge" to another name, or remove the link ("ip link delete ${cfg.bridge}") if nothing uses it`,
    );
  }
  const stats = await ipam.stats();
  const full = stats.find((s) => s.free === 0);
  if (full) {
    const set = ipam.rangeSets[full.rangeSet]!;
    const where = set.map((r) => `${formatIp({ family: r.family, value: r.network })}/${r.prefix}`).join(', ');
    throw new CniError(ErrorCode.PluginNotAvailable, `no free pod addresses: all ${full.total} addresses of ${where} are leased`);
  }
}
