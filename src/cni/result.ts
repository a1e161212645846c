// Results are held in the 1.1.0 shape internally and converted only at the
// edges: formatResult writes a version's exact wire form, parsePrevResult
// reads any supported version's form back.
import { CniError, ErrorCode } from './errors.js';
import { isSupportedVersion, type CniVersion } from './versions.js';
import { describeValue, isIP, isIPCidr, isIPv4Cidr, isObject } from './validate.js';

export interface ResultInterface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

/** address is a CIDR with the host part, e.g. 10.244.1.5/24 */
export interface ResultIP {
  address: string;
  gateway?: string;
  interface?: number;
}

export interface ResultRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface ResultDNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface Result {
  cniVersion: string;
  interfaces?: ResultInterface[];
  ips?: ResultIP[];
  routes?: ResultRoute[];
  dns?: ResultDNS;
}

// ---- decoding and validation ----

type Fail = (msg: string) => CniError;

const failures = {
  config: ((msg: string) => new CniError(ErrorCode.InvalidNetworkConfig, msg)) as Fail,
  internal: ((msg: string) => new CniError(ErrorCode.Internal, `plugin produced an invalid result: ${msg}`)) as Fail,
};

const MAX_U32 = 0xffff_ffff;

class Reader {
  constructor(
    private readonly fail: Fail,
    private readonly obj: Record<string, unknown>,
    private readonly where: string,
  ) {}

  private get(key: string): unknown {
    const v = Object.hasOwn(this.obj, key) ? this.obj[key] : undefined;
    return v === null ? undefined : v;
  }

  private bad(key: string, expected: string, v: unknown): CniError {
    return this.fail(`${this.where}.${key}: expected ${expected}, got ${describeValue(v)}`);
  }

  str(key: string, check?: { test: (s: string) => boolean; what: string }): string | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw this.bad(key, 'a string', v);
    if (check && v !== '' && !check.test(v)) throw this.bad(key, check.what, v);
    return v === '' ? undefined : v;
  }

  requiredStr(key: string, check?: { test: (s: string) => boolean; what: string }): string {
    const v = this.str(key, check);
    if (v === undefined) throw this.fail(`${this.where}.${key} is missing`);
    return v;
  }

  int(key: string, min: number, max: number): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw this.bad(key, `an integer from ${min} to ${max}`, v);
    }
    return v;
  }

  strList(key: string): string[] | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((e) => typeof e !== 'string')) throw this.bad(key, 'a list of strings', v);
    return v.length > 0 ? [...(v as string[])] : undefined;
  }

  list(key: string): Record<string, unknown>[] | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) throw this.bad(key, 'a list', v);
    return v.map((e, i) => {
      if (!isObject(e)) throw this.fail(`${this.where}.${key}[${i}]: expected an object, got ${describeValue(e)}`);
      return e;
    });
  }

  object(key: string): Record<string, unknown> | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    if (!isObject(v)) throw this.bad(key, 'an object', v);
    return v;
  }
}

const CIDR = { test: isIPCidr, what: 'an IP address in CIDR form' };
const IP = { test: isIP, what: 'an IP address' };

/** Drops undefined members so results compare and serialise cleanly. */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

function readInterface(r: Reader): ResultInterface {
  return compact({
    name: r.requiredStr('name'),
    mac: r.str('mac'),
    mtu: r.int('mtu', 0, MAX_U32) || undefined,
    sandbox: r.str('sandbox'),
    socketPath: r.str('socketPath'),
    pciID: r.str('pciID'),
  });
}

function readIP(r: Reader): ResultIP {
  // A 0.3.x/0.4.0 "version" member is ignored, as libcni ignores it.
  return compact({ address: r.requiredStr('address', CIDR), gateway: r.str('gateway', IP), interface: r.int('interface', 0, MAX_U32) });
}

function readRoute(r: Reader): ResultRoute {
  return compact({
    dst: r.requiredStr('dst', CIDR),
    gw: r.str('gw', IP),
    mtu: r.int('mtu', 0, MAX_U32) || undefined,
    advmss: r.int('advmss', 0, MAX_U32) || undefined,
    priority: r.int('priority', 0, MAX_U32) || undefined,
    table: r.int('table', 0, MAX_U32),
    scope: r.int('scope', 0, 255),
  });
}

function readDns(r: Reader): ResultDNS | undefined {
  const dns = compact({
    nameservers: r.strList('nameservers'),
    domain: r.str('domain'),
    search: r.strList('search'),
    options: r.strList('options'),
  });
  return Object.keys(dns).length > 0 ? dns : undefined;
}

function readList<T>(fail: Fail, top: Reader, key: string, where: string, read: (r: Reader) => T): T[] | undefined {
  const list = top.list(key);
  if (!list || list.length === 0) return undefined;
  return list.map((e, i) => read(new Reader(fail, e, `${where}.${key}[${i}]`)));
}

function decodeBody(fail: Fail, raw: Record<string, unknown>, where: string, cniVersion: string): Result {
  const top = new Reader(fail, raw, where);
  const dnsObj = top.object('dns');
  return compact({
    cniVersion,
    interfaces: readList(fail, top, 'interfaces', where, readInterface),
    ips: readList(fail, top, 'ips', where, readIP),
    routes: readList(fail, top, 'routes', where, readRoute),
    dns: dnsObj ? readDns(new Reader(fail, dnsObj, `${where}.dns`)) : undefined,
  });
}

/** Validates an internal Result (e.g. one a handler returned) field by field. */
function checkResult(r: Result, where: string, fail: Fail): Result {
  if (!isObject(r)) throw fail(`${where}: expected an object, got ${describeValue(r)}`);
  // Round-trip through the decoder so both directions enforce one rule set.
  return decodeBody(fail, r as unknown as Record<string, unknown>, where, String(r.cniVersion));
}

/**
 * Reads a prevResult written in any supported version (libcni converts the
 * cached result to the config's version, but chained plugins may not). The
 * returned Result carries the config's version, since that is the version it
 * stands for from here on.
 */
export function parsePrevResult(raw: unknown, confVersion: CniVersion): Result {
  const fail = failures.config;
  if (!isObject(raw)) throw fail(`prevResult: expected an object, got ${describeValue(raw)}`);
  const v = raw.cniVersion;
  // libcni fills a missing result version with the config's (cni#895).
  if (v !== undefined && v !== null && v !== '') {
    if (typeof v !== 'string') throw fail(`prevResult.cniVersion: expected a string, got ${describeValue(v)}`);
    if (!isSupportedVersion(v)) throw fail(`prevResult.cniVersion ${describeValue(v)} is not a supported result version`);
  }
  return decodeBody(fail, raw, 'prevResult', confVersion);
}

// ---- encoding ----

type Wire = Record<string, unknown>;

/** Copies the fields that are set; undefined, '' and [] are left out. */
function pick<T extends object>(src: T, keys: readonly (keyof T)[]): Wire {
  const out: Wire = {};
  for (const k of keys) {
    const v = src[k];
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v) && v.length === 0) continue;
    out[k as string] = Array.isArray(v) ? [...(v as unknown[])] : v;
  }
  return out;
}

/** 1.1.0 added per-interface MTU/socketPath/pciID and the route attributes. */
function hasExtendedFields(version: CniVersion): boolean {
  return version === '1.1.0';
}

/** 0.3.0 through 0.4.0 tag each IP with its family. */
function hasIpVersionField(version: CniVersion): boolean {
  return version.startsWith('0.');
}

function formatInterface(i: ResultInterface, version: CniVersion): Wire {
  // mtu 0 means "not reported" (Go's omitempty does the same).
  const base = pick(i, ['name', 'mac']);
  if (hasExtendedFields(version) && i.mtu) base.mtu = i.mtu;
  Object.assign(base, pick(i, ['sandbox']));
  if (hasExtendedFields(version)) Object.assign(base, pick(i, ['socketPath', 'pciID']));
  return base;
}

function formatIP(ip: ResultIP, version: CniVersion): Wire {
  const out: Wire = {};
  if (hasIpVersionField(version)) out.version = isIPv4Cidr(ip.address) ? '4' : '6';
  Object.assign(out, pick(ip, ['address', 'gateway']));
  if (ip.interface !== undefined) out.interface = ip.interface;
  return out;
}

function formatRoute(r: ResultRoute, version: CniVersion): Wire {
  const out = pick(r, ['dst', 'gw']);
  if (!hasExtendedFields(version)) return out;
  // mtu/advmss/priority 0 mean "unset"; table and scope 0 are real values.
  for (const k of ['mtu', 'advmss', 'priority'] as const) if (r[k]) out[k] = r[k];
  for (const k of ['table', 'scope'] as const) if (r[k] !== undefined) out[k] = r[k];
  return out;
}

function formatDns(dns: ResultDNS | undefined): Wire | undefined {
  if (!dns) return undefined;
  const out = pick(dns, ['nameservers', 'domain', 'search', 'options']);
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * The exact wire form for `version`. The result is validated first, so a
 * plugin bug shows up as a clear error here rather than as a parse failure
 * inside the runtime.
 */
export function formatResult(r: Result, version: CniVersion): Record<string, unknown> {
  const checked = checkResult(r, 'result', failures.internal);
  const out: Wire = { cniVersion: version };
  if (checked.interfaces?.length) out.interfaces = checked.interfaces.map((i) => formatInterface(i, version));
  if (checked.ips?.length) out.ips = checked.ips.map((ip) => formatIP(ip, version));
  if (checked.routes?.length) out.routes = checked.routes.map((rt) => formatRoute(rt, version));
  const dns = formatDns(checked.dns);
  if (dns) out.dns = dns;
  return out;
}
