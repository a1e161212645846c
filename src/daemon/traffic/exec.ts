// Runs iptables / nft without a shell: an argument array, optional stdin,
// optional netns prefix (tests point the production code into a node netns).
import { spawn } from 'node:child_process';
import type { RunResult, ToolRunner } from './types.js';

/** exit code -2: the tool is not installed. */
export const NOT_INSTALLED = -2;

export function toolCommand(tool: string, netns?: string): string[] {
  return netns ? ['ip', 'netns', 'exec', netns, tool] : [tool];
}

export function execRunner(command: string[], timeoutMs = 60_000): ToolRunner {
  const [file, ...prefix] = command;
  if (!file) throw new Error('empty command');
  return (args, input) =>
    new Promise<RunResult>((resolve) => {
      const child = spawn(file, [...prefix, ...args], { stdio: ['pipe', 'pipe', 'pipe'], timeout: timeoutMs });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.once('error', (err: NodeJS.ErrnoException) => {
        resolve({ code: err.code === 'ENOENT' ? NOT_INSTALLED : -1, stdout, stderr: stderr || err.message });
      });
      child.once('close', (code, signal) => {
        resolve({ code: code ?? -1, stdout, stderr: stderr || (signal ? `killed by ${signal}` : '') });
      });
      child.stdin.on('error', () => undefined);
      child.stdin.end(input ?? '');
    });
}

/** The tool is absent (directly, or behind `ip netns exec`, which exits 255). */
export function notInstalled(res: RunResult): boolean {
  return res.code === NOT_INSTALLED || (res.code === 255 && /exec of .* failed/i.test(res.stderr));
}
