// Addresses a runtime asks for, from the three places the reference
// host-local reads them: CNI_ARGS `IP=` (one address or a comma list, one
// per family), the config's `args.cni.ips`, and `runtimeConfig.ips` (the
// `ips` capability). Like host-local, all three are honoured together.
import { CniError, ErrorCode, type ErrorCodeValue } from '../cni/errors.js';
import { clip, describeValue, isObject } from '../cni/validate.js';
import { formatIp, isV4Mapped, parseCidr, parseIp, type Ip } from '../net/ip.js';

export interface RequestSources {
  /** parsed CNI_ARGS */
  cniArgs: Readonly<Record<string, string>>;
  /** the whole network config, for `args.cni.ips` */
  conf: Readonly<Record<string, unknown>>;
  runtimeConfig: Readonly<Record<string, unknown>>;
}

/**
 * One address, written bare or with a prefix ("10.244.1.5" or
 * "10.244.1.5/24"; the prefix is the range's, so it is ignored, as the
 * reference ignores it). ::ffff:a.b.c.d is IPv4 a.b.c.d, as Go reads it.
 */
export function parseRequestedIp(text: string): Ip | undefined {
  const trimmed = text.trim();
  const ip = trimmed.includes('/') ? parseCidr(trimmed)?.ip : parseIp(trimmed);
  if (!ip) return undefined;
  return isV4Mapped(ip) ? { family: 4, value: ip.value & 0xffff_ffffn } : ip;
}

function parseList(values: readonly unknown[], where: string, code: ErrorCodeValue): Ip[] {
  return values.map((v, i) => {
    const ip = typeof v === 'string' ? parseRequestedIp(v) : undefined;
    if (!ip) throw new CniError(code, `${where}[${i}]: invalid IP address ${describeValue(v)}`);
    return ip;
  });
}

function listAt(obj: Readonly<Record<string, unknown>>, key: string, where: string): readonly unknown[] {
  const v = obj[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new CniError(ErrorCode.InvalidNetworkConfig, `${where} must be a list of IP addresses, got ${describeValue(v)}`);
  return v;
}

/** Every requested address, CNI_ARGS first, then args, then runtimeConfig; duplicates kept once. */
export function requestedIps(src: RequestSources): Ip[] {
  const out: Ip[] = [];
  const fromEnv = src.cniArgs.IP;
  if (fromEnv !== undefined && fromEnv !== '') {
    fromEnv.split(',').forEach((item) => {
      const ip = parseRequestedIp(item);
      if (!ip) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_ARGS IP: invalid IP address ${JSON.stringify(clip(item))}`);
      out.push(ip);
    });
  }
  const args = src.conf.args;
  const cni = isObject(args) ? args.cni : undefined;
  if (isObject(cni)) out.push(...parseList(listAt(cni, 'ips', 'args.cni.ips'), 'args.cni.ips', ErrorCode.InvalidNetworkConfig));
  out.push(...parseList(listAt(src.runtimeConfig, 'ips', 'runtimeConfig.ips'), 'runtimeConfig.ips', ErrorCode.InvalidNetworkConfig));
  const seen = new Set<string>();
  return out.filter((ip) => {
    const key = formatIp(ip);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
