// tsflannel's own configuration keys, read from the network config the
// runtime passes on stdin. flannel's `delegate` map is honoured so an
// existing kube-flannel cni-conf.json keeps working; top-level keys win.
import { CniError, ErrorCode } from '../cni/errors.js';
import type { NetConf } from '../cni/config.js';
import { clip, describeValue, optArray, optBool, optInt, optObject, optString, isIP, isIPCidr, isIPv4, isIPv6, isIPv6Cidr } from '../cni/validate.js';
import { lexicallyInKernelFs } from '../fs/guard.js';
import { DEFAULT_SUBNET_FILE } from '../flannel/subnet-env.js';
import { DEFAULT_DATA_DIR, type IpamRange } from '../ipam/index.js';

export interface PluginConfig {
  network: string;
  subnetFile: string;
  bridge: string;
  hairpinMode: boolean;
  isDefaultGateway: boolean;
  /** pod MTU override; absent = FLANNEL_MTU */
  mtu?: number;
  /** replace a stale bridge address instead of failing (a node re-joined with a new podCIDR) */
  forceAddress: boolean;
  dataDir: string;
  /** explicit IPAM ranges instead of FLANNEL_SUBNET */
  ranges?: IpamRange[][];
  /** extra routes for the pod, besides the cluster network or default route */
  routes: { dst: string; gw?: string }[];
  dns?: { nameservers?: string[]; domain?: string; search?: string[]; options?: string[] };
  lockTimeoutMs: number;
  logLevel: string;
  logFile?: string;
  /**
   * The agent's CNI socket, which the forwarder (/opt/cni/bin/tsflannel)
   * reads from the same config; '' = never forward. Absent = the default.
   */
  agentSocket?: string;
}

// \u0085 (NEL) is whitespace to Go's unicode.IsSpace but not to \s. '%'
// is refused as the kernel refuses it in a new name it is asked to keep:
// given "br%d" it picks the first free "brN" and creates that instead.
const IFNAME = /^[^\s\u0085/:%]{1,15}$/u;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function parsePluginConfig(conf: NetConf): PluginConfig {
  const delegate = optObject(conf.raw, 'delegate') ?? {};
  const merged: Record<string, unknown> = { ...delegate, ...conf.raw };
  const ipam = optObject(conf.raw, 'ipam') ?? {};

  const bridge = optString(merged, 'bridge') ?? 'cni0';
  // IFNAMSIZ counts bytes: a name of 15 non-ASCII characters is too long for the kernel.
  if (!IFNAME.test(bridge) || Buffer.byteLength(bridge, 'utf8') > 15 || bridge === '.' || bridge === '..') {
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      `invalid "bridge" name ${JSON.stringify(clip(bridge))}: 1 to 15 bytes, no whitespace, "/", ":" or "%"`,
    );
  }
  const logLevel = optString(merged, 'logLevel') ?? 'warn';
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid logLevel ${JSON.stringify(clip(logLevel))}: one of ${LOG_LEVELS.join(', ')}`);
  }
  const cfg: PluginConfig = {
    network: conf.name,
    subnetFile: absolutePath(merged, 'subnetFile') ?? DEFAULT_SUBNET_FILE,
    bridge,
    hairpinMode: optBool(merged, 'hairpinMode') ?? true,
    isDefaultGateway: optBool(merged, 'isDefaultGateway') ?? true,
    forceAddress: optBool(merged, 'forceAddress') ?? false,
    dataDir: absolutePath(ipam, 'dataDir') ?? absolutePath(merged, 'dataDir') ?? DEFAULT_DATA_DIR,
    routes: parseRoutes(ipam),
    lockTimeoutMs: optInt(merged, 'lockTimeoutMs', 100, 600_000) ?? 30_000,
    logLevel,
  };
  const mtu = optInt(merged, 'mtu', 68, 65535);
  if (mtu !== undefined) cfg.mtu = mtu;
  const logFile = absolutePath(merged, 'logFile');
  if (logFile) cfg.logFile = logFile;
  const ranges = parseRanges(ipam);
  if (ranges) cfg.ranges = ranges;
  const agentSocket = parseAgentSocket(merged);
  if (agentSocket !== undefined) cfg.agentSocket = agentSocket;
  const dns = optObject(conf.raw, 'dns');
  if (dns) cfg.dns = parseDns(dns);
  return cfg;
}

/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH = 107;

function parseAgentSocket(obj: Record<string, unknown>): string | undefined {
  const value = optString(obj, 'agentSocket');
  if (value === undefined || value === '') return value;
  if (!value.startsWith('/') || value.includes('\0') || Buffer.byteLength(value, 'utf8') > MAX_SOCKET_PATH) {
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      `"agentSocket" must be "" or an absolute path of at most ${MAX_SOCKET_PATH} bytes, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function absolutePath(obj: Record<string, unknown>, key: string): string | undefined {
  const value = optString(obj, key);
  if (value === undefined) return undefined;
  if (!value.startsWith('/') || value.includes('\0')) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `"${key}" must be an absolute path, got ${JSON.stringify(clip(value))}`);
  }
  // /proc and /sys are the kernel's views, not storage: Node's recursive
  // mkdir spins forever there, and a "file" may be a control knob.
  if (lexicallyInKernelFs(value)) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `"${key}" must not be under /proc or /sys, got ${JSON.stringify(clip(value))}`);
  }
  return value;
}

function parseRoutes(ipam: Record<string, unknown>): { dst: string; gw?: string }[] {
  const list = optArray(ipam, 'routes') ?? [];
  return list.map((item, i) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `ipam.routes[${i}] must be an object`);
    }
    const entry = item as Record<string, unknown>;
    const dst = optString(entry, 'dst');
    if (!dst || !isIPCidr(dst)) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `ipam.routes[${i}].dst must be an IPv4 or IPv6 CIDR, got ${describeValue(entry.dst)}`);
    }
    const v6 = isIPv6Cidr(dst);
    const gw = optString(entry, 'gw');
    if (gw !== undefined && gw !== '' && !(v6 ? isIPv6(gw) : isIPv4(gw))) {
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        `ipam.routes[${i}].gw must be an ${v6 ? 'IPv6' : 'IPv4'} address like its dst ${dst}, got ${describeValue(gw)}`,
      );
    }
    return gw ? { dst, gw } : { dst };
  });
}

function parseRanges(ipam: Record<string, unknown>): IpamRange[][] | undefined {
  const sets = optArray(ipam, 'ranges');
  if (!sets) return undefined;
  return sets.map((set, i) => {
    if (!Array.isArray(set) || set.length === 0) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `ipam.ranges[${i}] must be a non-empty array of ranges`);
    }
    return set.map((r, j) => {
      if (typeof r !== 'object' || r === null || Array.isArray(r)) {
        throw new CniError(ErrorCode.InvalidNetworkConfig, `ipam.ranges[${i}][${j}] must be an object`);
      }
      const obj = r as Record<string, unknown>;
      const subnet = optString(obj, 'subnet');
      if (!subnet) throw new CniError(ErrorCode.InvalidNetworkConfig, `ipam.ranges[${i}][${j}].subnet is required`);
      const range: IpamRange = { subnet };
      for (const key of ['rangeStart', 'rangeEnd', 'gateway'] as const) {
        const v = optString(obj, key);
        if (v !== undefined) range[key] = v;
      }
      return range;
    });
  });
}

function parseDns(dns: Record<string, unknown>): NonNullable<PluginConfig['dns']> {
  const out: NonNullable<PluginConfig['dns']> = {};
  const strings = (key: string): string[] | undefined => {
    const list = optArray(dns, key);
    if (list === undefined) return undefined;
    if (!list.every((s) => typeof s === 'string')) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `dns.${key} must be an array of strings`);
    }
    return list as string[];
  };
  const nameservers = strings('nameservers');
  const search = strings('search');
  const options = strings('options');
  const domain = optString(dns, 'domain');
  nameservers?.forEach((ns, i) => {
    if (!isIP(ns)) throw new CniError(ErrorCode.InvalidNetworkConfig, `dns.nameservers[${i}] must be an IP address, got ${describeValue(ns)}`);
  });
  if (nameservers) out.nameservers = nameservers;
  if (search) out.search = search;
  if (options) out.options = options;
  if (domain) out.domain = domain;
  return out;
}
