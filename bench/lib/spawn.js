// Timed process runs. The clock starts right before spawn() and stops at the
// child's 'exit' event, so a figure covers process creation, the program's
// whole run and its exit, and nothing the caller prepared beforehand.
import { spawn } from 'node:child_process';

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
