// tsflanneld's log lines: JSON with level names and ISO times by default,
// one readable line per event with --log-format text, secrets never shown.
import { describe, expect, it } from 'vitest';
import { createAgentLogger, textLine } from '../../../src/daemon/logging.js';

function capture(format: 'json' | 'text', level: 'info' | 'debug' = 'info') {
  const lines: string[] = [];
  const logger = createAgentLogger({ level, format, base: { node: 'n1' }, write: (l) => lines.push(l) });
  return { logger, lines };
}

describe('agent logs', () => {
  it('JSON: one object a line, level as a name, time as ISO-8601 UTC', () => {
    const { logger, lines } = capture('json');
    logger.info({ subnet: '10.244.1.0/24' }, 'acquired lease');
    logger.warn('careful');
    logger.debug('hidden at info');
    expect(lines).toHaveLength(2);
    const first = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(first).toMatchObject({ level: 'info', node: 'n1', subnet: '10.244.1.0/24', msg: 'acquired lease' });
    expect(first.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(JSON.parse(lines[1]!)).toMatchObject({ level: 'warn', msg: 'careful' });
    expect(lines.every((l) => l.endsWith('\n') && l.indexOf('\n') === l.length - 1)).toBe(true);
  });

  it('text: time, padded level, message, then key=value pairs, one line per event', () => {
    const { logger, lines } = capture('text');
    logger.info({ subnet: '10.244.1.0/24', remote: 3, ok: true }, 'acquired lease');
    logger.error({ err: new Error('etcd down\nsecond line'), reason: 'two words' }, 'resync failed');
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  acquired lease node=n1 subnet=10\.244\.1\.0\/24 remote=3 ok=true\n$/);
    expect(lines[1]).toMatch(/ ERROR resync failed node=n1 reason="two words" err="etcd down\\nsecond line"\n$/);
    expect(lines.join('').split('\n').filter(Boolean)).toHaveLength(2);
  });

  it('prints nested objects as compact JSON and passes a non-JSON line through', () => {
    expect(textLine('{"time":"t","level":"info","msg":"m","backendData":{"VNI":1}}')).toBe('t INFO  m backendData={"VNI":1}\n');
    expect(textLine('not json')).toBe('not json\n');
  });

  it('never prints a password, in either format', () => {
    for (const format of ['json', 'text'] as const) {
      const { logger, lines } = capture(format);
      logger.info({ password: 's3cret', etcd: { username: 'u', password: 's3cret' } }, 'connecting');
      expect(lines.join('')).not.toContain('s3cret');
      expect(lines.join('')).toContain('[redacted]');
    }
  });
});
