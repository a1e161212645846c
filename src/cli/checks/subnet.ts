// This node's lease and where it shows: the subnet manager's record, the
// subnet file the plugin reads, and cni0's gateway address.
import { subnetOf } from '../../node/state.js';
import { cidrContainsIp, gatewayCidr, parseCidr, parseIp } from '../../net/ip.js';
import { count, pass, problem, skip, type CheckResult, type DoctorInputs, type Facts } from './types.js';

const RESTART_AGENT = 'restart tsflanneld on this node: it rewrites the file from its lease (never edit it by hand)';

function humanTtl(seconds: number): string {
  if (seconds < 0) return 'expired';
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(seconds % 60).padStart(2, '0')}s`;
}

export function checkSubnetFile(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'subnet-file';
  const { subnetFile: file, vxlan } = inputs.state;
  if (!file.exists) {
    return problem(
      id,
      'fail',
      `${file.path} does not exist: pods cannot be added`,
      'tsflanneld writes it once it holds a lease: check that it runs and read its log (podCIDR not assigned? etcd unreachable? RBAC?)',
    );
  }
  if (!file.env) return problem(id, 'fail', `${file.path} does not parse: ${file.error ?? 'unknown error'}`, RESTART_AGENT);
  const env = file.env;
  const v4 = env.subnet ? `FLANNEL_SUBNET=${env.subnet} FLANNEL_NETWORK=${env.network}` : '';
  const v6 = env.ipv6Subnet ? `FLANNEL_IPV6_SUBNET=${env.ipv6Subnet} FLANNEL_IPV6_NETWORK=${env.ipv6Network ?? '?'}` : '';
  // An IPv6-only file has no IPv4 pair; a dual-stack one shows the IPv4 pair, as before.
  const found = v4 || v6 || `FLANNEL_SUBNET=${env.subnet} FLANNEL_NETWORK=${env.network}`;
  const wrong: string[] = [];
  const config = inputs.view.config;
  if (config && config.network !== env.network) {
    wrong.push(`FLANNEL_NETWORK ${env.network} is not the cluster network ${config.network} (${inputs.view.source} config)`);
  }
  const lease = facts.ownLease;
  if (lease && gatewayCidr(lease.subnet) !== env.subnet) {
    wrong.push(`FLANNEL_SUBNET ${env.subnet} does not match this node's lease ${lease.subnet} (want ${gatewayCidr(lease.subnet)})`);
  }
  const vxAddr = vxlan?.addresses.find((a) => a.endsWith('/32'));
  if (!lease && vxAddr && vxAddr.split('/')[0] !== subnetOf(env.subnet).split('/')[0]) {
    wrong.push(`FLANNEL_SUBNET ${env.subnet} does not match ${vxlan!.name}'s address ${vxAddr}`);
  }
  if (wrong.length > 0) return problem(id, 'fail', `${file.path}: ${wrong.join('; ')}`, RESTART_AGENT);
  let basis: string;
  if (lease) basis = `matches this node's lease ${lease.subnet}`;
  else if (facts.leases) basis = 'this node holds no lease to compare with (see lease)';
  else {
    const why = inputs.view.source === 'none' ? 'no lease source given' : 'lease source unreadable';
    basis = vxAddr ? `agrees with ${vxlan!.name}'s ${vxAddr} (${why})` : `nothing to compare it with (${why})`;
  }
  return pass(id, `${found} MTU=${env.mtu} IPMASQ=${env.ipMasq}; ${basis}`);
}

/** IPAM leases inside any of `cidrs` (addresses of an old node subnet). */
function podsIn(inputs: DoctorInputs, cidrs: string[]): DoctorInputs['state']['ipam']['pods'] {
  const nets = cidrs.map((c) => parseCidr(c, 4)).filter((n) => n !== undefined);
  return inputs.state.ipam.pods.filter((p) => {
    const ip = parseIp(p.ip, 4);
    return ip !== undefined && nets.some((n) => cidrContainsIp(n, ip));
  });
}

export function checkBridgeAddress(inputs: DoctorInputs): CheckResult {
  const id = 'bridge-address';
  const env = inputs.state.subnetFile.env;
  const br = inputs.state.bridge;
  if (!env) return skip(id, 'no usable subnet file to compare with (see subnet-file)');
  if (!br) return pass(id, 'no bridge yet: the first pod ADD creates it with FLANNEL_SUBNET\'s gateway');
  const want = env.subnet;
  const others = br.addresses.filter((a) => a !== want);
  const drain = `drain this node's pods, then: ip link set ${br.name} down && ip link delete ${br.name} (the next pod ADD recreates it), or set "forceAddress": true`;
  if (others.length > 0) {
    const stale = `"${br.name}" already has an IP address different from ${want}: ${others.join(', ')} (the node's subnet changed under it)`;
    const holders = podsIn(inputs, others);
    if (holders.length === 0) {
      // The plugin moves the gateway itself at the next ADD when no pod needs the old one.
      return problem(id, 'warn', `${stale}; no pod holds an old address, so the next pod ADD moves ${br.name} to ${want}`, 'nothing to do; or run a pod ADD now');
    }
    return problem(
      id,
      'fail',
      `${stale}; ${count(holders.length, 'pod')} still ${holders.length === 1 ? 'holds' : 'hold'} old addresses, so pod ADDs fail until ${holders.length === 1 ? 'it is' : 'they are'} deleted: ${holders.map((p) => p.containerId).join(', ')}`,
      `delete those pods (their addresses cannot move); the next pod ADD then moves ${br.name} to ${want}; or ${drain}`,
      holders.map((p) => `${p.ip}: container ${p.containerId}`),
    );
  }
  if (!br.addresses.includes(want)) {
    return problem(id, 'fail', `${br.name} has no address: its pods have no gateway`, `ip addr add ${want} dev ${br.name}, or ${drain}`);
  }
  if (!br.up) return problem(id, 'fail', `${br.name} is down: its pods are cut off`, `ip link set ${br.name} up`);
  return pass(id, `${br.name} has ${want} (FLANNEL_SUBNET), up, ${count(br.ports.length, 'port')}`);
}

export function checkLease(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'lease';
  const { view } = inputs;
  if (view.source === 'none') {
    return skip(id, 'no --etcd-endpoints or --kube-subnet-mgr given: checks that need the lease list use flannel.1\'s kernel state');
  }
  if (view.error) {
    const fix =
      view.source === 'etcd'
        ? 'check --etcd-endpoints and etcd itself (etcdctl endpoint health); tsflanneld needs the same endpoints'
        : 'check the kubeconfig / in-cluster credentials and that the API server answers';
    return problem(id, 'fail', `cannot read leases from ${view.origin}: ${view.error}`, fix);
  }
  if (view.source === 'kube') return checkKubeLease(inputs, facts);
  const ip = facts.ownPublicIP ?? '?';
  const mine = facts.ownCandidates;
  if (mine.length > 1) {
    return problem(
      id,
      'fail',
      `${mine.length} leases claim this node's public IP ${ip}: ${mine.map((l) => l.subnet).join(', ')} (nodes sharing one address, like Vagrant's 10.0.2.15?)`,
      'make every node advertise its own address: tsflanneld --iface <interface> or --public-ip, then delete the extra keys',
    );
  }
  const own = facts.ownLease;
  if (!own) {
    return problem(
      id,
      'fail',
      `no lease in ${view.origin} for this node's public IP ${ip}`,
      'tsflanneld takes the lease at start and keeps renewing it: check that it runs here, and its --iface / --public-ip',
    );
  }
  const ttl = view.ttl?.[own.subnet];
  const ttlText = ttl === undefined ? 'no TTL (reservation)' : ttl < 0 ? 'expired' : `expires in ${humanTtl(ttl)}`;
  return pass(id, `${own.subnet} held for ${own.publicIP} (key ${own.nodeName ?? own.subnet}, ${ttlText})`);
}

function checkKubeLease(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'lease';
  const node = inputs.view.node;
  if (!node?.found) {
    return problem(id, 'fail', `no Node named ${node?.name ?? '?'}`, 'pass --node-name (or set NODE_NAME) to this node\'s Kubernetes name');
  }
  if (!node.podCIDR) {
    return problem(
      id,
      'fail',
      `node ${node.name}: ${node.podCIDRReason ?? 'no pod CIDR'}`,
      `kube-controller-manager --allocate-node-cidrs=true --cluster-cidr=<Network>, or kubectl patch node ${node.name} -p '{"spec":{"podCIDR":"<a free /24>"}}'`,
    );
  }
  if (!facts.ownLease) {
    return problem(
      id,
      'fail',
      `node ${node.name} has podCIDR ${node.podCIDR} but no usable flannel annotations: ${node.leaseReason ?? 'unknown'}`,
      'tsflanneld publishes them at start: check that it runs here (and its RBAC: patch nodes/status)',
    );
  }
  const own = facts.ownLease;
  if (facts.ownPublicIP && own.publicIP !== facts.ownPublicIP) {
    return problem(
      id,
      'warn',
      `node ${node.name} advertises public IP ${own.publicIP}, but ${inputs.state.vxlan?.name ?? 'the tunnel'} sends from ${facts.ownPublicIP}`,
      'fine behind NAT (public-ip-overwrite); otherwise restart tsflanneld so it republishes its address',
    );
  }
  return pass(id, `node ${node.name} has podCIDR ${node.podCIDR} and advertises ${own.publicIP}`);
}
