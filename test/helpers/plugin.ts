// Runs the real bin/tsflannel exactly as a runtime does: CNI_* env, the
// network config on stdin, inside a node netns.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const PLUGIN_BIN = fileURLToPath(new URL('../../bin/tsflannel', import.meta.url));

export interface CniCall {
  command: string;
  /** node netns to run in (ip netns exec); absent = this namespace */
  nodeNs?: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  path?: string;
  stdin: string | object;
  extraEnv?: Record<string, string>;
  bin?: string;
}

export interface CniOutcome {
  code: number;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | undefined;
}

export function callPlugin(call: CniCall): Promise<CniOutcome> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: call.command };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifname !== undefined) env.CNI_IFNAME = call.ifname;
  if (call.args !== undefined) env.CNI_ARGS = call.args;
  env.CNI_PATH = call.path ?? '/opt/cni/bin';
  Object.assign(env, call.extraEnv);
  const bin = call.bin ?? PLUGIN_BIN;
  const [cmd, argv] = call.nodeNs ? ['ip', ['netns', 'exec', call.nodeNs, bin]] : [bin, []];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ code: code ?? -1, stdout, stderr, json });
    });
    child.stdin.end(typeof call.stdin === 'string' ? call.stdin : JSON.stringify(call.stdin));
  });
}
