// When an etcd agent renews its subnet lease. Thousands of agents started
// together (a DaemonSet rollout, a cluster power-on) would otherwise renew in
// the same second every interval, and after an etcd outage all retry at once.
// The schedule is a pure function of the round and a random draw, so the
// spread can be simulated for N agents and checked without waiting.

/** The first renewal after a lease is taken (or after an outage) falls anywhere in [FIRST_MIN, 1) × interval. */
const FIRST_MIN = 0.1;
/** Later renewals come after [1 − STEADY_JITTER, 1) × interval: never later than the interval, so the margin holds. */
const STEADY_JITTER = 0.2;

/**
 * Milliseconds until the next renewal. `round` 0 is the first renewal after
 * the lease was taken or after renewal failures: its phase is drawn across
 * the whole interval, which spreads agents that started in the same second.
 * Later rounds shorten the interval by up to 20 %, which keeps the phases
 * drifting apart instead of locking together again.
 */
export function renewalDelayMs(intervalMs: number, round: number, random: () => number = Math.random): number {
  const r = Math.min(Math.max(random(), 0), 1);
  const factor = round === 0 ? FIRST_MIN + (1 - FIRST_MIN) * r : 1 - STEADY_JITTER * r;
  return Math.max(1, Math.round(intervalMs * factor));
}

/** Renewal retries back off to at most this, or half the interval when that is shorter. */
const RETRY_MAX_MS = 30_000;
/** The first retry waits about this (or the cap when shorter), doubling after each failure. */
const RETRY_FIRST_MS = 1000;

/**
 * Milliseconds before renewal retry number `failures` (1, 2, ...) while etcd
 * cannot be reached: from 1 s doubling to min(30 s, interval / 2), ±25 %.
 * The lease still has its margin (an hour by default) to run, so there is
 * no hurry, and 5,000 agents retrying every 5 s would hit a recovering etcd
 * a thousand times a second. Short test TTLs keep short retries.
 */
export function renewalRetryMs(failures: number, intervalMs: number, random: () => number = Math.random): number {
  const cap = Math.min(RETRY_MAX_MS, intervalMs / 2);
  const base = Math.min(cap, RETRY_FIRST_MS * 2 ** Math.min(Math.max(failures, 1) - 1, 16));
  return Math.max(1, Math.round(base * (0.75 + 0.5 * Math.min(Math.max(random(), 0), 1))));
}

export interface RenewalSimulation {
  agents: number;
  intervalMs: number;
  durationMs: number;
  /** spread the agents' start (lease taken) over this many ms; 0: all in the same instant */
  startSpreadMs?: number;
  /** false: the fixed interval of an agent without jitter */
  jitter?: boolean;
  /** etcd down from..to: renewals in it fail and retry with `backoffMs` (default renewalRetryMs) */
  outage?: { fromMs: number; toMs: number };
  backoffMs?: (failures: number) => number;
  random?: () => number;
}

export interface RenewalLoad {
  /** renewal attempts (successful or not) per whole second of simulated time */
  perSecond: number[];
  peak: number;
  /** the second the peak fell in */
  peakSecond: number;
  mean: number;
  attempts: number;
}

/** Simulates every agent's renewal loop (as EtcdSubnetManager runs it) and counts the attempts per second. */
export function simulateRenewals(sim: RenewalSimulation): RenewalLoad {
  const random = sim.random ?? Math.random;
  const seconds = Math.ceil(sim.durationMs / 1000);
  const perSecond = new Array<number>(seconds).fill(0);
  const backoff = sim.backoffMs ?? ((f: number) => renewalRetryMs(f, sim.intervalMs, random));
  let attempts = 0;
  for (let a = 0; a < sim.agents; a++) {
    let t = (sim.startSpreadMs ?? 0) * random();
    let round = 0;
    let failures = 0;
    for (;;) {
      t += failures > 0 ? backoff(failures) : sim.jitter === false ? sim.intervalMs : renewalDelayMs(sim.intervalMs, round, random);
      if (t >= sim.durationMs) break;
      perSecond[Math.floor(t / 1000)]!++;
      attempts++;
      const down = sim.outage !== undefined && t >= sim.outage.fromMs && t < sim.outage.toMs;
      if (down) {
        failures++;
        continue;
      }
      round = failures > 0 ? 0 : round + 1;
      failures = 0;
    }
  }
  let peak = 0;
  let peakSecond = 0;
  perSecond.forEach((n, s) => {
    if (n > peak) {
      peak = n;
      peakSecond = s;
    }
  });
  return { perSecond, peak, peakSecond, mean: attempts / Math.max(1, seconds), attempts };
}

/** A seeded generator (mulberry32) for reproducible simulations. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
