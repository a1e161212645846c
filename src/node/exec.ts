// Running a program inside a node's network namespace, for what netlink
// does not cover (iptables, ping). Never rejects: callers report failures.
import { execFile } from 'node:child_process';

/** The argv prefix that runs a program inside `netns` (nothing when absent). */
export function netnsCommand(netns: string | undefined, argv: string[]): string[] {
  if (!netns) return argv;
  const named = /^\/(?:var\/)?run\/netns\/([^/]+)$/.exec(netns);
  if (named) return ['ip', 'netns', 'exec', named[1], ...argv];
  return ['nsenter', `--net=${netns}`, ...argv];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** why the program could not be started at all (ENOENT, EACCES, ...); absent when it ran, a timeout included */
  errno?: string;
}

/**
 * Runs argv (no shell), never rejects: a program that did not start or did
 * not exit on its own is code -1; `errno` tells the two apart (a missing
 * binary is not a probe that hung).
 */
export function run(argv: string[], timeoutMs = 10_000): Promise<RunResult> {
  const [file, ...args] = argv;
  return new Promise((resolve) => {
    execFile(file ?? '', args, { encoding: 'utf8', timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      const res: RunResult = { code, stdout, stderr: stderr || (err && typeof err.code !== 'number' ? err.message : '') };
      if (typeof err?.code === 'string') res.errno = err.code;
      resolve(res);
    });
  });
}
