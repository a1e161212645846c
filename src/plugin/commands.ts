// The CNI verbs of tsflannel. Each parses its config, then changes (or
// inspects) the node; ADD undoes what it did when a later step fails.
import { statSync } from 'node:fs';
import type { PluginContext } from '../cni/skel.js';
import type { Result } from '../cni/result.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import * as nl from '../netlink/index.js';
import { readSubnetEnv, SubnetEnvError, type SubnetEnv } from '../flannel/subnet-env.js';
import { HostLocalIpam, type IpamRange } from '../ipam/index.js';
import { parsePluginConfig, type PluginConfig } from './config.js';
import { createLogger, type PluginLogger } from './log.js';
import { hostVethName } from './names.js';
import { splitCidr } from './cidr.js';
import { configurePod, createPodVeth, deletePodVeth, ensureBridge, podRoutes, safeIsNetns, staleBridgeAddresses } from './network.js';
import { cidrContainsIp, parseIpv4, parseIpv4Cidr } from '../net/ipv4.js';
import { checkAttachment } from './check.js';

interface Prepared {
  cfg: PluginConfig;
  log: PluginLogger;
}

function prepare(ctx: PluginContext): Prepared {
  const cfg = parsePluginConfig(ctx.conf);
  const bindings: Record<string, string> = { cmd: ctx.env.command, network: cfg.network };
  if (ctx.env.containerId) bindings.containerId = ctx.env.containerId;
  const pod = ctx.env.args.K8S_POD_NAME;
  if (pod) bindings.pod = `${ctx.env.args.K8S_POD_NAMESPACE ?? ''}/${pod}`;
  return { cfg, log: createLogger(cfg.logLevel, cfg.logFile, bindings) };
}

/** The node's subnet file; the agent writes it once it holds a lease. */
export function loadSubnetEnv(path: string): SubnetEnv {
  try {
    // Reading a FIFO (or a device) would block or never end; the agent writes a plain file.
    const st = statSync(path);
    if (!st.isFile()) throw new SubnetEnvError('not a regular file');
    return readSubnetEnv(path);
  } catch (err) {
    if (err instanceof SubnetEnvError) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid subnet file ${path}: ${err.message}`);
    }
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : String((err as Error).message);
    throw new CniError(
      ErrorCode.IOFailure,
      `failed to load subnet file ${path}: ${reason}`,
      'tsflanneld writes it once the node has a subnet lease; check that tsflanneld runs on this node and its log',
    );
  }
}

/** The IPAM store; without a subnet (DEL, GC) it can release but not allocate. */
function ipamFor(cfg: PluginConfig, subnet: SubnetEnv | undefined): HostLocalIpam {
  let rangeSets: IpamRange[][] | undefined = cfg.ranges;
  if (!rangeSets && subnet) {
    const { network, ip } = splitCidr(subnet.subnet);
    rangeSets = [[{ subnet: network, gateway: ip }]];
  }
  return new HostLocalIpam({ dataDir: cfg.dataDir, network: cfg.network, rangeSets, lockTimeoutMs: cfg.lockTimeoutMs });
}

function requireNetns(netns: string): void {
  if (!safeIsNetns(netns)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `CNI_NETNS ${netns} is not a network namespace`);
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

export async function add(ctx: PluginContext): Promise<Result> {
  const { cfg, log } = prepare(ctx);
  const { containerId, netns, ifname } = ctx.env;
  const subnet = loadSubnetEnv(cfg.subnetFile);
  requireNetns(netns);
  const mtu = cfg.mtu ?? subnet.mtu;
  const gateway = splitCidr(subnet.subnet);
  const ipam = ipamFor(cfg, subnet);

  const before = nl.linkByName(cfg.bridge);
  if (before && !cfg.forceAddress) await moveGateway(cfg.bridge, subnet.subnet, ipam, log);
  const bridge = ensureBridge(cfg.bridge, mtu, subnet.subnet, cfg.forceAddress, log);
  if (before && bridge.mtu > before.mtu) await capOlderPods(cfg.bridge, bridge.mtu, gateway.ip, ipam, log);
  nl.sysctlSet('net.ipv4.ip_forward', '1');

  return withRollback(log, async (onUndo) => {
    const [alloc] = await ipam.allocate(containerId, ifname);
    onUndo(() => ipam.release(containerId, ifname));
    const hostName = hostVethName(containerId, ifname);
    const veth = createPodVeth(hostName, netns, ifname, mtu, cfg.bridge, cfg.hairpinMode);
    onUndo(() => nl.linkDelete(hostName));
    const gw = alloc.gateway || gateway.ip;
    const routes = podRoutes(subnet.network, gw, cfg.isDefaultGateway, cfg.routes);
    const pod = configurePod(netns, ifname, { address: alloc.address, gateway: gw, routes });
    log.info({ ip: alloc.address, veth: hostName }, 'pod attached');
    const result: Result = {
      cniVersion: ctx.conf.cniVersion,
      interfaces: [
        { name: bridge.name, mac: bridge.mac },
        { name: veth.host.name, mac: veth.host.mac },
        { name: ifname, mac: pod.mac, sandbox: netns },
      ],
      ips: [{ address: alloc.address, gateway: gw, interface: 2 }],
      routes,
    };
    if (cfg.dns) result.dns = cfg.dns;
    return result;
  });
}

/**
 * The node's subnet changed (a new lease, a reassigned podCIDR) and the
 * bridge still carries the old gateway. With no pod left on the old subnet
 * the address is moved; pods still holding old addresses are named, since
 * moving the gateway away from them would cut them off.
 */
async function moveGateway(bridge: string, gatewayCidr: string, ipam: HostLocalIpam, log: PluginLogger): Promise<void> {
  const stale = staleBridgeAddresses(bridge, gatewayCidr);
  if (stale.length === 0) return;
  const oldNets = stale.map((c) => parseIpv4Cidr(c)).filter((c) => c !== undefined);
  const holders = (await ipam.list()).filter((l) => {
    const ip = parseIpv4(l.ip);
    return ip !== undefined && oldNets.some((n) => cidrContainsIp(n, ip));
  });
  if (holders.length > 0) {
    const pods = holders.map((h) => `${h.ip} (container ${h.containerId}${h.ifname ? ` ${h.ifname}` : ''})`);
    throw new CniError(
      ErrorCode.Internal,
      `the node's subnet changed to ${gatewayCidr}, but "${bridge}" still serves the old subnet ${stale.join(', ')} ` +
        `for ${holders.length} pod(s): ${pods.join(', ')}`,
      `delete those pods (their addresses belong to the old subnet and cannot move); the next ADD then moves ${bridge} to ${gatewayCidr}`,
    );
  }
  for (const old of stale) nl.addrDelete(bridge, old);
  log.warn({ bridge, removed: stale, gateway: gatewayCidr }, 'node subnet changed and no pod holds an old address: moved the bridge to the new gateway');
}

/**
 * The bridge MTU was raised under running pods, which keep their smaller
 * MTU. A packet routed to one of them that fits the bridge but not the pod
 * would be dropped by the bridge without a word; a /32 route carrying the
 * pod's MTU makes the node send "fragmentation needed" (or fragment)
 * instead, so path MTU discovery keeps working for traffic from other nodes.
 */
async function capOlderPods(bridge: string, mtu: number, gatewayIp: string, ipam: HostLocalIpam, log: PluginLogger): Promise<void> {
  const capped: string[] = [];
  for (const lease of await ipam.list()) {
    if (!lease.ifname) continue;
    const veth = nl.linkByName(hostVethName(lease.containerId, lease.ifname));
    if (!veth || veth.mtu >= mtu) continue;
    nl.routeReplace({ dst: `${lease.ip}/32`, dev: bridge, src: gatewayIp, mtu: veth.mtu });
    capped.push(`${lease.ip} mtu ${veth.mtu}`);
  }
  if (capped.length > 0) log.warn({ bridge, mtu, pods: capped }, 'pods made before the MTU raise keep their MTU; routes to them carry it');
}

/** The /32 route capOlderPods gave a pod, gone with the pod (absent mostly; never fails a DEL). */
function dropPodRoute(bridge: string, ip: string): void {
  try {
    nl.routeDelete({ dst: `${ip}/32`, dev: bridge });
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
  const { containerId, netns, ifname } = ctx.env;
  deletePodVeth(hostVethName(containerId, ifname), netns, ifname, log);
  const released = await ipamFor(cfg, undefined).release(containerId, ifname);
  for (const ip of released) dropPodRoute(cfg.bridge, ip);
  if (released.length > 0) log.info({ ips: released }, 'released');
}

export async function check(ctx: PluginContext): Promise<void> {
  const { cfg } = prepare(ctx);
  const prev = ctx.conf.prevResult;
  if (!prev) throw new CniError(ErrorCode.InvalidNetworkConfig, 'CHECK needs prevResult in the network config');
  requireNetns(ctx.env.netns);
  const subnet = loadSubnetEnv(cfg.subnetFile);
  await checkAttachment({
    env: ctx.env,
    prev,
    bridge: cfg.bridge,
    gatewayCidr: subnet.subnet,
    hostVeth: hostVethName(ctx.env.containerId, ctx.env.ifname),
    ipam: ipamFor(cfg, subnet),
  });
}

/** Releases leases, and their host veths, of attachments the runtime no longer knows. */
export async function gc(ctx: PluginContext): Promise<void> {
  const { cfg, log } = prepare(ctx);
  const valid = ctx.conf.validAttachments;
  if (!valid) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, 'GC needs "cni.dev/valid-attachments" in the network config');
  }
  const removed = await ipamFor(cfg, undefined).gc(valid.map((a) => ({ containerId: a.containerID, ifname: a.ifname })));
  for (const lease of removed) {
    if (lease.ifname) nl.linkDelete(hostVethName(lease.containerId, lease.ifname));
    dropPodRoute(cfg.bridge, lease.ip);
  }
  if (removed.length > 0) log.info({ removed: removed.map((l) => `${l.ip} ${l.containerId}`) }, 'garbage collected');
}

/** Ready means: the agent wrote the subnet file and the pool has room. No bridge needed. */
export async function status(ctx: PluginContext): Promise<void> {
  const { cfg } = prepare(ctx);
  let subnet: SubnetEnv;
  try {
    subnet = loadSubnetEnv(cfg.subnetFile);
  } catch (err) {
    throw new CniError(ErrorCode.PluginNotAvailable, (err as Error).message, 'tsflanneld has not written the subnet file yet');
  }
  const stats = await ipamFor(cfg, subnet).stats();
  const full = stats.find((s) => s.free === 0);
  if (full) {
    throw new CniError(ErrorCode.PluginNotAvailable, `no free pod addresses: all ${full.total} addresses of ${subnet.subnet} are leased`);
  }
}
