// Entry point of the tsflannel CNI plugin. Modules load only on the path that
// needs them: VERSION (podman sends it for every plugin before every ADD and
// DEL) is answered from CNI_COMMAND and stdin alone, without the protocol
// layer's config and result validators, which cost about 6 ms of a 44 ms call
// (bench/plugin.js); the other commands load the protocol layer, and ADD, DEL,
// CHECK, GC and STATUS then load netlink, IPAM and the logger.
import type { PluginContext, PluginHandlers } from '../cni/skel.js';
import { asCniError, ErrorCode } from '../cni/errors.js';
import { CURRENT_VERSION, versionInfo } from '../cni/versions.js';

const MAX_STDIN = 1 << 20;
/** As in the protocol layer: a VERSION body is tiny; a bigger one names no version. */
const MAX_VERSION_STDIN = 4096;

const skel = () => import('../cni/skel.js');
const commands = () => import('./commands.js');

const handlers: PluginHandlers = {
  add: async (ctx: PluginContext) => (await commands()).add(ctx),
  del: async (ctx: PluginContext) => (await commands()).del(ctx),
  check: async (ctx: PluginContext) => (await commands()).check(ctx),
  gc: async (ctx: PluginContext) => (await commands()).gc(ctx),
  status: async (ctx: PluginContext) => (await commands()).status(ctx),
};

/** One line per error; stacks go to the plugin's log at level debug. */
function logToStderr(msg: string, err?: unknown): void {
  const reason = err instanceof Error ? err.message : err === undefined ? '' : String(err);
  const line = reason && !msg.includes(reason) ? `${msg}: ${reason}` : msg;
  process.stderr.write(`tsflannel: ${line.replace(/\s*\n\s*/g, ' ').slice(0, 2048)}\n`);
}

/**
 * Once the answer is out, nothing may keep the runtime waiting: a file
 * system step that never returns (a hung mount) would hold the event loop.
 */
function exitSoonAfterAnswer(): void {
  setTimeout(() => process.exit(), 2000).unref();
}

export async function main(): Promise<void> {
  // The same exact match runPlugin's parseCommand makes.
  if (process.env.CNI_COMMAND === 'VERSION') {
    await answerVersion();
    return;
  }
  const { readAllStdin, runPlugin } = await skel();
  let stdin: Buffer;
  try {
    stdin = await readAllStdin(MAX_STDIN);
  } catch (err) {
    logToStderr('reading stdin failed', err);
    const cniErr = asCniError(err, ErrorCode.IOFailure);
    process.stdout.write(`${JSON.stringify(cniErr.toJSON(CURRENT_VERSION))}\n`);
    process.exitCode = 1;
    return;
  }
  process.exitCode = await runPlugin(handlers, {
    env: process.env,
    stdin,
    stdout: (text) => process.stdout.write(text),
    log: logToStderr,
  });
  exitSoonAfterAnswer();
}

/**
 * The answer runPlugin gives to VERSION: the version the caller sent if it is
 * supported, else the current one. A body that cannot be read or is too big
 * names no version; VERSION never fails.
 */
async function answerVersion(): Promise<void> {
  const requested = requestedVersion(await readStdinUpTo(MAX_VERSION_STDIN));
  process.stdout.write(`${JSON.stringify(versionInfo(requested))}\n`);
}

/** All of stdin, or undefined once it exceeds `max` bytes or reading fails. */
async function readStdinUpTo(max: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of process.stdin) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk), 'utf8');
      total += buf.length;
      if (total > max) {
        process.stdin.destroy();
        return undefined;
      }
      chunks.push(buf);
    }
  } catch {
    return undefined;
  }
  return Buffer.concat(chunks, total);
}

function requestedVersion(body: Buffer | undefined): string | undefined {
  if (!body || body.length === 0) return undefined;
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
    const version = (parsed as Record<string, unknown>).cniVersion;
    return typeof version === 'string' ? version : undefined;
  } catch {
    return undefined;
  }
}
