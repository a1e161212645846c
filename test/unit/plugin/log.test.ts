import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, logsWritten } from '../../../src/plugin/log.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 200));
}

describe('plugin logger', () => {
  it('writes messages at or above the level to the log file, in order, as pino JSON', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-log-'));
    dirs.push(dir);
    const file = join(dir, 'plugin.log');
    const log = createLogger('info', file, { containerId: 'c1' });
    log.debug({ n: 0 }, 'dropped');
    log.info({ n: 1 }, 'first');
    log.warn({ n: 2 }, 'second');
    await settle();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.msg)).toEqual(['first', 'second']);
    expect(lines[0]).toMatchObject({ level: 30, n: 1, containerId: 'c1', plugin: 'tsflannel' });
  });

  it('logsWritten resolves only once lines logged while pino loads are in the file (the standalone exits right after)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-log-'));
    dirs.push(dir);
    const file = join(dir, 'plugin.log');
    const log = createLogger('warn', file, {});
    log.warn({ n: 1 }, 'queued');
    log.error({ n: 2 }, 'queued too');
    // Still loading pino: nothing is written yet.
    expect(existsSync(file)).toBe(false);
    await logsWritten();
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.msg)).toEqual(['queued', 'queued too']);
    // Nothing pending: resolves at once.
    await expect(logsWritten()).resolves.toBeUndefined();
  });

  it('does not even open the log file when nothing passes the level', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-log-'));
    dirs.push(dir);
    const file = join(dir, 'plugin.log');
    const log = createLogger('warn', file, {});
    log.info({}, 'quiet');
    await settle();
    expect(existsSync(file)).toBe(false);
  });
});
