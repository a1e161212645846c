// Waiting for the cluster to converge: one poll loop for every e2e suite.

/**
 * Polls `check` until it returns a value that is truthy, and resolves with that value. A check that throws counts as not
 * yet; on timeout the error names `what` and the last error seen.
 */
export async function eventually<T>(
  what: string,
  timeoutMs: number,
  check: () => T | false | undefined | null | Promise<T | false | undefined | null>,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? ` (last error: ${last.message})` : '';
      throw new Error(`not within ${timeoutMs} ms: ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** How long `check` took to pass, in ms (for the figures the suites report). */
export async function timeUntil(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>, intervalMs = 100): Promise<number> {
  const start = Date.now();
  await eventually(what, timeoutMs, async () => (await check()) || false, intervalMs);
  return Date.now() - start;
}

/**
 * Polls `probe` until it gives anything but undefined or false, and resolves with it; a throw ends the wait. On timeout the
 * error names `what`.
 */
export async function pollFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
