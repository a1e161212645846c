// Runs the real bin/tsflannel exactly as a runtime does: CNI_* env, the
// network config on stdin, inside a node netns.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const PLUGIN_BIN = fileURLToPath(new URL('../../bin/tsflannel', import.meta.url));

/** A dual-stack node's subnet file, as flanneld writes it. */
export const DUAL_ENV = [
  'FLANNEL_NETWORK=10.244.0.0/16',
  'FLANNEL_SUBNET=10.244.1.1/24',
  'FLANNEL_IPV6_NETWORK=fd00:10:244::/56',
  'FLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64',
  'FLANNEL_MTU=1450',
  'FLANNEL_IPMASQ=true',
  '',
].join('\n');
/** An IPv6-only node's subnet file: flanneld with EnableIPv4 false writes no IPv4 lines at all. */
export const V6_ONLY_ENV = 'FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:2::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

/** A host-local lease file's name is its address (either family); the store's other files are not. */
export const isLeaseFile = (f: string): boolean => /^[0-9.]+$/.test(f) || f.includes(':');

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
