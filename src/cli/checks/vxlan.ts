// The tunnel device itself, the interface under it, and the MTU chain from
// the underlay down to the pods.
import { defaultRoute, routeFor, subnetOf } from '../../node/state.js';
import { underlayDevice } from './peers.js';
import { wireguardCeiling } from './wireguard.js';
import { count, firstAddress, pass, problem, skip, type CheckResult, type DoctorInputs, type Facts } from './types.js';

/** inner Ethernet 14 + outer IPv4 20 + UDP 8 + VXLAN 8 */
export const VXLAN_OVERHEAD = 50;

const RECREATE = 'restart tsflanneld: it recreates the device with the configured attributes (ip link delete it first if it keeps it)';

export function checkVxlanDevice(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'vxlan-device';
  const { backend } = facts;
  if (backend.type !== 'vxlan') return skip(id, `${backend.type} backend: no VXLAN device`);
  const vx = inputs.state.vxlan;
  const name = facts.vxlanName;
  if (!vx) {
    return problem(id, 'fail', `${name} does not exist`, 'tsflanneld creates it at start and rebuilds it on every resync: check that it runs on this node');
  }
  if (vx.type !== 'vxlan') return problem(id, 'fail', `${vx.name} is a ${vx.type} device, not vxlan`, `ip link delete ${vx.name}, then ${RECREATE}`);
  const source = facts.backendKnown ? `${inputs.view.source} config` : 'no network config given: VNI and port not compared';
  const wrong: string[] = [];
  let fix = RECREATE;
  if (vx.name !== name) wrong.push(`name ${vx.name}, want ${name}`);
  if (vx.vni !== backend.vni) wrong.push(`VNI ${vx.vni}, want ${backend.vni} (${source})`);
  if (vx.port !== backend.port) wrong.push(`dstport ${vx.port}, want ${backend.port} (${source})`);
  if (!vx.local) wrong.push('no local address');
  if (!vx.dev) wrong.push('no underlay device (dev)');
  if (vx.learning) {
    wrong.push('learning is on (flannel programs the FDB itself)');
    fix = `ip link set ${vx.name} type vxlan nolearning`;
  }
  const leaseMac = facts.ownLease?.backendData.VtepMAC?.toLowerCase();
  if (leaseMac && leaseMac !== vx.mac) {
    wrong.push(`MAC ${vx.mac}, but this node's lease publishes VtepMAC ${leaseMac}, so peers address frames to a MAC it drops`);
    fix = 'restart tsflanneld: it republishes its VTEP MAC (check that nothing like systemd-networkd MACAddressPolicy=random rewrites it)';
  }
  if (facts.ownSubnet) {
    const want = `${subnetOf(facts.ownSubnet).split('/')[0]}/32`;
    if (!vx.addresses.includes(want)) wrong.push(`address ${vx.addresses.join(', ') || 'none'}, want ${want}`);
  }
  if (!vx.up) {
    wrong.push('down');
    if (wrong.length === 1) fix = `ip link set ${vx.name} up`;
  }
  if (wrong.length > 0) return problem(id, 'fail', `${vx.name}: ${wrong.join('; ')}`, fix);
  return pass(
    id,
    `${vx.name} vni ${vx.vni} local ${vx.local} dev ${vx.dev} dstport ${vx.port} nolearning, mac ${vx.mac}, ${vx.addresses.join(' ')}, up (${source})`,
  );
}

export function checkUnderlay(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'underlay-interface';
  const { state } = inputs;
  const vx = state.vxlan;
  const dev = underlayDevice(state, facts);
  const fix = 'start tsflanneld with --iface <the interface that reaches the other nodes> (or --iface-regex / --iface-can-reach)';
  if (facts.backend.type === 'vxlan' && !vx) return skip(id, `no ${facts.vxlanName} (see vxlan-device)`);
  if (!dev) return problem(id, 'fail', vx ? `${vx.name}'s underlay device is gone` : `no interface holds ${facts.ownPublicIP ?? 'our address'}`, fix);
  const local = vx?.local || facts.ownPublicIP;
  if (local && !dev.addresses.some((a) => firstAddress(a) === local)) {
    return problem(id, 'fail', `${dev.name} does not hold ${local}, the tunnels' source address`, fix);
  }
  if (!dev.up) return problem(id, 'fail', `${dev.name} is down`, `ip link set ${dev.name} up`);
  // Where the kernel sends each peer's encapsulated packets.
  const peers = facts.leases
    ? facts.remoteLeases.map((l) => ({ ip: l.publicIP, who: l.nodeName ?? l.subnet }))
    : [...new Set(state.fdb.map((e) => e.dst).filter(Boolean))].map((ip) => ({ ip, who: ip }));
  const misrouted: string[] = [];
  for (const p of peers) {
    if (p.ip === local) continue;
    const r = routeFor(state, p.ip);
    if (!r) misrouted.push(`${p.ip} (${p.who}): no route`);
    else if (r.dev !== dev.name) misrouted.push(`${p.ip} (${p.who}): routed via ${r.dev}, not ${dev.name}`);
  }
  if (misrouted.length > 0) {
    return problem(
      id,
      'fail',
      `${count(misrouted.length, 'peer address', 'peer addresses')} not reachable through ${dev.name}, where the tunnels start (${local})`,
      fix,
      misrouted,
    );
  }
  const def = defaultRoute(state);
  const notes: string[] = [];
  if (facts.ownLease && local && facts.ownLease.publicIP !== local) notes.push(`advertises ${facts.ownLease.publicIP} (--public-ip)`);
  if (def && def.dev !== dev.name) {
    if (peers.length === 0) {
      return problem(
        id,
        'warn',
        `${dev.name} (${local}) carries the tunnels but the default route uses ${def.dev}; no peer known yet to tell which is right`,
        `fine if ${dev.name} is the cluster network (--iface); otherwise ${fix}`,
      );
    }
    notes.push(`default route on ${def.dev}`);
  }
  const reach = peers.length > 0 ? `, and reaches all ${count(peers.length, 'peer')}` : '';
  return pass(id, `${dev.name} holds ${local}${def?.dev === dev.name ? ' and the default route' : ''}${reach}${notes.length ? ` (${notes.join(', ')})` : ''}`);
}

export function checkMtu(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'mtu';
  const { state } = inputs;
  const vx = state.vxlan;
  const dev = underlayDevice(state, facts);
  const env = state.subnetFile.env;
  const br = state.bridge;
  const pods = state.ipam.pods.filter((p) => p.vethMtu !== undefined);
  const fails: string[] = [];
  const warns: string[] = [];
  const fixes: string[] = [];
  const chain: string[] = [];
  // The largest pod packet that fits: flannel.1's MTU for vxlan, the underlay's for host-gw.
  let ceiling: number | undefined;
  let ceilingName = '';
  if (facts.backend.type === 'vxlan') {
    if (!vx) return skip(id, `no ${facts.vxlanName} (see vxlan-device)`);
    ceiling = vx.mtu;
    ceilingName = vx.name;
    if (dev) {
      const max = dev.mtu - VXLAN_OVERHEAD;
      chain.push(`${dev.name} ${dev.mtu} − ${VXLAN_OVERHEAD} = ${max} ≥ ${vx.name} ${vx.mtu}`);
      if (vx.mtu > max) {
        fails.push(`${vx.name} MTU ${vx.mtu} is above ${dev.name}'s ${dev.mtu} − ${VXLAN_OVERHEAD} = ${max}: full-size packets are lost after encapsulation`);
        fixes.push(`ip link set ${vx.name} mtu ${max} (tsflanneld sets underlay − ${VXLAN_OVERHEAD}, or Backend.MTU)`);
      }
    } else chain.push(`${vx.name} ${vx.mtu}`);
  } else if (facts.backend.type === 'wireguard') {
    const wg = wireguardCeiling(state, dev?.mtu);
    if (!wg) return skip(id, 'no flannel-wg (see wireguard-device)');
    ceiling = wg.mtu;
    ceilingName = wg.name;
    chain.push(wg.chain);
    if (wg.over) {
      fails.push(wg.over);
      fixes.push('restart tsflanneld: it sets flannel-wg to the underlay MTU − 60 (or Backend.MTU − 60)');
    }
  } else if (dev) {
    ceiling = dev.mtu;
    ceilingName = dev.name;
    chain.push(`${dev.name} ${dev.mtu}`);
  }
  if (env) {
    chain.push(`FLANNEL_MTU ${env.mtu}`);
    if (ceiling !== undefined && env.mtu > ceiling) {
      fails.push(`FLANNEL_MTU ${env.mtu} is above ${ceilingName}'s ${ceiling}: new pods get an MTU the tunnel cannot carry`);
      fixes.push('restart tsflanneld so it rewrites the subnet file, then recreate the pods');
    }
  }
  if (br) {
    chain.push(`${br.name} ${br.mtu}`);
    if (ceiling !== undefined && br.mtu > ceiling) {
      fails.push(`${br.name} MTU ${br.mtu} is above ${ceilingName}'s ${ceiling}`);
      fixes.push(`ip link set ${br.name} mtu ${ceiling}`);
    } else if (env && br.mtu !== env.mtu) {
      warns.push(`${br.name} has MTU ${br.mtu}, FLANNEL_MTU is ${env.mtu} (the next pod ADD sets the bridge to FLANNEL_MTU)`);
    }
  }
  const podMtus = [...new Set(pods.map((p) => p.vethMtu!))].sort((a, b) => a - b);
  if (pods.length > 0) chain.push(`pod eth0 ${podMtus.join('/')} (${count(pods.length, 'pod')})`);
  for (const p of pods) {
    const mtu = p.vethMtu!;
    if (ceiling !== undefined && mtu > ceiling) {
      fails.push(`pod ${p.ip} (${p.containerId}) has MTU ${mtu}, above ${ceilingName}'s ${ceiling}: its large packets are dropped`);
    } else if (env && mtu !== env.mtu) {
      // The node's MTU is FLANNEL_MTU: a pod made before an MTU change keeps its old one.
      warns.push(`pod ${p.ip} (${p.containerId}) has MTU ${mtu}, the node's FLANNEL_MTU is ${env.mtu}`);
    } else if (br && mtu !== br.mtu) {
      warns.push(`pod ${p.ip} (${p.containerId}) has MTU ${mtu}, ${br.name} has ${br.mtu}`);
    }
  }
  if (pods.some((p) => ceiling !== undefined && p.vethMtu! > ceiling)) fixes.push('recreate those pods (they keep the MTU they were created with)');
  const summary = chain.join(', ');
  if (fails.length > 0) return problem(id, 'fail', fails[0]!, fixes[0] ?? 'see details', [...fails.slice(1), ...warns, `chain: ${summary}`]);
  if (warns.length > 0) {
    const odd = pods.filter((p) => (env && p.vethMtu !== env.mtu) || (br && p.vethMtu !== br.mtu));
    const named = odd.map((p) => p.containerId).join(', ');
    const what = odd.length > 0 ? `${count(odd.length, 'pod')} with an MTU other than the node's: ${named}` : warns[0]!;
    return problem(id, 'warn', `${what} (made before an MTU change?)`, 'recreate the pods listed to give them the current MTU', warns);
  }
  return pass(id, summary);
}
