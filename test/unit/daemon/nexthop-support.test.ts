// The backends' switch to plain gateway routes on a kernel without nexthop
// objects: off for good after the first report, logged once.
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { Writable } from 'node:stream';
import { NexthopSupport } from '../../../src/daemon/backend/common.js';

function capture(): { log: pino.Logger; lines: () => { level: number; msg: string }[] } {
  const out: string[] = [];
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { out.push(chunk.toString()); cb(); } });
  return { log: pino({ level: 'info' }, sink), lines: () => out.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string }) };
}

describe('NexthopSupport', () => {
  it('stays on while the kernel has nexthop objects, logs nothing', () => {
    const { log, lines } = capture();
    const s = new NexthopSupport(log);
    s.note(false);
    s.note(false);
    expect(s.enabled).toBe(true);
    expect(lines()).toEqual([]);
  });

  it('turns off for good at the first report of a kernel without them, and warns once', () => {
    const { log, lines } = capture();
    const s = new NexthopSupport(log);
    s.note(true);
    s.note(false);
    s.note(true);
    expect(s.enabled).toBe(false);
    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toMatchObject({ level: 40 });
    expect(lines()[0]!.msg).toMatch(/no nexthop objects.*plain gateway routes/);
  });
});
