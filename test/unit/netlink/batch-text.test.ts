// batch.apply's request text: one line per entry in the field order the
// shim reads (native/tsfnl/batch_text.go; its Go test decodes this very
// text, native/tsfnl/testdata/batch-sample.txt).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { encodeBatch, type BatchEntry } from '../../../src/netlink/batch.js';

/** The text the shim's Go test decodes too. */
const SAMPLE = readFileSync(fileURLToPath(new URL('../../../native/tsfnl/testdata/batch-sample.txt', import.meta.url)), 'utf8').replace(/\n$/, '');

describe('encodeBatch', () => {
  it('writes a netns header and one line of ten fields per entry, every kind, in the shim\'s order', () => {
    const entries: BatchEntry[] = [
      { kind: 'neigh.set', dev: 'flannel.1', ip: '10.1.2.0', mac: '6a:00:00:00:01:02', group: 3 },
      { kind: 'fdb.append', dev: 'flannel.1', mac: '6a:00:00:00:01:02', dst: '172.16.0.2', group: 3 },
      { kind: 'route.replace', dev: 'flannel.1', dst: '10.1.2.0/24', gw: '10.1.2.0', onlink: true, nexthop: true, group: 3 },
      { kind: 'route.del', dev: 'eth0', dst: '10.9.0.0/16', gw: '192.168.1.9', metric: 77 },
      { kind: 'nexthop.del', dev: 'flannel.1', nhid: 12 },
      { kind: 'neigh.set', dev: 'my dev', ip: '-' },
    ];
    expect(encodeBatch(entries, { netns: '/var/run/netns/a b' })).toBe(SAMPLE);
  });

  it('keeps a value that would split a field or a line, or read as an escape or as absent, intact by percent-encoding it', () => {
    const text = encodeBatch([{ kind: 'neigh.del', dev: 'a\nb', ip: '10.0.0.1 ', mac: '50%' }]);
    const [head, line, ...rest] = text.split('\n');
    expect(head).toBe('{"netns":""}');
    expect(rest).toEqual([]);
    const fields = line!.split(' ');
    expect(fields).toHaveLength(10);
    expect(fields.map((f) => (f === '-' ? '' : decodeURIComponent(f))).slice(0, 7)).toEqual(['neigh.del', 'a\nb', '0', '', '', '10.0.0.1 ', '50%']);
    // a NUL would end the shim's C string early, dropping the later entries unnoticed; a tab or DEL is as odd
    const odd = encodeBatch([{ kind: 'neigh.del', dev: 'a\0b', ip: '10.0.0.1\t' }, { kind: 'neigh.del', dev: '\u007f', ip: '10.0.0.2' }]);
    expect(odd).not.toMatch(/[\0\t\u007f]/);
    expect(odd.split('\n').slice(1).map((l) => decodeURIComponent(l.split(' ')[1]!))).toEqual(['a\0b', '\u007f']);
    // a lone surrogate cannot be percent-encoded: sent as a bad escape, which the shim refuses
    expect(encodeBatch([{ kind: 'neigh.del', dev: 'x\ud800 y', ip: '10.0.0.1' }]).split('\n')[1]!.split(' ')[1]).toBe('%');
  });
});
