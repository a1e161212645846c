// The Coalescer: one change is delivered at once, a burst becomes few deliveries.
import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../../src/daemon/subnet/coalesce.js';

const tick = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('Coalescer', () => {
  it('delivers a single change on the next turn of the event loop, with every change made in the same turn', async () => {
    let delivered = 0;
    const c = new Coalescer(() => delivered++, 50);
    c.changed();
    c.changed();
    c.changed();
    expect(delivered).toBe(0);
    await tick();
    expect(delivered).toBe(1);
    expect(c.stats).toEqual({ deliveries: 1, changes: 3 });
  });

  it('holds changes that follow a delivery until the window after it ends, then delivers them together', async () => {
    const at: number[] = [];
    const c = new Coalescer(() => at.push(performance.now()), 80);
    c.changed();
    await tick();
    const first = at[0]!;
    for (let i = 0; i < 100; i++) {
      c.changed();
      if (i % 10 === 0) await sleep(2);
    }
    const spread = performance.now() - first;
    await sleep(150);
    // Normally two deliveries; a loaded machine stretching the loop past the window adds one per window.
    expect(at.length).toBeGreaterThanOrEqual(2);
    expect(at.length).toBeLessThanOrEqual(2 + Math.ceil(spread / 80));
    expect(at[1]! - first).toBeGreaterThanOrEqual(75);
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(75);
    expect(c.stats.changes).toBe(101);
  });

  it('counts the window from the end of a slow delivery', async () => {
    const at: number[] = [];
    const c = new Coalescer(() => {
      at.push(performance.now());
      const until = performance.now() + 60;
      while (performance.now() < until);
    }, 40);
    c.changed();
    await tick();
    c.changed();
    await sleep(200);
    expect(at).toHaveLength(2);
    // 60 ms of delivery, then the 40 ms window.
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(95);
  });

  it('flush delivers pending changes now; cancel drops the schedule but keeps them pending', async () => {
    let delivered = 0;
    const c = new Coalescer(() => delivered++, 1000);
    c.changed();
    c.cancel();
    await tick();
    expect(delivered).toBe(0);
    c.flush();
    expect(delivered).toBe(1);
    c.flush();
    expect(delivered).toBe(1);
  });

  it('reset forgets pending changes a re-list already delivered: no extra delivery, none counted', async () => {
    let delivered = 0;
    const c = new Coalescer(() => delivered++, 1000);
    c.changed();
    c.changed();
    c.reset();
    await tick();
    c.flush();
    expect(delivered).toBe(0);
    expect(c.stats).toEqual({ deliveries: 0, changes: 0 });
  });
});
