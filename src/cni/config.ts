// The network configuration a runtime writes to stdin: decoded defensively
// (size, encoding, nesting), checked for the fields the protocol owns, and
// handed on with the rest untouched in `raw` for the plugin's own parser.
import { CniError, ErrorCode } from './errors.js';
import { CNI_NAME_PATTERN, MAX_CONTAINER_ID, validateIfname, type Command } from './env.js';
import { parsePrevResult, type Result } from './result.js';
import { compareVersions, isSupportedVersion, isVersionFormat, SUPPORTED_VERSIONS, type CniVersion } from './versions.js';
import { describeValue, isObject, optObject } from './validate.js';

export interface ValidAttachment {
  containerID: string;
  ifname: string;
}

export interface NetConf {
  cniVersion: CniVersion;
  name: string;
  type: string;
  prevResult?: Result;
  /** {} when absent */
  runtimeConfig: Record<string, unknown>;
  /** GC only: the attachments the runtime still considers live */
  validAttachments?: ValidAttachment[];
  /** the whole decoded object, for plugin-specific fields */
  raw: Record<string, unknown>;
}

export const MAX_CONFIG_BYTES = 1 << 20;
/** Real configs nest about six levels; the cap keeps recursive walkers safe. */
export const MAX_CONFIG_DEPTH = 64;
export const MAX_NETWORK_NAME = 128;
export const MAX_PLUGIN_TYPE = 255;

/** The key from the current spec text, and the one the 1.1.0 tag used; libcni sends both. */
export const VALID_ATTACHMENTS_KEY = 'cni.dev/valid-attachments';
export const LEGACY_ATTACHMENTS_KEY = 'cni.dev/attachments';

function decodingError(msg: string): CniError {
  return new CniError(ErrorCode.DecodingFailure, msg);
}

function configError(msg: string, details?: string): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, msg, details);
}

function incompatible(msg: string, details: string): CniError {
  return new CniError(ErrorCode.IncompatibleVersion, msg, details);
}

/** Depth of {}/[] nesting outside strings, stopping early past the cap. */
function nestingDepth(text: string, cap: number): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      depth++;
      if (depth > max) max = depth;
      if (max > cap) return max;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

function toText(input: Buffer | string): string {
  if (typeof input === 'string') {
    if (Buffer.byteLength(input, 'utf8') > MAX_CONFIG_BYTES) {
      throw decodingError(`network configuration is larger than ${MAX_CONFIG_BYTES} bytes`);
    }
    return input;
  }
  if (input.length > MAX_CONFIG_BYTES) throw decodingError(`network configuration is larger than ${MAX_CONFIG_BYTES} bytes`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(input);
  } catch {
    throw decodingError('network configuration is not valid UTF-8');
  }
}

/** Stdin bytes to a JSON object, or CniError 6. */
export function decodeConfig(input: Buffer | string): Record<string, unknown> {
  const text = toText(input);
  if (text.trim() === '') throw decodingError('network configuration on stdin is empty');
  if (nestingDepth(text, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH) {
    throw decodingError(`network configuration nests deeper than ${MAX_CONFIG_DEPTH} levels`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw decodingError(`network configuration is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(value)) throw decodingError(`network configuration must be a JSON object, got ${describeValue(value)}`);
  return value;
}

/** The config's cniVersion when it is one we speak, for labelling an error reply. */
export function peekCniVersion(raw: Record<string, unknown>): CniVersion | undefined {
  const v = raw.cniVersion;
  return typeof v === 'string' && isSupportedVersion(v) ? v : undefined;
}

function readName(raw: Record<string, unknown>): string {
  const name = raw.name;
  if (name === undefined || name === null || name === '') throw configError('missing network name');
  if (typeof name !== 'string') throw configError(`network name must be a string, got ${describeValue(name)}`);
  if (name.length > MAX_NETWORK_NAME) {
    throw configError(`network name is longer than ${MAX_NETWORK_NAME} characters`, describeValue(name));
  }
  // The pattern's first character already rules out "." and "..".
  if (!CNI_NAME_PATTERN.test(name)) {
    throw configError(`network name ${describeValue(name)} has invalid characters`, `it must match ${CNI_NAME_PATTERN.source}`);
  }
  return name;
}

function supportedList(): string {
  return `[${SUPPORTED_VERSIONS.join(' ')}]`;
}

function readVersion(raw: Record<string, unknown>): CniVersion {
  const v = raw.cniVersion;
  // A missing version means 0.1.0 to libcni, which this suite does not speak.
  if (v === undefined || v === null || v === '') {
    throw incompatible('incompatible CNI versions', `config has no cniVersion (which means 0.1.0), plugin supports ${supportedList()}`);
  }
  if (typeof v !== 'string') throw decodingError(`cniVersion must be a string, got ${describeValue(v)}`);
  if (!isVersionFormat(v)) throw configError(`cniVersion ${describeValue(v)} is not a MAJOR.MINOR.PATCH version`);
  if (!isSupportedVersion(v)) {
    throw incompatible('incompatible CNI versions', `config is ${describeValue(v)}, plugin supports ${supportedList()}`);
  }
  return v;
}

function readType(raw: Record<string, unknown>): string {
  const t = raw.type;
  if (t === undefined || t === null || t === '') throw configError('missing plugin type');
  if (typeof t !== 'string') throw configError(`plugin type must be a string, got ${describeValue(t)}`);
  if (t.length > MAX_PLUGIN_TYPE || /[/\\\0]/.test(t)) throw configError(`invalid plugin type ${describeValue(t)}`);
  return t;
}

/** CHECK arrived in 0.4.0, GC and STATUS in 1.1.0. */
function checkCommandAllowed(command: Command, version: CniVersion): void {
  const since = command === 'CHECK' ? '0.4.0' : command === 'GC' || command === 'STATUS' ? '1.1.0' : undefined;
  if (since && compareVersions(version, since) < 0) {
    throw incompatible(`config version does not allow ${command}`, `cniVersion is "${version}", ${command} needs ${since} or later`);
  }
}

function readAttachment(entry: unknown, where: string): ValidAttachment {
  if (!isObject(entry)) throw configError(`${where}: expected an object, got ${describeValue(entry)}`);
  const { containerID, ifname } = entry;
  if (typeof containerID !== 'string' || containerID.length > MAX_CONTAINER_ID || !CNI_NAME_PATTERN.test(containerID)) {
    throw configError(`${where}.containerID: invalid container ID ${describeValue(containerID)}`);
  }
  if (typeof ifname !== 'string') throw configError(`${where}.ifname: expected a string, got ${describeValue(ifname)}`);
  try {
    validateIfname(ifname);
  } catch (err) {
    throw configError(`${where}.ifname: ${(err as Error).message}`, describeValue(ifname));
  }
  return { containerID, ifname };
}

/**
 * GC's list of live attachments. null means "none are live" (a Go nil slice);
 * an absent key is refused: reading it as "none are live" would let a plain
 * `cnitool gc` wipe attachments that other runtimes still use.
 */
function readValidAttachments(raw: Record<string, unknown>): ValidAttachment[] {
  const key = Object.hasOwn(raw, VALID_ATTACHMENTS_KEY)
    ? VALID_ATTACHMENTS_KEY
    : Object.hasOwn(raw, LEGACY_ATTACHMENTS_KEY)
      ? LEGACY_ATTACHMENTS_KEY
      : undefined;
  if (key === undefined) throw configError(`GC needs "${VALID_ATTACHMENTS_KEY}" in the network configuration`);
  const list = raw[key];
  if (list === null) return [];
  if (!Array.isArray(list)) throw configError(`"${key}" must be a list, got ${describeValue(list)}`);
  return list.map((e, i) => readAttachment(e, `${key}[${i}]`));
}

/**
 * DEL is best effort: a prevResult or runtimeConfig it cannot read is dropped
 * rather than failing the cleanup (the spec requires DEL to work without them).
 */
function tolerantOnDel<T>(command: Command, read: () => T, fallback: T): T {
  if (command !== 'DEL') return read();
  try {
    return read();
  } catch (err) {
    if (err instanceof CniError) return fallback;
    throw err;
  }
}

export function netConfFromObject(raw: Record<string, unknown>, command: Command): NetConf {
  const name = readName(raw);
  const cniVersion = readVersion(raw);
  const type = readType(raw);
  checkCommandAllowed(command, cniVersion);

  const conf: NetConf = {
    cniVersion,
    name,
    type,
    runtimeConfig: tolerantOnDel(command, () => optObject(raw, 'runtimeConfig') ?? {}, {}),
    raw,
  };
  const prev = raw.prevResult;
  const attachmentCommand = command === 'ADD' || command === 'CHECK' || command === 'DEL';
  if (attachmentCommand && prev !== undefined && prev !== null) {
    const parsed = tolerantOnDel<Result | undefined>(command, () => parsePrevResult(prev, cniVersion), undefined);
    if (parsed) conf.prevResult = parsed;
  }
  if (command === 'GC') conf.validAttachments = readValidAttachments(raw);
  return conf;
}
