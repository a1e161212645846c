// Plugin logs go to stderr (stdout carries the CNI result) and, when the
// config names one, to a log file as well, since runtimes often drop a
// plugin's stderr. pino is imported only when a message passes the level:
// at the default level (warn) a healthy ADD or DEL never pays for loading it,
// and a plugin runs once per pod, so start-up is most of its cost. Messages
// logged while pino loads are queued and written in order; the pending
// import keeps the process alive until they are out.
import type pinoType from 'pino';
import { constants as fsc, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { clip } from '../cni/validate.js';
import { ensureDirSync, openRegularSync } from '../fs/guard.js';

const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity } as const;
type Level = keyof typeof LEVELS;
type Method = 'debug' | 'info' | 'warn' | 'error';
type LogFn = (fields: Record<string, unknown>, msg: string) => void;

export type PluginLogger = Record<Method, LogFn>;

function isLevel(level: string): level is Level {
  return Object.hasOwn(LEVELS, level);
}

/** Writes synchronously and never throws: logging must not change a call's outcome. */
function sink(fd: number, onError: (err: unknown) => void): pinoType.DestinationStream {
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
    return sink(fd, report);
  } catch (err) {
    report(err);
    return undefined;
  }
}

function build(pino: typeof pinoType, level: Level, logFile: string | undefined, bindings: Record<string, string>): pinoType.Logger {
  const streams: pinoType.StreamEntry[] = [{ level: level as pinoType.Level, stream: sink(2, () => undefined) }];
  const file = logFile ? openLogFile(logFile) : undefined;
  if (file) streams.push({ level: level as pinoType.Level, stream: file });
  return pino({ level, base: { plugin: 'tsflannel', ...bindings } }, pino.multistream(streams));
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
  let logger: pinoType.Logger | undefined;
  let loading: Promise<void> | undefined;
  const queue: [Method, Record<string, unknown>, string][] = [];
  const load = () =>
    import('pino').then(
      (mod) => {
        logger = build(mod.default, threshold, logFile, bindings);
        for (const [name, fields, msg] of queue.splice(0)) write(logger, name, fields, msg);
      },
      (err: unknown) => {
        for (const [name, , msg] of queue.splice(0)) process.stderr.write(`tsflannel ${name}: ${msg} (logger unavailable: ${String(err)})\n`);
      },
    );
  const at = (name: Method): LogFn => (fields, msg) => {
    if (LEVELS[name] < LEVELS[threshold]) return;
    if (logger) return write(logger, name, fields, msg);
    queue.push([name, fields, msg]);
    loading ??= load();
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
