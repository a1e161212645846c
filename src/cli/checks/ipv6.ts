// The IPv6 overlay of a dual-stack or IPv6-only node: flannel-v6.<VNI> (or
// host-gw's IPv6 routes), one route, neighbour and FDB entry per remote
// node's IPv6 half, and flannel's masquerade rules in ip6tables or nft's
// `ip6 flannel-ipv6`. These checks run only on a node with an IPv6 subnet (or
// a flannel-v6 device left behind), so an IPv4-only node's report is as it was.
import { canonicalCidr, networkAddress, parseCidr } from '../../net/ip.js';
import { kernelPeers, linkByName, type NodeState } from '../../node/state.js';
import type { Lease } from '../../daemon/types.js';
import { count, pass, problem, skip, type CheckResult, type DoctorInputs, type Facts } from './types.js';

/** inner Ethernet 14 + outer IPv6 40 + UDP 8 + VXLAN 8 */
export const VXLAN_OVERHEAD_V6 = 70;

/** The node's IPv6 subnet, network form, from the subnet file: fd00:10:244:5::1/64 → fd00:10:244:5::/64. */
export function ownIpv6Subnet(state: NodeState): string | undefined {
  const gw = state.subnetFile.env?.ipv6Subnet;
  const c = gw ? parseCidr(gw, 6) : undefined;
  return c ? canonicalCidr(c) : undefined;
}

/** Remote leases with an IPv6 half (ours excluded by its IPv6 subnet). */
function remoteIpv6Leases(facts: Facts, own: string | undefined): Lease[] {
  return (facts.leases ?? []).filter((l) => l.ipv6Subnet && l.ipv6Subnet !== own && l.publicIPv6);
}

const RESTART = 'tsflanneld repairs it within --resync-period; if it does not, check that it runs with EnableIPv6 and look at its log';

export function checkIpv6Overlay(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'ipv6-overlay';
  const { state } = inputs;
  const v6 = state.ipv6;
  const own = ownIpv6Subnet(state);
  if (!v6) return skip(id, 'IPv4-only node');
  if (!own) {
    return v6.vxlan
      ? problem(id, 'warn', `${v6.vxlan.name} exists but the subnet file has no FLANNEL_IPV6_SUBNET (left from an earlier dual-stack run?)`, `ip link delete ${v6.vxlan.name} if IPv6 is off for good`)
      : skip(id, 'no FLANNEL_IPV6_SUBNET in the subnet file');
  }
  const remotes = remoteIpv6Leases(facts, own);
  if (facts.backend.type === 'host-gw') return checkHostGw6(state, remotes, own, facts);
  if (facts.backend.type !== 'vxlan') return skip(id, `${facts.backend.type} backend carries no IPv6 in tsflannel`);
  const vx = v6.vxlan;
  if (!vx) return problem(id, 'fail', `FLANNEL_IPV6_SUBNET is ${state.subnetFile.env?.ipv6Subnet} but there is no flannel-v6 VXLAN device`, RESTART);
  const wrong: string[] = [];
  const want = `${networkAddress(parseCidr(own, 6)!)}/128`;
  if (!vx.addresses.includes(want)) wrong.push(`address ${vx.addresses.join(', ') || 'none'}, want ${want}`);
  if (!vx.local.includes(':')) wrong.push(`local address ${vx.local || 'none'} is not IPv6`);
  if (vx.learning) wrong.push('learning is on');
  if (!vx.up) wrong.push('down');
  const under = linkByName(state, vx.dev);
  if (under && vx.mtu > under.mtu - VXLAN_OVERHEAD_V6) {
    wrong.push(`MTU ${vx.mtu} is above ${under.name}'s ${under.mtu} − ${VXLAN_OVERHEAD_V6} = ${under.mtu - VXLAN_OVERHEAD_V6}: full-size IPv6-encapsulated packets are lost`);
  }
  if (wrong.length > 0) return problem(id, 'fail', `${vx.name}: ${wrong.join('; ')}`, RESTART);
  const peers = kernelPeers(v6);
  const missing: string[] = [];
  if (facts.leases) {
    for (const l of remotes) {
      const who = l.nodeName ?? l.ipv6Subnet!;
      const p = peers.find((x) => x.subnet === l.ipv6Subnet);
      const direct = v6.routes.find((r) => r.dst === l.ipv6Subnet && r.gw === l.publicIPv6);
      if (direct) continue; // DirectRouting: a plain route via the peer's IPv6 address
      if (!p) missing.push(`${who}: no route to ${l.ipv6Subnet} on ${vx.name}`);
      else if (!p.neigh) missing.push(`${who}: no permanent neighbour for ${p.gateway}`);
      else if (!p.fdb || p.publicIP !== l.publicIPv6) missing.push(`${who}: FDB entry for ${p.mac ?? '?'} points at ${p.publicIP ?? 'nothing'}, want ${l.publicIPv6}`);
    }
  } else {
    for (const p of peers) if (!p.neigh || !p.fdb) missing.push(`${p.subnet}: route without ${p.neigh ? 'FDB entry' : 'permanent neighbour'}`);
  }
  if (missing.length > 0) {
    return problem(id, 'fail', `${count(missing.length, 'remote node')} without complete IPv6 entries on ${vx.name}`, RESTART, missing);
  }
  const n = facts.leases ? remotes.length : peers.length;
  return pass(id, `${vx.name} local ${vx.local} mtu ${vx.mtu} ${want} up; ${count(n, 'remote IPv6 subnet')} programmed${facts.leases ? ' (checked against the leases)' : ''}`);
}

function checkHostGw6(state: NodeState, remotes: Lease[], own: string, facts: Facts): CheckResult {
  const id = 'ipv6-overlay';
  const routes = state.ipv6!.routes;
  const missing = remotes
    .filter((l) => !routes.some((r) => r.dst === l.ipv6Subnet && r.gw === l.publicIPv6))
    .map((l) => `${l.nodeName ?? l.ipv6Subnet}: no route to ${l.ipv6Subnet} via ${l.publicIPv6}`);
  if (missing.length > 0) return problem(id, 'fail', `${count(missing.length, 'remote IPv6 subnet')} without a host-gw route`, RESTART, missing);
  const known = facts.leases ? `${count(remotes.length, 'remote IPv6 subnet')} routed via their PublicIPv6` : 'no lease source: remote subnets not compared';
  return pass(id, `host-gw IPv6 for ${own}: ${known}`);
}

export function checkIpv6Masquerade(inputs: DoctorInputs): CheckResult {
  const id = 'ipv6-masquerade';
  const env = inputs.state.subnetFile.env;
  if (!inputs.state.ipv6 || !env?.ipv6Subnet) return skip(id, 'IPv4-only node');
  if (!env.ipMasq) return pass(id, 'FLANNEL_IPMASQ=false: no IPv6 rules expected');
  const probe = inputs.ipv6Rules;
  if (!probe?.ok) return problem(id, 'warn', `cannot check the IPv6 masquerade rules: ${probe?.error ?? 'not read'}`, 'run doctor as root; install iptables (ip6tables) or nftables');
  const missing = probe.masqMissing ?? [];
  if (missing.length > 0) {
    return problem(
      id,
      'fail',
      `FLANNEL_IPMASQ=true but ${missing.length} of flannel's IPv6 masquerade rules are missing: pods reach the outside over IPv6 with their own addresses`,
      'tsflanneld reinstalls them within --resync-period (is it running with --ip-masq and EnableIPv6?), or restart it',
      missing.map((r) => `missing: ${r}`),
    );
  }
  const where = probe.mode === 'nftables' ? 'nftables table ip6 flannel-ipv6' : 'ip6tables FLANNEL-POSTRTG';
  return pass(id, `flannel's IPv6 masquerade rules are in place for ${ownIpv6Subnet(inputs.state)} in ${env.ipv6Network ?? '?'} (${where}; ff00::/8 excluded)`);
}
