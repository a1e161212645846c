// Host settings the overlay depends on: forwarding, reverse-path filtering,
// the FORWARD chain and flannel's masquerade rules.
import { pass, problem, skip, type CheckResult, type DoctorInputs, type Facts, type IptablesProbe } from './types.js';
import type { IptablesSnapshot } from '../../node/iptables.js';

/**
 * Forwarding for each family the node's subnet file has: IPv4 unless the
 * node is IPv6-only, and net.ipv6.conf.all.forwarding when it has an IPv6
 * subnet (the plugin sets both at ADD; anything may reset them later).
 */
export function checkIpForward(inputs: DoctorInputs): CheckResult {
  const id = 'ip-forward';
  const env = inputs.state.subnetFile.env;
  const keys: { key: string; value: string | null | undefined; what: string }[] = [];
  if (!env || env.subnet || !env.ipv6Subnet) {
    keys.push({ key: 'net.ipv4.ip_forward', value: inputs.state.sysctl.ipForward, what: 'between pods, flannel.1 and the outside' });
  }
  if (env?.ipv6Subnet) {
    keys.push({ key: 'net.ipv6.conf.all.forwarding', value: inputs.state.sysctl.ipv6Forward, what: 'the pods\' IPv6 traffic' });
  }
  const off = keys.filter((k) => k.value !== '1' && k.value !== null && k.value !== undefined);
  if (off.length > 0) {
    return problem(
      id,
      'fail',
      off.map((k) => `${k.key} = ${k.value}: the node does not route ${k.what}`).join('; '),
      `sysctl -w ${off.map((k) => `${k.key}=1`).join(' ')} (persist it in /etc/sysctl.d/)`,
    );
  }
  const unread = keys.filter((k) => k.value !== '1');
  if (unread.length > 0) return problem(id, 'warn', `cannot read ${unread.map((k) => k.key).join(', ')}`, 'run doctor as root in the node\'s network namespace');
  const ipv6Only = env !== undefined && !env.subnet && Boolean(env.ipv6Subnet);
  return pass(id, `${keys.map((k) => `${k.key} = 1`).join(', ')}${ipv6Only ? ' (IPv6-only node: IPv4 forwarding not needed)' : ''}`);
}

const RP_MODES: Record<number, string> = { 0: 'off', 1: 'strict', 2: 'loose' };

/** The kernel applies the larger of conf.all and conf.<interface>. */
export function effectiveRpFilter(all: number | null, own: number | null): number | null {
  if (all === null && own === null) return null;
  return Math.max(all ?? 0, own ?? 0);
}

export function checkRpFilter(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'rp-filter';
  const rp = inputs.state.sysctl.rpFilter;
  const all = rp.all ?? null;
  const names = [inputs.state.vxlan?.name ?? facts.vxlanName, inputs.state.bridge?.name].filter((n): n is string => Boolean(n));
  const strict: string[] = [];
  const seen: string[] = [`all=${all ?? '?'}`];
  for (const name of names) {
    if (!(name in rp)) continue;
    const eff = effectiveRpFilter(all, rp[name] ?? null);
    seen.push(`${name}=${rp[name] ?? '?'} (effective ${eff === null ? '?' : (RP_MODES[eff] ?? eff)})`);
    if (eff === 1) strict.push(name);
  }
  if (all === 1 && strict.length === 0) strict.push('all');
  if (strict.length > 0) {
    const keys = [...new Set(['all', ...strict.filter((n) => n !== 'all')])].map((n) => `net.ipv4.conf.${n}.rp_filter=2`);
    return problem(
      id,
      'warn',
      `strict reverse-path filtering on ${strict.join(', ')}: packets whose return path differs (several interfaces, DirectRouting, NATed VTEP) are dropped silently`,
      `sysctl -w ${keys.join(' ')} (loose mode)`,
      [`rp_filter: ${seen.join(', ')}`],
    );
  }
  return pass(id, `rp_filter ${seen.join(', ')}`);
}

/** FORWARD rules that by themselves accept the pod network in both directions. */
function acceptsNetwork(lines: string[], network: string): boolean {
  const accepts = lines.filter((l) => /-j ACCEPT\b/.test(l) && !/ ! -[sd] /.test(l) && !/ -[io] /.test(l));
  const from = accepts.some((l) => l.includes(`-s ${network} `) && !/ -d /.test(l));
  const to = accepts.some((l) => l.includes(`-d ${network} `) && !/ -s /.test(l));
  return from && to;
}

export function checkForwardPolicy(inputs: DoctorInputs, facts: Facts): CheckResult {
  return forwardPolicyResult({ id: 'forward-policy', tool: 'iptables', snapshot: inputs.state.iptables, network: facts.network, probe: inputs.iptables });
}

/**
 * The same question for IPv6, on a node with an IPv6 subnet: ip6tables has a
 * FORWARD chain of its own (Docker, for one, sets its policy to DROP), and
 * the agent's FLANNEL-FWD there is what lets the pods' IPv6 traffic through.
 */
export function checkIpv6Forward(inputs: DoctorInputs): CheckResult {
  const id = 'ipv6-forward';
  const env = inputs.state.subnetFile.env;
  if (!inputs.state.ipv6 || !env?.ipv6Subnet) return skip(id, 'IPv4-only node');
  const probe = inputs.ipv6Rules;
  if (!probe?.ok) return problem(id, 'warn', `cannot check the IPv6 forward rules: ${probe?.error ?? 'not read'}`, 'run doctor as root; install iptables (ip6tables) or nftables');
  return forwardPolicyResult({ id, tool: 'ip6tables', snapshot: inputs.state.ipv6.ip6tables, network: env.ipv6Network, probe });
}

interface ForwardView {
  id: 'forward-policy' | 'ipv6-forward';
  tool: 'iptables' | 'ip6tables';
  snapshot: IptablesSnapshot | undefined;
  network: string | undefined;
  probe: IptablesProbe;
}

function forwardPolicyResult({ id, tool, snapshot: ipt, network, probe }: ForwardView): CheckResult {
  if (!ipt || !ipt.ok) return problem(id, 'warn', `cannot read ${tool}: ${ipt?.error ?? 'not read'}`, 'run doctor as root; install iptables');
  const policy = ipt.forwardPolicy ?? '?';
  // IPv4's messages stay as they were; IPv6's name their tool
  const chain = `${tool === 'iptables' ? '' : 'ip6tables '}FORWARD`;
  if (policy === 'ACCEPT') return pass(id, `${chain} policy ACCEPT`);
  if (!network) return problem(id, 'warn', `FORWARD policy ${policy} and the cluster network is unknown`, 'give the subnet file or a lease source so doctor knows the network');
  const accept = `${tool} -A FORWARD -s ${network} -j ACCEPT && ${tool} -A FORWARD -d ${network} -j ACCEPT`;
  if (probe.mode === 'nftables') {
    if (acceptsNetwork(ipt.forward, network)) return pass(id, `FORWARD policy ${policy}; FORWARD rules accept ${network}`);
    // an accept in table ip flannel-ipv4 ends only that chain; iptables' DROP policy still drops
    return problem(
      id,
      'fail',
      `FORWARD policy ${policy} in ${tool} drops pod traffic through this node: the nftables forward chain's accept does not override it`,
      `use iptables mode (EnableNFTables: false), or: ${accept}`,
    );
  }
  if (probe.forwardMissing.length === 0) return pass(id, `FORWARD policy ${policy}; FLANNEL-FWD accepts ${network}`);
  if (acceptsNetwork(ipt.forward, network)) return pass(id, `FORWARD policy ${policy}; FORWARD rules accept ${network}`);
  return problem(
    id,
    'fail',
    `${chain} policy ${policy} and nothing accepts the pod network ${network}: pod traffic through this node is dropped`,
    `restart tsflanneld (it installs FLANNEL-FWD), or: ${accept}`,
    probe.forwardMissing.map((r) => `missing: ${r}`),
  );
}

export function checkMasquerade(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'masquerade';
  const env = inputs.state.subnetFile.env;
  if (!env) return skip(id, 'no usable subnet file: FLANNEL_IPMASQ unknown (see subnet-file)');
  if (!env.ipMasq) return pass(id, 'FLANNEL_IPMASQ=false: tsflanneld runs without --ip-masq, no rules expected');
  const probe = inputs.iptables;
  if (!probe.ok) return problem(id, 'warn', `cannot check the masquerade rules: ${probe.error ?? 'iptables failed'}`, 'run doctor as root; install iptables');
  const missing = probe.masqMissing ?? [];
  if (missing.length > 0) {
    return problem(
      id,
      'fail',
      `FLANNEL_IPMASQ=true but ${missing.length} of flannel's masquerade rules are missing: pods reach the outside with their own addresses (replies never come back)`,
      'tsflanneld reinstalls them within --resync-period (is it running with --ip-masq?), or restart it',
      missing.map((r) => `missing: ${r}`),
    );
  }
  const lines = inputs.state.iptables?.flannelMasq ?? [];
  const expected = 6;
  if (lines.length > expected) {
    return problem(
      id,
      'warn',
      `FLANNEL-POSTRTG holds ${lines.length - expected} rule(s) besides flannel's (an earlier subnet?)`,
      'restart tsflanneld: it rebuilds the chain in order',
      lines,
    );
  }
  const where = probe.mode === 'nftables' ? ' (nftables table ip flannel-ipv4)' : '';
  return pass(id, `flannel's masquerade rules are in place for ${facts.ownSubnet ?? '?'} in ${facts.network ?? '?'}${where}`);
}
