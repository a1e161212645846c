// Entry point of the tsflannel CNI plugin. Only the protocol layer loads up
// front: VERSION (sent before every ADD and DEL by some runtimes) is answered
// without loading netlink, IPAM or the logger.
import { readAllStdin, runPlugin, type PluginContext, type PluginHandlers } from '../cni/skel.js';
import { asCniError, ErrorCode } from '../cni/errors.js';
import { CURRENT_VERSION } from '../cni/versions.js';

const MAX_STDIN = 1 << 20;

const commands = () => import('./commands.js');

const handlers: PluginHandlers = {
  add: async (ctx: PluginContext) => (await commands()).add(ctx),
  del: async (ctx: PluginContext) => (await commands()).del(ctx),
  check: async (ctx: PluginContext) => (await commands()).check(ctx),
  gc: async (ctx: PluginContext) => (await commands()).gc(ctx),
  status: async (ctx: PluginContext) => (await commands()).status(ctx),
};

function logToStderr(msg: string, err?: unknown): void {
  const detail = err instanceof Error ? `: ${err.stack ?? err.message}` : err === undefined ? '' : `: ${String(err)}`;
  process.stderr.write(`tsflannel: ${msg}${detail}\n`);
}

export async function main(): Promise<void> {
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
}
