// The plugin entry: dispatches one CNI invocation to its handler and owns
// stdout. Stdout carries exactly one JSON document (a result, a version answer
// or an error) or nothing at all; everything else goes through io.log.
import { statSync } from 'node:fs';
import { asCniError, CniError, ErrorCode } from './errors.js';
import { decodeConfig, netConfFromObject, peekCniVersion, type NetConf } from './config.js';
import { parseCommand, parseEnv, type CniEnv, type Command } from './env.js';
import { formatResult, type Result } from './result.js';
import { CURRENT_VERSION, versionInfo, type CniVersion } from './versions.js';
import { isObject } from './validate.js';

export interface PluginContext {
  env: CniEnv;
  conf: NetConf;
}

export interface PluginHandlers {
  add(ctx: PluginContext): Promise<Result>;
  del(ctx: PluginContext): Promise<void>;
  check(ctx: PluginContext): Promise<void>;
  gc(ctx: PluginContext): Promise<void>;
  status(ctx: PluginContext): Promise<void>;
}

export interface PluginIO {
  env: NodeJS.ProcessEnv;
  stdin: Buffer;
  stdout: (text: string) => void;
  log?: (msg: string, err?: unknown) => void;
}

/** VERSION bodies are tiny; anything larger is not worth decoding. */
const MAX_VERSION_STDIN = 4096;

/** The cniVersion a VERSION caller sent, if stdin is a small JSON object holding one. */
function requestedVersion(stdin: Buffer): string | undefined {
  if (stdin.length === 0 || stdin.length > MAX_VERSION_STDIN) return undefined;
  try {
    const body: unknown = JSON.parse(stdin.toString('utf8'));
    return isObject(body) && typeof body.cniVersion === 'string' ? body.cniVersion : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Refuses a CNI_NETNS that is the plugin's own namespace: configuring it as a
 * pod's would rename and readdress the node's interfaces. A path that cannot
 * be stat'ed is left to the handler (DEL must tolerate a vanished netns).
 * CNI_NETNS_OVERRIDE=1|true turns the check off, as in the Go skel.
 */
function refuseOwnNetns(env: CniEnv, processEnv: NodeJS.ProcessEnv): void {
  const override = (processEnv.CNI_NETNS_OVERRIDE ?? '').toLowerCase();
  if (env.netns === '' || override === '1' || override === 'true') return;
  let same = false;
  try {
    const own = statSync('/proc/self/ns/net');
    const target = statSync(env.netns);
    same = own.dev === target.dev && own.ino === target.ino;
  } catch {
    return;
  }
  if (same) {
    throw new CniError(ErrorCode.InvalidNetns, 'CNI_NETNS is the plugin\'s own network namespace', env.netns);
  }
}

async function dispatch(handlers: PluginHandlers, command: Exclude<Command, 'VERSION'>, ctx: PluginContext): Promise<Result | undefined> {
  switch (command) {
    case 'ADD':
      return handlers.add(ctx);
    case 'DEL':
      return handlers.del(ctx).then(() => undefined);
    case 'CHECK':
      return handlers.check(ctx).then(() => undefined);
    case 'GC':
      return handlers.gc(ctx).then(() => undefined);
    case 'STATUS':
      return handlers.status(ctx).then(() => undefined);
  }
}

function writeJson(io: PluginIO, value: unknown): void {
  // One line: runtimes read the whole of stdout as a single document.
  io.stdout(`${JSON.stringify(value)}\n`);
}

/** Runs one invocation and returns the process exit code (0 or 1). */
export async function runPlugin(handlers: PluginHandlers, io: PluginIO): Promise<number> {
  let errorVersion: CniVersion = CURRENT_VERSION;
  let output: unknown;
  try {
    // VERSION is answered from CNI_COMMAND alone: podman sends it with dummy
    // values in the other variables before every ADD and DEL.
    const command = parseCommand(io.env);
    if (command === 'VERSION') {
      output = versionInfo(requestedVersion(io.stdin));
    } else {
      const env = parseEnv(io.env);
      const raw = decodeConfig(io.stdin);
      errorVersion = peekCniVersion(raw) ?? CURRENT_VERSION;
      const conf = netConfFromObject(raw, env.command);
      if (command === 'ADD' || command === 'CHECK' || command === 'DEL') refuseOwnNetns(env, io.env);
      const result = await dispatch(handlers, command, { env, conf });
      if (command === 'ADD') {
        if (result === undefined) throw new CniError(ErrorCode.Internal, 'ADD handler returned no result');
        output = formatResult(result, conf.cniVersion);
      }
    }
  } catch (err) {
    return reportError(io, err, errorVersion);
  }
  if (output === undefined) return 0;
  try {
    writeJson(io, output);
  } catch (err) {
    io.log?.('writing the result to stdout failed', err);
    return 1;
  }
  return 0;
}

function reportError(io: PluginIO, err: unknown, cniVersion: CniVersion): number {
  const cniErr = asCniError(err);
  io.log?.(`CNI error ${cniErr.code}: ${cniErr.message}`, err);
  try {
    writeJson(io, cniErr.toJSON(cniVersion));
  } catch (writeErr) {
    io.log?.('writing the error to stdout failed', writeErr);
  }
  return 1;
}
