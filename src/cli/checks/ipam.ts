// The host-local store: leases whose pod is gone (the veth went with it)
// and how many addresses the node subnet has left.
import { count, pass, problem, skip, type CheckResult, type DoctorInputs } from './types.js';

export function checkIpamLeaks(inputs: DoctorInputs): CheckResult {
  const id = 'ipam-leaks';
  const ipam = inputs.state.ipam;
  if (!ipam.exists) return pass(id, `no IPAM store yet (${ipam.dir})`);
  if (ipam.error) return problem(id, 'warn', `cannot read ${ipam.dir}: ${ipam.error}`, 'run doctor as root; check --data-dir and --network');
  const leaked = ipam.pods.filter((p) => p.hostVeth !== undefined && !p.vethPresent);
  const legacy = ipam.pods.filter((p) => p.hostVeth === undefined);
  const notes = legacy.map((p) => `${p.ip}: legacy lease of ${p.containerId} without an interface name, cannot match it to a veth`);
  if (leaked.length > 0) {
    return problem(
      id,
      'warn',
      `${count(leaked.length, 'address', 'addresses')} leased to containers whose veth is gone: ${leaked.map((p) => p.ip).join(', ')}`,
      `the runtime's CNI DEL or GC frees them; once those pods are really gone: rm ${leaked.map((p) => `${ipam.dir}/${p.ip}`).slice(0, 3).join(' ')}${leaked.length > 3 ? ' ...' : ''}`,
      [...leaked.map((p) => `${p.ip}: container ${p.containerId} ${p.ifname ?? ''}, ${p.hostVeth} not found`), ...notes],
    );
  }
  return pass(id, `${count(ipam.pods.length, 'lease')} in ${ipam.dir}, each with its veth`, notes);
}

export function checkIpamCapacity(inputs: DoctorInputs): CheckResult {
  const id = 'ipam-capacity';
  const ipam = inputs.state.ipam;
  const env = inputs.state.subnetFile.env;
  if (!env) return skip(id, 'no usable subnet file: the pool is unknown (see subnet-file)');
  if (!ipam.exists) return pass(id, `no pod on this node yet; ${env.subnet} has its whole pool free`);
  if (ipam.total === undefined || ipam.free === undefined) {
    return problem(id, 'warn', `cannot count free addresses: ${ipam.error ?? 'unknown'}`, 'check --data-dir and --network');
  }
  const used = ipam.total - ipam.free;
  const text = `${ipam.free} of ${ipam.total} addresses free in ${env.subnet} (${used} leased)`;
  if (ipam.free === 0) {
    // Kubernetes mode: the node's subnet is its podCIDR, sized by the controller manager, not by SubnetLen.
    const larger = inputs.view.source === 'kube'
      ? 'give nodes larger podCIDRs (kube-controller-manager --node-cidr-mask-size, for new nodes)'
      : 'use a smaller SubnetLen (larger node subnets)';
    return problem(id, 'fail', `${text}: new pods on this node fail`, `free leaked addresses (see ipam-leaks), move pods away, or ${larger}`);
  }
  if (ipam.free < Math.max(1, Math.ceil(ipam.total * 0.1))) {
    return problem(id, 'warn', `${text}: nearly exhausted`, 'free leaked addresses (see ipam-leaks) or move pods away');
  }
  return pass(id, text);
}
