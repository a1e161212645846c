// Order statistics for latency samples.

/**
 * The p-th percentile (0..100) by linear interpolation between closest ranks
 * (the common "type 7" definition, as numpy and spreadsheets use), so the
 * median of an even sample is the mean of the two middle values.
 * @param {number[]} values
 * @param {number} p
 */
export function percentile(values, p) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

/** @param {number[]} values */
export function median(values) {
  return percentile(values, 50);
}

/**
 * @param {number[]} values
 * @returns {{ n: number, median: number, p95: number, min: number, max: number, mean: number }}
 */
export function summarize(values) {
  const n = values.length;
  return {
    n,
    median: median(values),
    p95: percentile(values, 95),
    min: n ? Math.min(...values) : NaN,
    max: n ? Math.max(...values) : NaN,
    mean: n ? values.reduce((a, b) => a + b, 0) / n : NaN,
  };
}

/** a / b, or NaN when b is 0 or either is not a number. */
export function ratio(a, b) {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN;
}
