// Building CNI invocations as jobs for spawn.js / ns-driver.js: the CNI_*
// environment a runtime sets and the network config on stdin.
import { writeFileSync } from 'node:fs';

/**
 * @typedef {{ command: string, containerId?: string, netns?: string, ifname?: string, args?: string, path?: string }} CniEnvSpec
 */

/**
 * The environment of one plugin call; only PATH is inherited, as with a
 * runtime, so nothing from the bench's own environment leaks in.
 * @param {CniEnvSpec} spec
 * @returns {Record<string, string>}
 */
export function cniEnv(spec) {
  const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: spec.command };
  if (spec.containerId !== undefined) env.CNI_CONTAINERID = spec.containerId;
  if (spec.netns !== undefined) env.CNI_NETNS = spec.netns;
  if (spec.ifname !== undefined) env.CNI_IFNAME = spec.ifname;
  if (spec.args !== undefined) env.CNI_ARGS = spec.args;
  env.CNI_PATH = spec.path ?? '/usr/lib/cni';
  return env;
}

/**
 * A plugin call as a job: the binary executed directly, as runtimes do.
 * @param {string} bin
 * @param {CniEnvSpec} spec
 * @param {object | string} conf
 * @returns {import('./spawn.js').Job}
 */
export function pluginJob(bin, spec, conf) {
  return { cmd: bin, args: [], env: cniEnv(spec), stdin: typeof conf === 'string' ? conf : JSON.stringify(conf) };
}

/**
 * A failed call as one line: exit code, the CNI error if stdout had one, else stderr.
 * @param {import('./spawn.js').JobResult} r
 */
export function describeFailure(r) {
  let detail = r.stderr.trim().split('\n').slice(-3).join(' / ');
  try {
    const j = JSON.parse(r.stdout);
    if (j && typeof j === 'object' && 'code' in j) detail = `CNI error ${j.code}: ${j.msg}${j.details ? ` (${j.details})` : ''}`;
  } catch {
    // stdout was not JSON; stderr says more
  }
  return `exit ${r.code}${r.signal ? ` signal ${r.signal}` : ''}: ${detail}`;
}

/** A flanneld subnet.env at `file` for the 10.244.0.0/16 cluster network: this node's `subnet` (its gateway address), MTU 1450, masquerade on. */
export function writeSubnetEnv(file, subnet = '10.244.1.1/24') {
  writeFileSync(file, `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${subnet}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n`);
}
