// The pod interface's MAC a runtime asks for, from the three places the
// reference bridge plugin reads it: runtimeConfig.mac (the `mac` capability,
// which libcni passes only when the plugin entry declares it), the config's
// args.cni.mac, and CNI_ARGS MAC=. Unlike requested addresses, one wins:
// runtimeConfig over args over CNI_ARGS, an empty value counting as unset,
// as in the reference. Only the winner is parsed (the reference never reads
// the others), but a config value that is not a string fails as it does
// there (its JSON decoding fails).
import { CniError, ErrorCode, type ErrorCodeValue } from '../cni/errors.js';
import { describeValue, isObject } from '../cni/validate.js';
import { nonUnicastReason, parseMac } from '../net/mac.js';
import type { RequestSources } from '../ipam/index.js';

interface Candidate {
  value: string;
  where: string;
  code: ErrorCodeValue;
}

function configString(obj: Readonly<Record<string, unknown>>, key: string, where: string): string | undefined {
  const v = Object.hasOwn(obj, key) ? obj[key] : undefined;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new CniError(ErrorCode.InvalidNetworkConfig, `${where} must be a string, got ${describeValue(v)}`);
  return v;
}

function candidates(src: RequestSources): Candidate[] {
  const out: Candidate[] = [];
  const fromRuntime = configString(src.runtimeConfig, 'mac', 'runtimeConfig.mac');
  if (fromRuntime) out.push({ value: fromRuntime, where: 'runtimeConfig.mac', code: ErrorCode.InvalidNetworkConfig });
  const args = Object.hasOwn(src.conf, 'args') ? src.conf.args : undefined;
  const cni = isObject(args) && Object.hasOwn(args, 'cni') ? args.cni : undefined;
  const fromArgs = isObject(cni) ? configString(cni, 'mac', 'args.cni.mac') : undefined;
  if (fromArgs) out.push({ value: fromArgs, where: 'args.cni.mac', code: ErrorCode.InvalidNetworkConfig });
  const fromEnv = src.cniArgs.MAC;
  if (fromEnv) out.push({ value: fromEnv, where: 'CNI_ARGS MAC', code: ErrorCode.InvalidEnvironment });
  return out;
}

/**
 * The requested MAC in canonical text, or undefined when none is asked for.
 * A malformed one, or one the kernel would refuse for a device (multicast,
 * broadcast, all zeros), fails here, before anything is made: code 7 from
 * the config, 4 from CNI_ARGS, naming the source and the value.
 */
export function requestedMac(src: RequestSources): string | undefined {
  const winner = candidates(src)[0];
  if (!winner) return undefined;
  const mac = parseMac(winner.value);
  if (!mac) throw new CniError(winner.code, `${winner.where}: invalid MAC address ${describeValue(winner.value)}`);
  const refused = nonUnicastReason(mac);
  if (refused) throw new CniError(winner.code, `${winner.where}: ${mac} is ${refused}; a pod interface needs a unicast MAC`);
  return mac;
}
