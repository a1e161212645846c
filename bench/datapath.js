#!/usr/bin/env node
// The data path: pod-to-pod across two nodes over tsflannel's flannel.1,
// against a hand-made twin of the same topology with no rules at all.
//
// tsflannel side: a 2-node demo cluster (src/demo/cluster.ts: real etcd,
// real tsflanneld with --ip-masq, pods through the real plugin), both nodes
// on one underlay bridge. Twin: the same kernel objects made by hand with
// `ip` in namespaces of its own: an underlay bridge, per node a veth to it,
// a VXLAN device with the same VNI, port, MTU, local address and flags as
// the agent's flannel.1, a cni0 bridge and a pod veth with the same MTU,
// the same per-peer route + permanent ARP + FDB entry, and no iptables or
// nftables rules (so no conntrack either).
//
// Per round, in alternating order: iperf3 TCP throughput pod to pod, and a
// request/response latency: `ping -i 0.001` (ICMP echo, answered in the
// remote pod's kernel) round-trip percentiles. Ratios are tsflannel / twin.
//
// Factors (BENCH_DATAPATH_FACTORS=1, or always outside --quick): variants of
// the twin that add one difference at a time (tsflannel's nft tables, alone
// or together, which switch conntrack and NAT on; flannel's documented
// checksum-offload workaround; conntrack checksum validation off; the VXLAN
// underlay untracked), so each cost is measured apart in the same
// interleaved run (see FACTORS).
//
//   node bench/run.js datapath               through the runner
//   node bench/datapath.js                   alone
//   BENCH_DP_SECONDS=4 BENCH_DP_ROUNDS=4 BENCH_DP_PINGS=2000
//   BENCH_DP_FACTORS=rules,novx              only these factors
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { installSignalCleanup, onCleanup, runCleanups } from './lib/cleanup.js';
import { iperfAttempt } from './lib/iperf.js';
import { median, percentile } from './lib/stats.js';

const SECONDS = Number(process.env.BENCH_DP_SECONDS ?? 4);
const ROUNDS = Number(process.env.BENCH_DP_ROUNDS ?? 4);
const PINGS = Number(process.env.BENCH_DP_PINGS ?? 2000);

function nsExec(ns, cmd, args, opts = {}) {
  return spawnSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', ...opts });
}

function must(ns, cmd, args, opts) {
  const r = ns ? nsExec(ns, cmd, args, opts) : spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (r.status !== 0) throw new Error(`${ns ? `[${ns}] ` : ''}${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
  return r.stdout;
}

function ip(args) {
  return must(undefined, 'ip', args);
}

function killNsPids(namespaces) {
  for (const ns of namespaces) {
    const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
    for (const pid of pids.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

/** The agent's flannel.1 as the kernel reports it: what the twin copies. */
function vxlanDevice(ns) {
  const [link] = JSON.parse(must(ns, 'ip', ['-d', '-j', 'link', 'show', 'flannel.1']));
  const d = link.linkinfo.info_data;
  const [addr] = JSON.parse(must(ns, 'ip', ['-j', '-4', 'addr', 'show', 'dev', 'flannel.1']));
  return { mtu: link.mtu, mac: link.address, vni: d.id, port: d.port, local: d.local, learning: d.learning, ttl: d.ttl ?? 0, udpCsum: d.udp_csum, addr: addr.addr_info[0].local };
}

export async function startTsflannel(log, tag) {
  const { Cluster } = await import('../build/demo/cluster.js');
  const cluster = new Cluster({
    prefix: `tsfdp${tag}`,
    nodes: [
      { name: 'n1', segment: 'a' },
      { name: 'n2', segment: 'a' },
    ],
    netConf: { Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } },
    resyncSeconds: 30,
  });
  // The synchronous fallback for Ctrl-C; the normal path awaits stop(). etcd,
  // the etcd bridges and the mount-namespace holders run outside the node
  // namespaces: they are the cluster's child processes, ended by PID.
  const undo = onCleanup('tsflannel cluster', () => {
    for (const a of cluster.agents.values()) a.child.kill('SIGKILL');
    for (const c of [cluster.etcd, ...(cluster.bridges ?? []), ...(cluster.mountHolders?.values() ?? [])]) c?.kill('SIGKILL');
    killNsPids(cluster.topo?.namespaces ?? []);
    for (const ns of cluster.topo?.namespaces ?? []) spawnSync('ip', ['netns', 'del', ns]);
    if (cluster.tempDir) rmSync(cluster.tempDir, { recursive: true, force: true });
  });
  log('starting a 2-node tsflannel cluster');
  await cluster.start();
  const client = await cluster.addPod('n1', 'client');
  const server = await cluster.addPod('n2', 'server');
  const deadline = Date.now() + 30_000;
  while (nsExec(client.ns, 'ping', ['-c1', '-W1', server.ip]).status !== 0) {
    if (Date.now() > deadline) throw new Error('tsflannel: client pod cannot reach the server pod');
  }
  const nodes = ['n1', 'n2'].map((n) => cluster.node(n).ns);
  return {
    name: 'tsflannel',
    client: { ns: client.ns, ip: client.ip },
    server: { ns: server.ns, ip: server.ip },
    nodes,
    pidDir: cluster.dir,
    async stop() {
      await cluster.stop().catch(() => undefined);
      undo();
    },
  };
}

/**
 * The hand-made twin: the same kernel objects as a tsflannel node pair, no
 * rules. `ref` is the tsflannel setup, whose devices and addresses it copies.
 */
export function startTwin(ref, label, tag) {
  const pre = `tsfdt${tag}${label}`;
  const made = [];
  const addNs = (n) => {
    const ns = `${pre}-${n}`;
    ip(['netns', 'add', ns]);
    made.push(ns);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  };
  const undo = onCleanup(`twin ${label}`, () => {
    killNsPids(made);
    for (const ns of [...made].reverse()) spawnSync('ip', ['netns', 'del', ns]);
  });
  const seg = addNs('seg');
  ip(['-n', seg, 'link', 'add', 'br0', 'type', 'bridge']);
  ip(['-n', seg, 'link', 'set', 'br0', 'up']);
  const devs = ref.nodes.map((ns) => vxlanDevice(ns));
  const pods = ref.nodes.map((ns, i) => podOf(ns, [ref.client, ref.server][i].ip));
  const nodes = [];
  for (let i = 0; i < 2; i++) {
    const d = devs[i];
    const ns = addNs(`n${i + 1}`);
    nodes.push(ns);
    const [uLink] = JSON.parse(must(ref.nodes[i], 'ip', ['-j', 'link', 'show', 'eth0']));
    ip(['-n', seg, 'link', 'add', `n${i + 1}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    ip(['-n', seg, 'link', 'set', `n${i + 1}`, 'master', 'br0', 'up']);
    ip(['-n', ns, 'link', 'set', 'eth0', 'mtu', String(uLink.mtu), 'up']);
    ip(['-n', ns, 'addr', 'add', `${d.local}/24`, 'dev', 'eth0']);
    must(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    const vx = ['-n', ns, 'link', 'add', 'flannel.1', 'address', d.mac, 'mtu', String(d.mtu), 'type', 'vxlan', 'id', String(d.vni), 'local', d.local, 'dev', 'eth0', 'dstport', String(d.port)];
    if (!d.learning) vx.push('nolearning');
    if (d.ttl) vx.push('ttl', String(d.ttl));
    vx.push(d.udpCsum ? 'udpcsum' : 'noudpcsum');
    ip(vx);
    ip(['-n', ns, 'addr', 'add', `${d.addr}/32`, 'dev', 'flannel.1']);
    ip(['-n', ns, 'link', 'set', 'flannel.1', 'up']);
    const p = pods[i];
    ip(['-n', ns, 'link', 'add', 'cni0', 'mtu', String(p.mtu), 'type', 'bridge']);
    ip(['-n', ns, 'addr', 'add', `${p.gw}/${p.len}`, 'dev', 'cni0']);
    ip(['-n', ns, 'link', 'set', 'cni0', 'up']);
    const podNs = addNs(`p${i + 1}`);
    ip(['-n', ns, 'link', 'add', 'vethp', 'mtu', String(p.mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', podNs]);
    ip(['-n', ns, 'link', 'set', 'vethp', 'master', 'cni0', 'up']);
    // The plugin's port settings (hairpin mode) on the twin's bridge port too.
    ip(['-n', ns, 'link', 'set', 'vethp', 'type', 'bridge_slave', 'hairpin', p.hairpin ? 'on' : 'off']);
    ip(['-n', podNs, 'link', 'set', 'eth0', 'mtu', String(p.mtu), 'up']);
    ip(['-n', podNs, 'addr', 'add', `${p.ip}/${p.len}`, 'dev', 'eth0']);
    ip(['-n', podNs, 'route', 'add', 'default', 'via', p.gw]);
    p.ns = podNs;
  }
  for (let i = 0; i < 2; i++) {
    const peer = devs[1 - i];
    const peerNet = pods[1 - i].net;
    ip(['-n', nodes[i], 'neigh', 'add', peer.addr, 'lladdr', peer.mac, 'dev', 'flannel.1', 'nud', 'permanent']);
    must(nodes[i], 'bridge', ['fdb', 'add', peer.mac, 'dev', 'flannel.1', 'dst', peer.local, 'self', 'permanent']);
    ip(['-n', nodes[i], 'route', 'add', peerNet, 'via', peer.addr, 'dev', 'flannel.1', 'onlink']);
  }
  if (nsExec(pods[0].ns, 'ping', ['-c3', '-i0.2', '-W1', pods[1].ip]).status !== 0) throw new Error(`twin ${label}: pods cannot reach each other`);
  return {
    name: label,
    client: { ns: pods[0].ns, ip: pods[0].ip },
    server: { ns: pods[1].ns, ip: pods[1].ip },
    nodes,
    pidDir: undefined,
    async stop() {
      undo();
    },
  };
}

/** The pod side of a tsflannel node: its cni0 address and MTU. */
function podOf(nodeNs, podIp) {
  const [br] = JSON.parse(must(nodeNs, 'ip', ['-j', '-4', 'addr', 'show', 'dev', 'cni0']));
  const a = br.addr_info[0];
  const base = a.local.split('.').slice(0, 3).join('.');
  const ports = JSON.parse(must(nodeNs, 'ip', ['-d', '-j', 'link', 'show', 'master', 'cni0']));
  const hairpin = ports[0]?.linkinfo?.info_slave_data?.hairpin === true;
  return { mtu: br.mtu, hairpin, gw: a.local, len: a.prefixlen, ip: podIp, net: `${base}.0/${a.prefixlen}` };
}

/** One iperf3 TCP run from the client pod to the server pod. */
function iperf(setup, seconds, dir) {
  let last = '';
  for (let attempt = 0; attempt < 6; attempt++) {
    const { res, parsed } = iperfAttempt({
      clientNs: setup.client.ns, serverNs: setup.server.ns, serverIp: setup.server.ip, seconds, pidFile: `${dir}/iperf3-${setup.name}.pid`,
    });
    if (parsed?.end?.sum_received) {
      const end = parsed.end;
      // CPU the two iperf3 processes used (user + system, which includes the
      // softirq work done in their context: most of the path on veths) per
      // GB moved: unlike the rate it hardly moves with other load.
      const cpu = end.cpu_utilization_percent ?? {};
      const cpuSeconds = (((cpu.host_total ?? NaN) + (cpu.remote_total ?? NaN)) / 100) * end.sum_received.seconds;
      return { gbps: end.sum_received.bits_per_second / 1e9, retransmits: end.sum_sent.retransmits ?? 0, cpuMsPerGB: (cpuSeconds * 1000) / (end.sum_received.bytes / 1e9) };
    }
    last = parsed?.error ?? `${res.stdout.slice(0, 200)} ${res.stderr}`;
    spawnSync('sleep', ['0.3']);
  }
  throw new Error(`iperf3 on ${setup.name}: ${last}`);
}

/** Round-trip times (ms) of `count` ICMP echoes at 1 ms intervals. */
function pingRtts(setup, count) {
  const r = nsExec(setup.client.ns, 'ping', ['-n', '-i', '0.001', '-c', String(count), '-W', '1', setup.server.ip], { maxBuffer: 64 << 20 });
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (rtts.length < count * 0.95) throw new Error(`ping on ${setup.name}: ${rtts.length}/${count} answered: ${r.stderr}`);
  return rtts;
}

/**
 * tsflannel's firewall as nft sees it (iptables-nft keeps it in nft tables),
 * split by table: `filter` (the FORWARD accepts) and `nat` (the masquerade
 * chain). Copied with `nft -f`, the twin gets exactly the base chains the
 * agent made and no others (iptables-restore would add every built-in chain).
 */
function rulesetTables(ns) {
  const text = must(ns, 'nft', ['-s', 'list', 'ruleset']);
  const tables = {};
  for (const block of text.split(/^(?=table )/m)) {
    const m = /^table (\S+) (\S+) \{/.exec(block);
    if (m) tables[m[2]] = block.replace(/^# Warning.*$/gm, '');
  }
  return tables;
}

/** Copies the named tables of each tsflannel node's firewall into a twin's nodes. */
function copyTables(from, to, names) {
  for (let i = 0; i < 2; i++) {
    const tables = rulesetTables(from.nodes[i]);
    for (const n of names) {
      if (!tables[n]) throw new Error(`tsflannel node ${from.nodes[i]} has no nft table ${n}`);
      must(to.nodes[i], 'nft', ['-f', '-'], { input: tables[n] });
    }
  }
}

/** raw-table NOTRACK rules in both directions (PREROUTING and OUTPUT) of a twin's nodes. */
function notrack(setup, match) {
  for (const ns of setup.nodes) {
    for (const chain of ['PREROUTING', 'OUTPUT']) must(ns, 'iptables', ['-w', '5', '-t', 'raw', '-A', chain, ...match, '-j', 'NOTRACK']);
  }
}

/**
 * Twins that add tsflannel's firewall a part at a time: its FORWARD accept
 * chain alone (no conntrack), its masquerade chain alone (loads conntrack
 * and the NAT hooks: every packet is tracked), both (tsflannel's firewall
 * exactly), and both with the VXLAN underlay's UDP untracked, so each cost
 * is measured apart in the same interleaved run.
 */
const FACTORS = [
  { name: 'fwd', label: "twin + tsflannel's FORWARD accepts only (filter table)", apply: (ts, t) => copyTables(ts, t, ['filter']) },
  { name: 'nat', label: "twin + tsflannel's masquerade chain only (conntrack + NAT)", apply: (ts, t) => copyTables(ts, t, ['nat']) },
  { name: 'rules', label: "twin + tsflannel's whole firewall (both tables)", apply: (ts, t) => copyTables(ts, t, ['filter', 'nat']) },
  {
    name: 'nocsum',
    label: "twin + whole firewall, flannel.1 tx checksum offload off (flannel's documented workaround)",
    needs: '/usr/sbin/ethtool',
    apply: (ts, t) => {
      copyTables(ts, t, ['filter', 'nat']);
      for (const ns of t.nodes) must(ns, 'ethtool', ['-K', 'flannel.1', 'tx-checksum-ip-generic', 'off']);
    },
  },
  {
    name: 'nocsum0',
    label: 'twin + whole firewall, conntrack checksum validation off (nf_conntrack_checksum=0)',
    apply: (ts, t) => {
      copyTables(ts, t, ['filter', 'nat']);
      for (const ns of t.nodes) must(ns, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_checksum=0']);
    },
  },
  {
    name: 'novx',
    label: 'twin + whole firewall, VXLAN UDP untracked (raw NOTRACK udp 8472)',
    apply: (ts, t) => {
      copyTables(ts, t, ['filter', 'nat']);
      notrack(t, ['-p', 'udp', '--dport', '8472']);
    },
  },
];

/** What differs on the path, for the notes: offloads and sysctls of tsflannel's devices vs the twin's. */
function describe(setup) {
  const node = setup.nodes[0];
  const k = (dev) => {
    const r = nsExec(node, 'ethtool', ['-k', dev]);
    if (r.status !== 0) return '';
    return r.stdout
      .split('\n')
      .filter((l) => /^(tx-checksumming|rx-checksumming|generic-segmentation-offload|generic-receive-offload|tcp-segmentation-offload|rx-gro-list|rx-udp-gro-forwarding|tx-udp_tnl-segmentation):/.test(l))
      .map((l) => l.replace(/\s+\[fixed\]/, '').replace(/:\s+/, '=').replace(/\s+/g, ''))
      .join(' ');
  };
  const rules = (nsExec(node, 'iptables-save', []).stdout ?? '').split('\n').filter((l) => l.startsWith('-A')).length;
  return { flannel: k('flannel.1'), cni0: k('cni0'), rules };
}

export async function run(ctx = {}) {
  const log = ctx.log ?? (() => undefined);
  for (const bin of ['/usr/bin/iperf3', '/usr/bin/etcd']) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run scripts/setup.sh (Debian packages iperf3, etcd-server)`);
  }
  const seconds = ctx.quick ? 2 : SECONDS;
  const rounds = ctx.quick ? 2 : ROUNDS;
  const pings = ctx.quick ? 500 : PINGS;
  const factors = process.env.BENCH_DATAPATH_FACTORS ? process.env.BENCH_DATAPATH_FACTORS !== '0' : !ctx.quick;
  const tag = randomBytes(2).toString('hex');
  const setups = [];
  const load0 = loadavg()[0];
  try {
    const ts = await startTsflannel(log, tag);
    setups.push(ts);
    setups.push(startTwin(ts, 'twin', tag));
    if (factors) {
      // BENCH_DP_FACTORS=name,name runs only those factors (names in FACTORS).
      const only = process.env.BENCH_DP_FACTORS?.split(',').filter(Boolean);
      for (const f of FACTORS.filter((f) => (!f.needs || existsSync(f.needs)) && (!only || only.includes(f.name)))) {
        const t = startTwin(ts, f.name, tag);
        f.apply(ts, t);
        setups.push(t);
      }
    }
    const labels = {
      tsflannel: 'tsflannel (flannel.1, agent + plugin, --ip-masq)',
      twin: 'hand-made twin (same devices, no rules)',
      ...Object.fromEntries(FACTORS.map((f) => [f.name, f.label])),
    };
    const tput = Object.fromEntries(setups.map((s) => [s.name, []]));
    const cpuPerGB = Object.fromEntries(setups.map((s) => [s.name, []]));
    const retrans = Object.fromEntries(setups.map((s) => [s.name, 0]));
    const rtt = Object.fromEntries(setups.map((s) => [s.name, []]));
    const rttMedians = Object.fromEntries(setups.map((s) => [s.name, []]));
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 === 0 ? setups : [...setups].reverse();
      for (const s of order) {
        const m = iperf(s, seconds, ts.pidDir);
        tput[s.name].push(m.gbps);
        cpuPerGB[s.name].push(m.cpuMsPerGB);
        retrans[s.name] += m.retransmits;
        log(`round ${r + 1}: ${s.name} ${m.gbps.toFixed(2)} Gbit/s`);
      }
      for (const s of [...order].reverse()) {
        const rtts = pingRtts(s, pings);
        rtt[s.name].push(...rtts);
        rttMedians[s.name].push(median(rtts));
        log(`round ${r + 1}: ${s.name} ping median ${median(rtts).toFixed(3)} ms`);
      }
    }
    const load1 = loadavg()[0];
    // Paired per round: each setup against the twin measured in the same round.
    const paired = (series, name) => median(series[name].map((v, i) => v / series.twin[i]));
    const us = (ms) => Math.round(ms * 1000);
    const rows = setups.map((s) => ({
      name: labels[s.name],
      'TCP median (Gbit/s)': median(tput[s.name]).toFixed(2),
      'min/max (Gbit/s)': `${Math.min(...tput[s.name]).toFixed(2)} / ${Math.max(...tput[s.name]).toFixed(2)}`,
      'throughput vs twin': paired(tput, s.name).toFixed(3),
      retransmits: retrans[s.name],
      'iperf3 CPU per GB (ms)': Math.round(median(cpuPerGB[s.name])),
      'CPU per GB vs twin': paired(cpuPerGB, s.name).toFixed(3),
      'RTT p50 (µs)': us(median(rtt[s.name])),
      'RTT p90 (µs)': us(percentile(rtt[s.name], 90)),
      'RTT p99 (µs)': us(percentile(rtt[s.name], 99)),
      'RTT p50 vs twin': paired(rttMedians, s.name).toFixed(3),
    }));
    const d = describe(ts);
    const dt = describe(setups[1]);
    const target = paired(tput, 'tsflannel');
    return {
      title: 'Pod-to-pod across two nodes over VXLAN: tsflannel vs the same kernel VXLAN made by hand',
      rows,
      notes: [
        `Target (issue 18, item 6): tsflannel's throughput ≥ 0.95 × the twin's: ${target.toFixed(3)}, ${target >= 0.95 ? 'met' : 'NOT met'} in this run; CPU per GB ${paired(cpuPerGB, 'tsflannel').toFixed(3)} ×, RTT p50 ${paired(rttMedians, 'tsflannel').toFixed(3)} × the twin's.`,
        `${rounds} rounds, order alternating (ABBA); ratios are the median over rounds of each setup / the twin in the same round; per round and setup one iperf3 -t ${seconds} (TCP, 1 stream) pod on node 1 → pod on node 2, then ${pings} ICMP echoes at 1 ms intervals (ping -i 0.001): RTT percentiles over all echoes.`,
        'Twin: the same underlay bridge, a VXLAN device with the agent\'s VNI, port, MTU, MAC, local address and flags, cni0 and a pod veth with the plugin\'s MTU, the same route + permanent ARP + FDB per peer; no firewall rules.',
        `tsflannel node: ${d.rules} iptables rules; flannel.1 offloads: ${d.flannel || '(ethtool missing)'}; twin flannel.1: ${dt.flannel || '(ethtool missing)'}.`,
        'iperf3 CPU per GB: user + system time of the iperf3 client and server (its -J cpu_utilization_percent) per GB received; on veths most of the forwarding, encapsulation and netfilter work runs in their context, so this is the path\'s cost per byte, and it barely moves with other load, where the rate does.',
        `1-min load average ${load0.toFixed(2)} before, ${load1.toFixed(2)} after (2 vCPUs shared with other work): absolute figures move with load; read the ratios.`,
      ],
    };
  } finally {
    for (const s of setups.reverse()) await s.stop().catch(() => undefined);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  installSignalCleanup();
  run({ log: (m) => process.stderr.write(`${m}\n`) }).then(
    (r) => {
      console.table(r.rows);
      for (const n of r.notes) console.log(`* ${n}`);
      runCleanups();
    },
    (e) => {
      console.error(e);
      runCleanups();
      process.exit(1);
    },
  );
}
