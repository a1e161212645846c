// Entry point of the tsflannel CNI plugin. Modules load only on the path that
// needs them: VERSION (podman sends it for every plugin before every ADD and
// DEL) is answered from CNI_COMMAND and stdin alone, without the protocol
// layer's config and result validators, which cost about 6 ms of a 44 ms call
// (bench/plugin.js); the other commands load the protocol layer, and ADD, DEL,
// CHECK, GC and STATUS then load netlink, IPAM and the logger.
import { writeSync } from 'node:fs';
import { asCniError, ErrorCode } from '../cni/errors.js';
import { readStdin } from '../cni/stdin.js';
import { CURRENT_VERSION, versionInfo } from '../cni/versions.js';

/** The commands that reach the kernel through the netlink shim. */
const NETLINK_COMMANDS = new Set(['ADD', 'DEL', 'CHECK']);

/** As in the protocol layer: a VERSION body is tiny; a bigger one names no version. */
const MAX_VERSION_STDIN = 4096;

// The transport only: read stdin, hand env and bytes to the one handler
// (src/plugin/handler.ts, which the agent's socket server calls too), write
// its answer. No CNI logic lives here.

/** Set once a write to that fd had to go through Node's stream; later ones follow it, in order. */
const throughStream = new Set<1 | 2>();

/**
 * Writes to stdout (1) or stderr (2) with write(2) rather than through
 * process.stdout or process.stderr: for a pipe, which is how runtimes call a
 * plugin, Node builds a net.Socket and loads the net and stream modules,
 * several ms of a cold call. What a non-blocking pipe refuses (EAGAIN) goes
 * through the stream, which waits for the reader. Resolves once written; a
 * reader that went away (EPIPE) gets nothing, and an unwritten answer makes
 * the exit code 1.
 */
function writeFd(fd: 1 | 2, data: string | Uint8Array): Promise<void> {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let off = 0;
  if (!throughStream.has(fd)) {
    try {
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
      return Promise.resolve();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') {
        if (fd === 1) process.exitCode = 1;
        return Promise.resolve();
      }
      throughStream.add(fd);
    }
  }
  const stream = fd === 1 ? process.stdout : process.stderr;
  return new Promise((resolve) => stream.write(buf.subarray(off), () => resolve()));
}

/**
 * The last log line's write. Lines go out in order (a stream, once taken,
 * takes every later line), so it settles after all earlier ones: the exit
 * waits for it.
 */
let stderrWritten: Promise<void> = Promise.resolve();

function writeStderr(text: string): void {
  stderrWritten = writeFd(2, text);
}

/**
 * Once the answer and the log lines are out, the process exits at once
 * rather than letting Node tear down its environment and V8's heap, which
 * cost a cold ADD about 4 ms of CPU and 10 ms of wall time (bench/
 * sea-startup.js). Nothing else is pending then: the handler awaits all its
 * work. The timer is the backstop for a non-blocking stdout or stderr whose
 * reader stopped reading (a blocking one holds the write itself, as it held
 * Go's plugins); an answer it cuts off makes the exit code 1.
 */
function exitAfterAnswer(answer: Buffer, logsWritten: () => Promise<void>): void {
  let answered = false;
  setTimeout(() => {
    if (!answered) process.exitCode = 1;
    process.exit();
  }, 2000).unref();
  const answer$ = writeFd(1, answer).then(() => {
    answered = true;
  });
  void Promise.all([answer$, logsWritten().then(() => stderrWritten)]).then(() => process.exit());
}

export async function main(): Promise<void> {
  // The same exact match runPlugin's parseCommand makes.
  if (process.env.CNI_COMMAND === 'VERSION') {
    await answerVersion();
    return;
  }
  // The shim's Go runtime starts on a thread of its own once loaded: loaded
  // first, it is ready by the first netlink call instead of delaying it.
  if (NETLINK_COMMANDS.has(process.env.CNI_COMMAND ?? '')) (await import('../netlink/index.js')).preloadShim();
  const [{ handleCni, MAX_STDIN, stderrLine }, { logsWritten }] = await Promise.all([import('./handler.js'), import('./log.js')]);
  let stdin: Buffer;
  try {
    stdin = await readStdin(MAX_STDIN);
  } catch (err) {
    await writeFd(2, stderrLine('reading stdin failed', err));
    const cniErr = asCniError(err, ErrorCode.IOFailure);
    process.exitCode = 1;
    await writeFd(1, `${JSON.stringify(cniErr.toJSON(CURRENT_VERSION))}\n`);
    return;
  }
  const res = await handleCni({ env: process.env, stdin }, writeStderr);
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
  await writeFd(1, `${JSON.stringify(versionInfo(requested))}\n`);
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
