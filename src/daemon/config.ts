// flannel's net-conf.json: parsed, checked and completed with flannel's
// defaults (pkg/subnet/config.go: ParseConfig + CheckNetworkConfig), so the
// same file means the same thing to flanneld and to tsflanneld.
import type { BackendConfig, NetworkConfig, WireguardBackendConfig, WireguardMode } from './types.js';
import { blockSize, cidrContainsIp, formatCidr, formatIp, isAligned, networkOf, parseCidr, parseIp, type Cidr, type Family } from '../net/ip.js';
import { maskNet } from './subnet/allocate.js';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export const DEFAULT_VNI = 1;
/** Linux's VXLAN port, what flannel gets by leaving Port at 0. */
export const DEFAULT_VXLAN_PORT = 8472;
/** flannel's wireguard ports: flannel-wg and flannel-wg-v6 */
export const DEFAULT_WIREGUARD_PORT = 51820;
export const DEFAULT_WIREGUARD_PORT_V6 = 51821;
const WIREGUARD_MODES: readonly WireguardMode[] = ['separate', 'auto', 'ipv4', 'ipv6'];
const MAX_VNI = 2 ** 24 - 1;
const MIN_MTU = 68;
const MAX_SUBNET_LEN = 30;
const MAX_IPV6_SUBNET_LEN = 126;

type JsonObject = Record<string, unknown>;

function fail(field: string, problem: string): never {
  throw new ConfigError(`net-conf.json: "${field}" ${problem}`);
}

function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Go's encoding/json matches keys case-insensitively (exact match first),
 * and flannel's docs spell keys both ways ("VNI" / "vni"), so we do too.
 * null counts as absent, as it does for Go's non-pointer fields.
 */
function field(obj: JsonObject, name: string): unknown {
  if (Object.hasOwn(obj, name)) return obj[name] ?? undefined;
  const lower = name.toLowerCase();
  const key = Object.keys(obj).find((k) => k.toLowerCase() === lower);
  return key === undefined ? undefined : (obj[key] ?? undefined);
}

function boolField(obj: JsonObject, name: string, label: string, fallback: boolean): boolean {
  const v = field(obj, name);
  if (v === undefined) return fallback;
  if (typeof v !== 'boolean') fail(label, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function intField(obj: JsonObject, name: string, label: string, min: number, max: number): number | undefined {
  const v = field(obj, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(label, `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function stringField(obj: JsonObject, name: string, label: string): string | undefined {
  const v = field(obj, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') fail(label, `must be a string, got ${JSON.stringify(v)}`);
  return v;
}

/** The net-conf.json keys and flannel's limits for one address family. */
interface FamilyKeys {
  family: Family;
  name: 'IPv4' | 'IPv6';
  network: 'Network' | 'IPv6Network';
  subnetLen: 'SubnetLen' | 'IPv6SubnetLen';
  subnetMin: 'SubnetMin' | 'IPv6SubnetMin';
  subnetMax: 'SubnetMax' | 'IPv6SubnetMax';
  /** the longest node subnet: room for a gateway and pods (/30, /126) */
  maxSubnetLen: number;
  /** the node subnet a big enough network gets (/24, /64) */
  defaultSubnetLen: number;
  example: string;
  enable: 'EnableIPv4' | 'EnableIPv6';
}

const V4_KEYS: FamilyKeys = {
  family: 4,
  name: 'IPv4',
  network: 'Network',
  subnetLen: 'SubnetLen',
  subnetMin: 'SubnetMin',
  subnetMax: 'SubnetMax',
  maxSubnetLen: MAX_SUBNET_LEN,
  defaultSubnetLen: 24,
  example: '10.244.0.0/16',
  enable: 'EnableIPv4',
};

const V6_KEYS: FamilyKeys = {
  family: 6,
  name: 'IPv6',
  network: 'IPv6Network',
  subnetLen: 'IPv6SubnetLen',
  subnetMin: 'IPv6SubnetMin',
  subnetMax: 'IPv6SubnetMax',
  maxSubnetLen: MAX_IPV6_SUBNET_LEN,
  defaultSubnetLen: 64,
  example: 'fd00:10:244::/56',
  enable: 'EnableIPv6',
};

function parseFamilyNetwork(obj: JsonObject, keys: FamilyKeys): Cidr | undefined {
  const text = stringField(obj, keys.network, keys.network);
  if (text === undefined) return undefined;
  const net = parseCidr(text, keys.family);
  if (!net) fail(keys.network, `must be an ${keys.name} CIDR such as ${keys.example}, got ${JSON.stringify(text)}`);
  // flannel keeps only the network part of what was written (Go's ParseCIDR).
  return maskNet(net);
}

/**
 * flannel's defaulting: /24 (IPv6: /64) nodes in networks of /22 (/62) or
 * larger, else four subnets; the smallest useful network is a /28 (/124).
 */
function subnetLenFor(obj: JsonObject, network: Cidr, keys: FamilyKeys): number {
  const bits = network.ip.family === 4 ? 32 : 128;
  const given = intField(obj, keys.subnetLen, keys.subnetLen, 0, bits) ?? 0;
  if (given === 0) {
    if (network.prefix > keys.maxSubnetLen - 2) {
      fail(keys.network, `is too small (/${network.prefix}): the smallest useful network is a /${keys.maxSubnetLen - 2}`);
    }
    return network.prefix <= keys.defaultSubnetLen - 2 ? keys.defaultSubnetLen : network.prefix + 2;
  }
  if (given > keys.maxSubnetLen) fail(keys.subnetLen, `must be at most ${keys.maxSubnetLen}, got ${given}`);
  if (given < network.prefix + 2) {
    fail(keys.subnetLen, `must be at least ${network.prefix + 2} so that ${keys.network} ${formatCidr(network)} holds four or more subnets, got ${given}`);
  }
  return given;
}

function boundField(obj: JsonObject, name: string, network: Cidr, subnetLen: number, keys: FamilyKeys, fallback: bigint): bigint {
  const text = stringField(obj, name, name);
  if (text === undefined) return fallback;
  const ip = parseIp(text, keys.family);
  if (ip === undefined) fail(name, `must be an ${keys.name} address, got ${JSON.stringify(text)}`);
  if (!cidrContainsIp(network, ip)) fail(name, `${text} is outside ${keys.network} ${formatCidr(network)}`);
  if (!isAligned(keys.family, ip.value, subnetLen)) fail(name, `${text} is not the start of a /${subnetLen} subnet (${keys.subnetLen})`);
  return ip.value;
}

/** One family's network and node-subnet range, as allocation needs it. */
interface FamilyPart {
  network: string;
  subnetLen: number;
  subnetMin: string;
  subnetMax: string;
}

/**
 * Network, SubnetLen, SubnetMin and SubnetMax of one family (or their IPv6
 * names). A disabled family's network is only checked for syntax, as Go's
 * decoder does, and then ignored, as flannel's CheckNetworkConfig does.
 */
function parseFamilyPart(obj: JsonObject, keys: FamilyKeys, enabled: boolean): FamilyPart | undefined {
  const network = parseFamilyNetwork(obj, keys);
  if (!enabled) return undefined;
  if (!network) {
    fail(keys.network, `is required when ${keys.enable} is true (an ${keys.name} CIDR such as ${keys.example})`);
  }
  const subnetLen = subnetLenFor(obj, network, keys);
  const size = blockSize(keys.family, subnetLen);
  const start = networkOf(network);
  // The first subnet is skipped by default: an interface holding the
  // network's own address (10.244.0.0, fd00::) confuses tools.
  const min = boundField(obj, keys.subnetMin, network, subnetLen, keys, start + size);
  const max = boundField(obj, keys.subnetMax, network, subnetLen, keys, start + blockSize(keys.family, network.prefix) - size);
  const text = (value: bigint): string => formatIp({ family: keys.family, value });
  if (min > max) fail(keys.subnetMin, `${text(min)} is above ${keys.subnetMax} ${text(max)}`);
  return { network: formatCidr(network), subnetLen, subnetMin: text(min), subnetMax: text(max) };
}

function rejectEnabled(obj: JsonObject, name: string, type: string): void {
  if (boolField(obj, name, `Backend.${name}`, false)) {
    fail(`Backend.${name}`, `is not supported by the ${type} backend of tsflannel (leave it false)`);
  }
}

const SUPPORTED_BACKENDS = ['vxlan', 'host-gw', 'wireguard'] as const;

/** A WireGuard key as wg prints it: base64 of exactly 32 bytes. */
export function isWireguardKey(text: string): boolean {
  return /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(text) && Buffer.from(text, 'base64').length === 32;
}

/**
 * flannel's wireguard keys (pkg/backend/wireguard/wireguard.go). Its
 * PersistentKeepaliveInterval is a Go Duration multiplied by a second, so
 * the JSON number means seconds.
 */
function parseWireguard(backend: JsonObject): WireguardBackendConfig {
  const listenPort = intField(backend, 'ListenPort', 'Backend.ListenPort', 0, 65535) || DEFAULT_WIREGUARD_PORT;
  const listenPortV6 = intField(backend, 'ListenPortV6', 'Backend.ListenPortV6', 0, 65535) || DEFAULT_WIREGUARD_PORT_V6;
  const keepalive = intField(backend, 'PersistentKeepaliveInterval', 'Backend.PersistentKeepaliveInterval', 0, 65535) ?? 0;
  const modeText = stringField(backend, 'Mode', 'Backend.Mode') ?? 'separate';
  const mode = WIREGUARD_MODES.find((m) => m === modeText);
  if (!mode) fail('Backend.Mode', `must be one of ${WIREGUARD_MODES.join(', ')}, got ${JSON.stringify(modeText)}`);
  const psk = stringField(backend, 'PSK', 'Backend.PSK');
  if (psk !== undefined && psk !== '' && !isWireguardKey(psk)) {
    fail('Backend.PSK', 'must be a WireGuard key: 32 bytes in base64, as `wg genpsk` prints');
  }
  const mtu = intField(backend, 'MTU', 'Backend.MTU', 0, 65535);
  if (mtu !== undefined && mtu !== 0 && mtu < MIN_MTU) fail('Backend.MTU', `must be at least ${MIN_MTU} (or 0 for automatic), got ${mtu}`);
  return {
    type: 'wireguard',
    listenPort,
    listenPortV6,
    persistentKeepaliveInterval: keepalive,
    mode,
    ...(psk ? { psk } : {}),
    ...(mtu ? { mtu } : {}),
  };
}

/** tsflannel's wireguard backend carries IPv4 only: IPv4 endpoints and the IPv4 pod network. */
function checkWireguardFamilies(backend: WireguardBackendConfig, enableIPv4: boolean): void {
  if (backend.mode === 'ipv6') {
    fail('Backend.Mode', '"ipv6" (peers reached over IPv6): the wireguard backend of tsflannel carries IPv4 only; use "separate", "auto" or "ipv4", or the vxlan or host-gw backend for IPv6');
  }
  if (!enableIPv4) fail('EnableIPv4', 'must be true for the wireguard backend: it carries IPv4 only (use vxlan or host-gw for an IPv6-only cluster)');
}

function parseBackend(obj: JsonObject): BackendConfig {
  const raw = field(obj, 'Backend');
  if (raw !== undefined && !isObject(raw)) fail('Backend', `must be an object such as {"Type": "vxlan"}, got ${JSON.stringify(raw)}`);
  const backend = raw ?? {};
  // flannel falls back to "udp" here; vxlan is what its docs promise.
  const type = stringField(backend, 'Type', 'Backend.Type') ?? 'vxlan';
  if (type === 'host-gw') return { type };
  if (type === 'wireguard') return parseWireguard(backend);
  if (type !== 'vxlan') {
    fail('Backend.Type', `${JSON.stringify(type)} is not supported (supported: ${SUPPORTED_BACKENDS.join(', ')})`);
  }
  rejectEnabled(backend, 'GBP', type);
  rejectEnabled(backend, 'Learning', type);
  const vni = intField(backend, 'VNI', 'Backend.VNI', 1, MAX_VNI) ?? DEFAULT_VNI;
  // Port 0 means "kernel default" in flannel, which is 8472.
  const port = intField(backend, 'Port', 'Backend.Port', 0, 65535) || DEFAULT_VXLAN_PORT;
  const mtu = intField(backend, 'MTU', 'Backend.MTU', 0, 65535);
  if (mtu !== undefined && mtu !== 0 && mtu < MIN_MTU) fail('Backend.MTU', `must be at least ${MIN_MTU} (or 0 for automatic), got ${mtu}`);
  const directRouting = boolField(backend, 'DirectRouting', 'Backend.DirectRouting', false);
  return { type, vni, port, directRouting, ...(mtu ? { mtu } : {}) };
}

/** Parses net-conf.json text; throws ConfigError naming the offending field. */
export function parseNetworkConfig(json: string): NetworkConfig {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    throw new ConfigError(`net-conf.json: not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(parsed)) throw new ConfigError('net-conf.json: must be a JSON object');
  const enableIPv4 = boolField(parsed, 'EnableIPv4', 'EnableIPv4', true);
  const enableIPv6 = boolField(parsed, 'EnableIPv6', 'EnableIPv6', false);
  if (!enableIPv4 && !enableIPv6) fail('EnableIPv4', 'is false and so is EnableIPv6: at least one family must be enabled');
  const v4 = parseFamilyPart(parsed, V4_KEYS, enableIPv4) ?? { network: '', subnetLen: 0, subnetMin: '', subnetMax: '' };
  const v6 = parseFamilyPart(parsed, V6_KEYS, enableIPv6);
  const backend = parseBackend(parsed);
  if (backend.type === 'wireguard') checkWireguardFamilies(backend, enableIPv4);
  const enableNFTables = boolField(parsed, 'EnableNFTables', 'EnableNFTables', false);
  return {
    ...v4,
    enableIPv4,
    enableIPv6,
    ...(v6
      ? { ipv6Network: v6.network, ipv6SubnetLen: v6.subnetLen, ipv6SubnetMin: v6.subnetMin, ipv6SubnetMax: v6.subnetMax }
      : {}),
    enableNFTables,
    backend,
  };
}
