// Timed process runs. The clock starts right before spawn() and stops at the
// child's 'exit' event, so a figure covers process creation, the program's
// whole run and its exit, and nothing the caller prepared beforehand.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })) || 100;

/**
 * CPU time (user + system, ms) of this process's finished children so far,
 * from /proc/self/stat cutime + cstime. It counts in clock ticks (10 ms), so
 * it is only meaningful summed over many runs, but unlike wall time it does
 * not grow when other work competes for the CPUs.
 */
export function childCpuMs() {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  // Fields after "(comm)": state is field 3, cutime 16, cstime 17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK;
}

/**
 * @typedef {{ cmd: string, args?: string[], env?: Record<string, string>, stdin?: string, cwd?: string }} Job
 * @typedef {{ ms: number, code: number | null, signal: string | null, stdout: string, stderr: string }} JobResult
 */

/**
 * Runs one process, feeding `stdin` and collecting its output.
 * @param {Job} job
 * @returns {Promise<JobResult>}
 */
export function timedSpawn(job) {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let exit = null;
    const start = process.hrtime.bigint();
    const child = spawn(job.cmd, job.args ?? [], {
      env: job.env ?? process.env,
      cwd: job.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child.on('exit', (code, signal) => {
      exit = { ms: Number(process.hrtime.bigint() - start) / 1e6, code, signal };
    });
    child.on('error', reject);
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    // 'close' follows 'exit' once the pipes drained: only then is the output complete.
    child.on('close', (code, signal) => {
      const e = exit ?? { ms: Number(process.hrtime.bigint() - start) / 1e6, code, signal };
      resolve({ ...e, stdout, stderr });
    });
    // A child that exits without reading stdin (e.g. /bin/true) makes write fail with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(job.stdin ?? '');
  });
}

/**
 * Runs jobs with at most `concurrency` in flight, in order, and returns the
 * results in job order plus the wall time and children's CPU time of the
 * whole batch. With one caller each result also carries its own cpuMs.
 * @param {Job[]} jobs
 * @param {number} concurrency
 * @returns {Promise<{ results: (JobResult & { cpuMs?: number })[], wallMs: number, cpuMs: number }>}
 */
export async function runPool(jobs, concurrency) {
  const results = new Array(jobs.length);
  const serial = concurrency <= 1;
  let next = 0;
  const cpu0 = childCpuMs();
  const start = process.hrtime.bigint();
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      const before = serial ? childCpuMs() : 0;
      results[i] = await timedSpawn(jobs[i]);
      if (serial) results[i].cpuMs = childCpuMs() - before;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, jobs.length)) }, worker));
  return { results, wallMs: Number(process.hrtime.bigint() - start) / 1e6, cpuMs: childCpuMs() - cpu0 };
}
