// Plugin logs go to stderr (stdout carries the CNI result) and, when the
// config names one, to a log file as well, since runtimes often drop a
// plugin's stderr.
import pino, { type Logger } from 'pino';

export function createLogger(level: string, logFile: string | undefined, bindings: Record<string, string>): Logger {
  const streams: pino.StreamEntry[] = [{ level: level as pino.Level, stream: pino.destination({ fd: 2, sync: true }) }];
  if (logFile) {
    streams.push({ level: level as pino.Level, stream: pino.destination({ dest: logFile, sync: true, mkdir: true }) });
  }
  return pino({ level, base: { plugin: 'tsflannel', ...bindings } }, pino.multistream(streams));
}
