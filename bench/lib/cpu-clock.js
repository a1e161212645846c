// Exact CPU time for the benchmarks, from the kernel's scheduler clock
// (nanoseconds) instead of /proc's clock ticks. /proc/<pid>/stat rounds
// utime + stime to 10 ms ticks, so over a batch of 30 calls each figure
// read there is off by up to 0.33 ms per call, and a ratio built from
// three of them (caller, agent, reference) moved by ±5 % between runs of
// the same build for no other reason.
//
// A process's CPU, every thread, those that ended included, comes from
// clock_gettime() on its process CPU clock (MAKE_PROCESS_CPUCLOCK(pid,
// CPUCLOCK_SCHED), as clock_getcpuclockid(3) makes it), which Linux lets
// any process read; through koffi (the shim's loader), else from the ticks.
// (The called processes' own CPU comes from the driver: bench/driver.)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const CPUCLOCK_SCHED = 2;

function load() {
  try {
    const koffi = createRequire(import.meta.url)('koffi');
    const lib = koffi.load('libc.so.6');
    return {
      clockGettime: lib.func('int clock_gettime(int, _Out_ int64_t *ts)'),
    };
  } catch {
    return undefined;
  }
}
const libc = load();

const TICK_MS = 10; // USER_HZ = 100 on Linux

/** utime + stime (ms) of /proc/<pid>/stat: clock ticks. */
function procTicksMs(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS;
}

/** CPU time (ms) of process `pid` so far, every thread, those that ended included. */
export function processCpuMs(pid) {
  if (!libc) return procTicksMs(pid);
  const ts = new BigInt64Array(2);
  // clockid = (~pid << 3) | CPUCLOCK_SCHED, a negative int
  if (libc.clockGettime((~pid << 3) | CPUCLOCK_SCHED, ts) !== 0) return procTicksMs(pid);
  return Number(ts[0]) * 1e3 + Number(ts[1]) / 1e6;
}
