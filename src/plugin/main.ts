// Entry point of the tsflannel CNI plugin. Modules load only on the path that
// needs them: VERSION (podman sends it for every plugin before every ADD and
// DEL) is answered from CNI_COMMAND and stdin alone, without the protocol
// layer's config and result validators, which cost about 6 ms of a 44 ms call
// (bench/plugin.js); the other commands load the protocol layer, and ADD, DEL,
// CHECK, GC and STATUS then load netlink, IPAM and the logger.
import { asCniError, ErrorCode } from '../cni/errors.js';
import { readStdin } from '../cni/stdin.js';
import { CURRENT_VERSION, versionInfo } from '../cni/versions.js';

/** As in the protocol layer: a VERSION body is tiny; a bigger one names no version. */
const MAX_VERSION_STDIN = 4096;

// The transport only: read stdin, hand env and bytes to the one handler
// (src/plugin/handler.ts, which the agent's socket server calls too), write
// its answer. No CNI logic lives here.

/**
 * Once the answer and the log lines are out, the process exits at once
 * rather than letting Node tear down its environment and V8's heap, which
 * cost a cold ADD about 4 ms of CPU and 10 ms of wall time (bench/
 * sea-startup.js). Nothing else is pending then: the handler awaits all its
 * work. The timer is the backstop: a file system step that never returns (a
 * hung mount) or a stdout nobody reads must not keep the runtime waiting.
 */
function exitAfterAnswer(answer: Buffer, logsWritten: () => Promise<void>): void {
  setTimeout(() => process.exit(), 2000).unref();
  const written = answer.length === 0 ? Promise.resolve() : new Promise<void>((resolve) => process.stdout.write(answer, () => resolve()));
  void Promise.all([written, logsWritten()]).then(() => process.exit());
}

export async function main(): Promise<void> {
  // The same exact match runPlugin's parseCommand makes.
  if (process.env.CNI_COMMAND === 'VERSION') {
    await answerVersion();
    return;
  }
  const [{ handleCni, MAX_STDIN, stderrLine }, { logsWritten }] = await Promise.all([import('./handler.js'), import('./log.js')]);
  let stdin: Buffer;
  try {
    stdin = await readStdin(MAX_STDIN);
  } catch (err) {
    process.stderr.write(stderrLine('reading stdin failed', err));
    const cniErr = asCniError(err, ErrorCode.IOFailure);
    process.stdout.write(`${JSON.stringify(cniErr.toJSON(CURRENT_VERSION))}\n`);
    process.exitCode = 1;
    return;
  }
  const res = await handleCni({ env: process.env, stdin }, (text) => process.stderr.write(text));
  process.exitCode = res.exitCode;
  exitAfterAnswer(res.stdout, logsWritten);
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
  try {
    return await readStdin(max);
  } catch {
    return undefined;
  }
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
