// tsflanneld's logs on stderr. JSON (the default) is one object a line with
// level names and ISO-8601 times, for log collectors; `--log-format text` is
// one readable line per event for `kubectl logs`:
//   2026-11-29T11:20:03.120Z INFO  acquired lease subnet=10.244.1.0/24 node=n1
import { writeSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import type { LogFormat, LogLevel } from './options.js';

export interface AgentLoggerOptions {
  level: LogLevel;
  format: LogFormat;
  base?: Record<string, unknown>;
  /** where lines go; default fd 2 (stdout belongs to CNI results) */
  write?: (line: string) => void;
}

/** Fields that may carry secrets: never logged, whatever the level. */
const REDACT = ['password', '*.password', 'etcd.password', 'auth.password', 'credentials', '*.credentials'];

const writeStderr = (line: string): void => {
  writeSync(2, line);
};

function scalar(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

/** One JSON log object as a text line: time, level, message, then key=value pairs. */
export function textLine(json: string): string {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const { time, level, msg, err, ...rest } = obj;
  const parts = [String(time ?? ''), String(level ?? '').toUpperCase().padEnd(5), String(msg ?? '')];
  for (const [k, v] of Object.entries(rest)) parts.push(`${k}=${scalar(v)}`);
  if (err && typeof err === 'object') {
    const e = err as { message?: unknown; stack?: unknown };
    parts.push(`err=${scalar(e.message ?? err)}`);
  } else if (err !== undefined) {
    parts.push(`err=${scalar(err)}`);
  }
  return `${parts.join(' ')}\n`;
}

export function createAgentLogger(opts: AgentLoggerOptions): Logger {
  const write = opts.write ?? writeStderr;
  const stream = { write: opts.format === 'text' ? (s: string) => write(textLine(s)) : write };
  return pino(
    {
      level: opts.level,
      base: opts.base ?? {},
      formatters: { level: (label) => ({ level: label }) },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT, censor: '[redacted]' },
    },
    stream,
  );
}
