// The etcd lease renewal schedule: jittered so that thousands of agents
// started together do not renew in the same second, and never later than
// the renewal interval (the margin before expiry holds).
import { describe, expect, it } from 'vitest';
import { renewalDelayMs, renewalRetryMs, seededRandom, simulateRenewals } from '../../../src/daemon/subnet/renewal.js';

const MINUTE = 60_000;
const HOUR = 3_600_000;
const AGENTS = Number(process.env.TSF_RENEWAL_AGENTS ?? 5000);

describe('renewalDelayMs', () => {
  it('spreads the first renewal over 0.1 to 1 interval and later ones over 0.8 to 1, never beyond the interval', () => {
    expect(renewalDelayMs(MINUTE, 0, () => 0)).toBe(6_000);
    expect(renewalDelayMs(MINUTE, 0, () => 1)).toBe(MINUTE);
    expect(renewalDelayMs(MINUTE, 3, () => 0)).toBe(MINUTE);
    expect(renewalDelayMs(MINUTE, 3, () => 1)).toBe(48_000);
    const random = seededRandom(7);
    for (let i = 0; i < 10_000; i++) {
      const d = renewalDelayMs(MINUTE, i % 5, random);
      expect(d).toBeGreaterThanOrEqual(6_000);
      expect(d).toBeLessThanOrEqual(MINUTE);
    }
  });
});

describe('simulateRenewals', () => {
  it(`${AGENTS} agents started in the same second: without jitter all renew in one second, with it the per-second peak stays near the mean`, () => {
    const base = { agents: AGENTS, intervalMs: MINUTE, durationMs: HOUR, startSpreadMs: 1000 };
    const fixed = simulateRenewals({ ...base, jitter: false, random: seededRandom(1) });
    const jittered = simulateRenewals({ ...base, random: seededRandom(1) });
    process.stderr.write(
      `[renewal] ${AGENTS} agents, 60 s interval, 1 h: per-second peak ${fixed.peak} without jitter, ` +
        `${jittered.peak} with (mean ${jittered.mean.toFixed(1)}/s, ${(jittered.peak / jittered.mean).toFixed(2)}× the mean)\n`,
    );
    expect(fixed.peak).toBe(AGENTS);
    // Mean: one renewal per agent every 0.9 interval on average.
    expect(jittered.mean).toBeGreaterThan(AGENTS / 60);
    expect(jittered.mean).toBeLessThan((AGENTS / 60) * 1.2);
    expect(jittered.peak).toBeLessThan(jittered.mean * 2);
    expect(jittered.peak).toBeLessThan(AGENTS / 20);
  });

  it('during a 5-minute etcd outage the retries come at well under half the rate of a 5 s backoff cap, and the renewals after it spread over the interval again', () => {
    const base = { agents: AGENTS, intervalMs: MINUTE, durationMs: HOUR, startSpreadMs: 1000, outage: { fromMs: 20 * MINUTE, toMs: 25 * MINUTE } };
    const random = seededRandom(2);
    const r = simulateRenewals({ ...base, random });
    const old = seededRandom(2);
    // The retry schedule before: 100 ms doubling to 5 s, ±25 %.
    const before = simulateRenewals({ ...base, random: old, backoffMs: (f) => Math.min(5000, 100 * 2 ** Math.min(f - 1, 16)) * (0.75 + 0.5 * old()) });
    const after = r.perSecond.slice(27 * 60, 60 * 60);
    const steadyPeak = Math.max(...after);
    const steadyMean = after.reduce((a, b) => a + b, 0) / after.length;
    process.stderr.write(
      `[renewal] outage 20-25 min: peak ${r.peak}/s at ${r.peakSecond} s (5 s backoff cap: ${before.peak}/s); ` +
        `from 27 min on peak ${steadyPeak}/s (mean ${steadyMean.toFixed(1)}/s)\n`,
    );
    expect(r.peakSecond).toBeGreaterThanOrEqual(20 * 60);
    expect(r.peakSecond).toBeLessThan(26 * 60);
    expect(r.peak).toBeLessThan(before.peak / 2);
    expect(steadyPeak).toBeLessThan(steadyMean * 2);
  });

  it('retries a failed renewal from about 1 s doubling to half the interval (at most 30 s), ±25 %', () => {
    expect(renewalRetryMs(1, MINUTE, () => 0.5)).toBe(1000);
    expect(renewalRetryMs(3, MINUTE, () => 0.5)).toBe(4000);
    expect(renewalRetryMs(20, MINUTE, () => 0.5)).toBe(30_000);
    expect(renewalRetryMs(20, MINUTE, () => 1)).toBe(37_500);
    expect(renewalRetryMs(20, 10 * MINUTE, () => 0.5)).toBe(30_000);
    // A short test TTL keeps short retries: interval 1 s, so at most 0.5 s.
    expect(renewalRetryMs(1, 1000, () => 0.5)).toBe(500);
    expect(renewalRetryMs(9, 1000, () => 0)).toBe(375);
  });

  it('is reproducible with a seeded random source', () => {
    const sim = { agents: 100, intervalMs: MINUTE, durationMs: 10 * MINUTE };
    expect(simulateRenewals({ ...sim, random: seededRandom(3) }).perSecond).toEqual(simulateRenewals({ ...sim, random: seededRandom(3) }).perSecond);
  });
});
