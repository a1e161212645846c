// Plugin logs go to stderr (stdout carries the CNI result) and, when the
// config names one, to a log file as well, since runtimes often drop a
// plugin's stderr. pino is imported only when a message passes the level:
// at the default level (warn) a healthy ADD or DEL never pays for loading it,
// and a plugin runs once per pod, so start-up is most of its cost. Messages
// logged while pino loads are queued and written in order; the pending
// import keeps the process alive until they are out.
import { AsyncLocalStorage } from 'node:async_hooks';
import type pinoType from 'pino';
import { constants as fsc, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { clip } from '../cni/validate.js';
import { ensureDirSync, openRegularSync } from '../fs/guard.js';

/**
 * Where a call's stderr goes. The standalone plugin's is the process's fd 2;
 * a call the agent serves has its own, which the forwarder relays to the
 * runtime, so a log line reaches the same place on both paths.
 */
const callStderr = new AsyncLocalStorage<(text: string) => void>();

/** pino once loaded: a resident process (the agent's CNI workers) loads it up front. */
let pinoLoaded: typeof pinoType | undefined;

/** Loads of pino still under way, each holding queued lines; see logsWritten. */
const pendingLoads = new Set<Promise<void>>();

/**
 * Resolves once every line logged so far is written: lines queued while
 * pino loads are out when their load settles. The standalone plugin exits
 * as soon as this and its answer are done.
 */
export async function logsWritten(): Promise<void> {
  while (pendingLoads.size > 0) await Promise.all(pendingLoads);
}

/** Loads pino now, so loggers created later log synchronously. */
export async function preloadLogger(): Promise<void> {
  pinoLoaded ??= (await import('pino')).default;
}

/** Runs `fn` with log lines of loggers created inside it going to `sink`. */
export function withCallStderr<T>(sink: (text: string) => void, fn: () => Promise<T>): Promise<T> {
  return callStderr.run(sink, fn);
}

const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const;
type Level = keyof typeof LEVELS;
type Method = 'debug' | 'info' | 'warn' | 'error';
type LogFn = (fields: Record<string, unknown>, msg: string) => void;

export type PluginLogger = Record<Method, LogFn>;

function isLevel(level: string): level is Level {
  return Object.hasOwn(LEVELS, level);
}

/** Writes synchronously and never throws: logging must not change a call's outcome. */
function fdSink(fd: number, onError: (err: unknown) => void): pinoType.DestinationStream {
  return {
    write(text: string) {
      try {
        writeSync(fd, text);
      } catch (err) {
        onError(err);
      }
    },
  };
}

/**
 * The log file opened with the plugin's path guards: never blocks (a FIFO),
 * refuses what is not a regular file (a directory, /dev/full), and reports a
 * failure once on stderr. The call goes on without the file.
 */
function openLogFile(logFile: string): pinoType.DestinationStream | undefined {
  let reported = false;
  const report = (err: unknown) => {
    if (reported) return;
    reported = true;
    const reason = err instanceof Error ? err.message : String(err);
    try {
      writeSync(2, `tsflannel: logFile ${clip(logFile)} is not usable, logging to stderr only: ${clip(reason)}\n`);
    } catch {
      // stderr is gone too: nothing left to tell.
    }
  };
  try {
    ensureDirSync(dirname(logFile));
    const fd = openRegularSync(logFile, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, 0o640);
    return fdSink(fd, report);
  } catch (err) {
    report(err);
    return undefined;
  }
}

/**
 * One open descriptor per log file for the life of the process: the agent
 * serves thousands of calls, and a destination per call would leak one each.
 * A file that could not be opened is tried again by the next call.
 */
const logFiles = new Map<string, pinoType.DestinationStream>();

function logFileStream(path: string): pinoType.DestinationStream | undefined {
  let stream = logFiles.get(path);
  if (!stream) {
    stream = openLogFile(path);
    if (stream) logFiles.set(path, stream);
  }
  return stream;
}

function build(
  pino: typeof pinoType,
  level: Level,
  logFile: string | undefined,
  bindings: Record<string, string>,
  callSink: ((text: string) => void) | undefined,
): pinoType.Logger {
  const stderr = callSink ? callStream(callSink) : fdSink(2, () => undefined);
  const streams: pinoType.StreamEntry[] = [{ level: level as pinoType.Level, stream: stderr }];
  const file = logFile ? logFileStream(logFile) : undefined;
  if (file) streams.push({ level: level as pinoType.Level, stream: file });
  return pino({ level, base: { plugin: 'tsflannel', ...bindings } }, pino.multistream(streams));
}

/** A call's own stderr (the agent relays it to the runtime); never throws either. */
function callStream(write: (text: string) => void): pinoType.DestinationStream {
  return {
    write(text: string) {
      try {
        write(text);
      } catch {
        // the caller went away: nothing to tell it
      }
    },
  };
}

function write(logger: pinoType.Logger, name: Method, fields: Record<string, unknown>, msg: string): void {
  try {
    logger[name](fields, msg);
  } catch {
    // A serializer or stream failure must not fail the CNI call.
  }
}

export function createLogger(level: string, logFile: string | undefined, bindings: Record<string, string>): PluginLogger {
  const threshold: Level = isLevel(level) ? level : 'warn';
  const sink = callStderr.getStore();
  let logger: pinoType.Logger | undefined;
  let loading: Promise<void> | undefined;
  const queue: [Method, Record<string, unknown>, string][] = [];
  const load = () =>
    import('pino').then(
      (mod) => {
        logger = build(mod.default, threshold, logFile, bindings, sink);
        for (const [name, fields, msg] of queue.splice(0)) write(logger, name, fields, msg);
      },
      (err: unknown) => {
        for (const [name, , msg] of queue.splice(0)) (sink ?? ((t: string) => process.stderr.write(t)))(`tsflannel ${name}: ${msg} (logger unavailable: ${String(err)})\n`);
      },
    );
  const at = (name: Method): LogFn => (fields, msg) => {
    if (LEVELS[name] < LEVELS[threshold]) return;
    // Already loaded (a resident process): built at the first message, in
    // step, so every line is in the call's stderr before its answer goes out.
    if (!logger && pinoLoaded) logger = build(pinoLoaded, threshold, logFile, bindings, sink);
    if (logger) return write(logger, name, fields, msg);
    queue.push([name, fields, msg]);
    if (!loading) {
      const pending = load();
      loading = pending;
      pendingLoads.add(pending);
      void pending.finally(() => pendingLoads.delete(pending));
    }
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
