// Pod-to-pod TCP throughput across nodes: the wireguard backend (here on
// wireguard-go, since this kernel has no WireGuard; kernel WireGuard is
// much faster) against the VXLAN backend as the reference, measured in the
// same run. Two 2-node demo clusters (real etcd, real tsflanneld, pods
// through the real plugin) stand side by side; iperf3 runs pod to pod on
// one, then the other, alternating, so load drift hits both alike.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { onCleanup } from './lib/cleanup.js';
import { iperfAttempt } from './lib/iperf.js';
import { median, ratio } from './lib/stats.js';

const SECONDS = Number(process.env.BENCH_WG_SECONDS ?? 4);
const ROUNDS = Number(process.env.BENCH_WG_ROUNDS ?? 3);

function nsExec(ns, cmd, args, opts = {}) {
  return spawnSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', ...opts });
}

async function startCluster(Cluster, backend, log) {
  const cluster = new Cluster({
    prefix: `tsfb${backend.slice(0, 2)}${randomBytes(2).toString('hex')}`,
    nodes: [
      { name: 'n1', segment: 'a' },
      { name: 'n2', segment: 'a' },
    ],
    netConf: { Network: '10.244.0.0/16', SubnetLen: 24, Backend: backend === 'vxlan' ? { Type: 'vxlan' } : { Type: 'wireguard' } },
    resyncSeconds: 5,
  });
  // The synchronous fallback for Ctrl-C; the normal path awaits stop().
  const undo = onCleanup(`${backend} cluster`, () => {
    for (const ns of cluster.topo?.namespaces ?? []) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    stopIperfServer(cluster);
    cluster.etcd?.kill('SIGKILL');
    for (const a of cluster.agents.values()) a.child.kill('SIGKILL');
    for (const ns of cluster.topo?.namespaces ?? []) spawnSync('ip', ['netns', 'del', ns]);
  });
  log(`starting a 2-node ${backend} cluster`);
  await cluster.start();
  const client = await cluster.addPod('n1', 'client');
  const server = await cluster.addPod('n2', 'server');
  // Wait for the overlay: the first ping may need a handshake or a resync.
  const deadline = Date.now() + 30_000;
  while (nsExec(client.ns, 'ping', ['-c1', '-W1', server.ip]).status !== 0) {
    if (Date.now() > deadline) throw new Error(`${backend}: client pod cannot reach the server pod`);
  }
  return { cluster, client, server, undo };
}

/** The one-off server lives in a pod namespace, which the cluster's clean-up does not search. */
function stopIperfServer(cluster) {
  try {
    const pid = Number(readFileSync(`${cluster.dir}/iperf3.pid`, 'utf8').trim());
    if (pid > 0) process.kill(pid, 'SIGKILL');
  } catch {
    // no server running
  }
}

/** One iperf3 run; the server serves one client (-1), so it is restarted each time. */
function iperf({ cluster, client, server }, seconds) {
  let out;
  let last = '';
  for (let attempt = 0; attempt < 6 && !out; attempt++) {
    // A one-off server (-1) exits after any test, failed ones too; one still
    // running makes this start fail on the busy port, which is fine.
    const { res, parsed } = iperfAttempt({ clientNs: client.ns, serverNs: server.ns, serverIp: server.ip, seconds, pidFile: `${cluster.dir}/iperf3.pid` });
    // The server may not listen yet (connection refused): iperf3 then reports an error.
    if (res.status === 0 && parsed?.end?.sum_received) out = parsed;
    else {
      // A client killed by the timeout can leave the one-off server stuck on its test.
      if (res.error) stopIperfServer(cluster);
      last = parsed?.error ?? (res.error ? `iperf3 -c: ${res.error.message}` : `${res.stdout.slice(0, 200)} ${res.stderr}`);
      spawnSync('sleep', ['0.2']);
    }
  }
  if (!out) throw new Error(`iperf3 -c: ${last}`);
  return { gbps: out.end.sum_received.bits_per_second / 1e9, retransmits: out.end.sum_sent.retransmits ?? 0 };
}

export async function run(ctx = {}) {
  const log = ctx.log ?? (() => undefined);
  for (const bin of ['/usr/bin/iperf3', '/usr/bin/wg', '/usr/bin/etcd']) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing: run scripts/setup.sh (Debian packages iperf3, wireguard-tools, etcd-server)`);
  }
  const { Cluster } = await import('../build/demo/cluster.js');
  const seconds = ctx.quick ? 2 : SECONDS;
  const rounds = ctx.quick ? 2 : ROUNDS;
  const setups = {};
  try {
    setups.vxlan = await startCluster(Cluster, 'vxlan', log);
    setups.wireguard = await startCluster(Cluster, 'wireguard', log);
    const impl = /"impl":"([^"]+)"/.exec(setups.wireguard.cluster.agentLog('n1'))?.[1] ?? '?';
    const samples = { vxlan: [], wireguard: [] };
    const retrans = { vxlan: 0, wireguard: 0 };
    for (let r = 0; r < rounds; r++) {
      for (const name of r % 2 === 0 ? ['vxlan', 'wireguard'] : ['wireguard', 'vxlan']) {
        const m = iperf(setups[name], seconds);
        samples[name].push(m.gbps);
        retrans[name] += m.retransmits;
        log(`round ${r + 1}: ${name} ${m.gbps.toFixed(2)} Gbit/s`);
      }
    }
    const vx = median(samples.vxlan);
    const wgm = median(samples.wireguard);
    const row = (name, label, s, med, rt) => ({
      name: label,
      'median (Gbit/s)': med.toFixed(2),
      'min (Gbit/s)': Math.min(...s).toFixed(2),
      'max (Gbit/s)': Math.max(...s).toFixed(2),
      'vs VXLAN': ratio(med, vx).toFixed(2),
      retransmits: rt,
      'pod MTU': name === 'vxlan' ? 1450 : 1440,
    });
    return {
      title: 'Pod-to-pod TCP throughput across two nodes: wireguard backend vs VXLAN (iperf3)',
      rows: [row('vxlan', 'vxlan (kernel VXLAN)', samples.vxlan, vx, retrans.vxlan), row('wireguard', `wireguard (${impl})`, samples.wireguard, wgm, retrans.wireguard)],
      notes: [
        `${rounds} alternating rounds of iperf3 -t ${seconds} per backend, pod on node 1 to pod on node 2, veth underlay; median, min and max per backend.`,
        impl === 'wireguard-go'
          ? 'This kernel has no WireGuard module, so flannel-wg runs on wireguard-go (userspace, one copy per packet through /dev/net/tun); kernel WireGuard is several times faster and is what a node with the module gets.'
          : 'flannel-wg runs on kernel WireGuard here.',
        'The machine is shared: absolute figures move with load; the ratio is what the bench is for.',
      ],
    };
  } finally {
    for (const s of Object.values(setups)) {
      stopIperfServer(s.cluster);
      await s.cluster.stop().catch(() => undefined);
      s.undo();
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run({ log: (m) => process.stderr.write(`${m}\n`) }).then((r) => console.table(r.rows), (e) => { console.error(e); process.exit(1); });
}
