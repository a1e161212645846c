// `npm run demo`: a three-node tsflannel cluster on this machine, built from
// network namespaces (two nodes on one L2 segment, one behind a router), a
// real etcd, one tsflanneld per node and two pods per node added through the
// real tsflannel binary. The cluster is dual-stack by default (an IPv4 and
// an IPv6 underlay, flannel.1 and flannel-v6.1, pods with both addresses);
// --ipv4-only runs the IPv4 overlay alone. It prints what each node
// programmed (read back from the kernel), a pod-to-pod ping matrix per family
// and a masquerade check per family, then removes everything it made, also on
// Ctrl-C. Exit 0 only when every ping answered.
//
//   node build/demo/main.js [--keep] [--ipv4-only]  run (and with --keep, stay up to explore)
//   node build/demo/main.js --cleanup PREFIX  remove what a killed demo left behind
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { Cluster, DEFAULT_NET_CONF, PLUGIN_BIN, type Pod } from './cluster.js';
import { kernelPeers, readNodeState, type NodeState } from '../node/state.js';
import { readClusterView } from '../cli/checks/source.js';
import { paintFor, table, type Paint } from '../cli/checks/format.js';
import type { ClusterNode } from './topology.js';

const NODES = [
  { name: 'node1', segment: 'a' as const },
  { name: 'node2', segment: 'a' as const },
  { name: 'node3', segment: 'b' as const },
];
const PODS_PER_NODE = 2;
/** the demo's IPv6 pod network, next to DEFAULT_NET_CONF's 10.244.0.0/16 */
const NETWORK6 = 'fd00:10:244::/56';
const ETCD_PREFIX = '/coreos.com/network';
const PREFIX_RE = /^tsfdemo[0-9a-f]{4}$/;

const out = (line = '') => process.stdout.write(`${line}\n`);

interface Options {
  keep: boolean;
  ipv4Only: boolean;
  cleanup?: string;
}

function parseArgs(argv: string[]): Options {
  const args = yargs(argv)
    .scriptName('npm run demo --')
    .usage('$0 [--keep] [--ipv4-only] | --cleanup PREFIX\n\nA three-node dual-stack tsflannel cluster in network namespaces, with a ping matrix per family.')
    .option('keep', { type: 'boolean', default: false, describe: 'leave the cluster running to explore; Ctrl-C tears it down' })
    .option('ipv4-only', { type: 'boolean', default: false, describe: 'an IPv4 overlay only (no IPv6 underlay, no flannel-v6, pods with one address)' })
    .option('cleanup', { type: 'string', describe: 'remove the namespaces, processes and files of the demo PREFIX (tsfdemoXXXX)' })
    .strict()
    .help()
    .version(false)
    .parseSync();
  const opts: Options = { keep: args.keep, ipv4Only: args['ipv4-only'] };
  if (args.cleanup !== undefined) {
    if (!PREFIX_RE.test(args.cleanup)) throw new Error(`--cleanup takes a demo prefix like tsfdemo1a2b, got "${args.cleanup}"`);
    opts.cleanup = args.cleanup;
  }
  return opts;
}

// ---------- small process helpers ----------

function runIn(ns: string, argv: string[], timeoutMs = 10_000): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'ignore'] });
    let stdout = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', () => resolve({ code: -1, stdout }));
    // 'close', not 'exit': only then has all of stdout arrived.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout });
    });
  });
}

async function ping(fromNs: string, ip: string): Promise<{ ok: boolean; ms?: number }> {
  const res = await runIn(fromNs, ['ping', '-n', '-c', '1', '-W', '2', ip]);
  const m = /time=([\d.]+) ms/.exec(res.stdout);
  return m?.[1] ? { ok: res.code === 0, ms: Number(m[1]) } : { ok: res.code === 0 };
}

// ---------- what each node programmed, read back from the kernel ----------

async function nodeStates(cluster: Cluster): Promise<Map<string, NodeState>> {
  const states = new Map<string, NodeState>();
  for (const node of cluster.topo!.nodes) {
    states.set(
      node.name,
      await readNodeState({
        netns: node.nsPath,
        subnetFile: cluster.subnetFile(node.name),
        dataDir: join(cluster.nodeDir(node.name), 'networks'),
        iptables: false,
      }),
    );
  }
  return states;
}

function fullyProgrammed(state: NodeState, peers: number): boolean {
  const full = (s: Parameters<typeof kernelPeers>[0]) => kernelPeers(s).filter((p) => p.route && p.neigh && p.fdb).length === peers;
  return full(state) && (!state.subnetFile.env?.ipv6Subnet || (state.ipv6 !== undefined && full(state.ipv6)));
}

async function waitForMesh(cluster: Cluster, timeoutMs: number): Promise<Map<string, NodeState>> {
  const deadline = Date.now() + timeoutMs;
  const peers = cluster.topo!.nodes.length - 1;
  for (;;) {
    const states = await nodeStates(cluster);
    if ([...states.values()].every((s) => fullyProgrammed(s, peers)) || Date.now() > deadline) return states;
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function printNodes(cluster: Cluster, states: Map<string, NodeState>, p: Paint): Promise<void> {
  const view = await readClusterView({ kind: 'etcd', endpoints: [cluster.etcdEndpoint], prefix: ETCD_PREFIX });
  for (const node of cluster.topo!.nodes) {
    const s = states.get(node.name)!;
    const lease = view.leases?.find((l) => l.publicIP === node.ip);
    const vx = s.vxlan;
    out(p.bold(`${node.name}`) + `  ${node.ip} on segment ${NODES.find((n) => n.name === node.name)?.segment}`);
    out(`  lease      ${lease ? `${lease.subnet} (etcd ${ETCD_PREFIX}/subnets/${lease.nodeName})` : p.red('none in etcd')}; subnet.env FLANNEL_SUBNET=${s.subnetFile.env?.subnet ?? '?'}`);
    out(`  VTEP       ${vx ? `${vx.name} mac ${vx.mac}, vni ${vx.vni} local ${vx.local} dev ${vx.dev} dstport ${vx.port}, mtu ${vx.mtu}, ${vx.addresses.join(' ')}` : p.red('no flannel.1')}`);
    const bridge = s.bridge;
    out(`  bridge     ${bridge ? `${bridge.name} ${bridge.addresses.join(' ')} mtu ${bridge.mtu}, ports ${bridge.ports.map((x) => x.name).join(' ')}` : '-'}`);
    for (const r of s.routes.filter((r) => vx && r.dev === vx.name)) {
      out(`  route      ${r.dst} via ${r.gw} dev ${r.dev}${r.onlink ? ' onlink' : ''}`);
    }
    const byIp = (a: string, b: string) => a.localeCompare(b, 'en', { numeric: true });
    for (const n of [...s.neighbours].sort((a, b) => byIp(a.ip, b.ip))) out(`  neigh      ${n.ip} lladdr ${n.mac} dev ${vx?.name}${n.permanent ? ' PERMANENT' : ''}`);
    for (const f of [...s.fdb].sort((a, b) => byIp(a.dst, b.dst))) out(`  fdb        ${f.mac} dev ${vx?.name} dst ${f.dst} self${f.permanent ? ' permanent' : ''}`);
    const v6 = s.ipv6;
    if (v6) {
      const vx6 = v6.vxlan;
      out(`  lease v6   ${lease?.ipv6Subnet ?? p.red('none')} for ${lease?.publicIPv6 ?? '?'}; subnet.env FLANNEL_IPV6_SUBNET=${s.subnetFile.env?.ipv6Subnet ?? '?'}`);
      out(`  VTEP v6    ${vx6 ? `${vx6.name} mac ${vx6.mac}, vni ${vx6.vni} local ${vx6.local} dev ${vx6.dev} dstport ${vx6.port}, mtu ${vx6.mtu}, ${vx6.addresses.join(' ')}` : p.red('no flannel-v6.1')}`);
      for (const r of v6.routes.filter((r) => vx6 && r.dev === vx6.name && r.gw)) out(`  route6     ${r.dst} via ${r.gw} dev ${r.dev}${r.onlink ? ' onlink' : ''}`);
      for (const n of [...v6.neighbours].sort((a, b) => byIp(a.ip, b.ip))) out(`  neigh6     ${n.ip} lladdr ${n.mac} dev ${vx6?.name}${n.permanent ? ' PERMANENT' : ''}`);
      for (const f of [...v6.fdb].sort((a, b) => byIp(a.dst, b.dst))) out(`  fdb6       ${f.mac} dev ${vx6?.name} dst ${f.dst} self${f.permanent ? ' permanent' : ''}`);
    }
    out();
  }
}

// ---------- pings ----------

function podLabel(pod: Pod): string {
  return `${pod.node}/${pod.name}`;
}

async function pingMatrix(pods: Pod[], p: Paint, tty: boolean, addr: (pod: Pod) => string = (pod) => pod.ip): Promise<boolean> {
  const pairs = pods.flatMap((from) => pods.filter((to) => to !== from).map((to) => ({ from, to })));
  const results = await Promise.all(pairs.map(async ({ from, to }) => ({ from, to, ...(await ping(from.ns, addr(to))) })));
  const cell = (from: Pod, to: Pod): string => {
    if (from === to) return p.dim('·');
    const r = results.find((x) => x.from === from && x.to === to)!;
    const ms = r.ms !== undefined ? r.ms.toFixed(2) : '';
    if (tty) return r.ok ? p.green(`✔ ${ms}`) : p.red('✘');
    return r.ok ? `ok ${ms}` : 'FAIL';
  };
  const header = ['from \\ to', ...pods.map((x) => `${podLabel(x)}`)];
  const body = pods.map((from) => [`${podLabel(from)}`, ...pods.map((to) => cell(from, to))]);
  for (const line of table(header, body)) out(line);
  const ok = results.filter((r) => r.ok).length;
  out();
  const summary = `${ok}/${results.length} pod pairs answered (round trip in ms)`;
  out(ok === results.length ? p.green(summary) : p.red(summary));
  return ok === results.length;
}

/** A TCP server in the outside namespace that answers each connection with the address it came from. */
function startWhoami(ns: string, port: number): Promise<ChildProcess> {
  const script = `require('net').createServer((s)=>{s.end(s.remoteAddress.replace(/^::ffff:/,'')+'\\n')}).listen(${port},'::',()=>console.log('ready'))`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`whoami server exited ${code}`)));
  });
}

/** A TCP client printing what the server answered (the source address it saw); works for both families. */
const WHOAMI_CLIENT = `const c=require('net').connect({host:process.argv[1],port:Number(process.argv[2])});let d='';c.setTimeout(3000,()=>process.exit(2));c.on('data',x=>d+=x);c.on('end',()=>{process.stdout.write(d);process.exit(0)});c.on('error',()=>process.exit(3))`;

async function masqueradeCheck(cluster: Cluster, p: Paint, tty: boolean): Promise<boolean> {
  const topo = cluster.topo!;
  const port = 8080;
  const server = await startWhoami(topo.outsideNs, port);
  let allOk = true;
  try {
    for (const node of topo.nodes) {
      const pod = cluster.pods.find((x) => x.node === node.name)!;
      const families: [string, string, string][] = [[pod.ip, topo.outsideIP, node.ip]];
      if (pod.ip6 && topo.outsideIP6 && node.ip6) families.push([pod.ip6, topo.outsideIP6, node.ip6]);
      for (const [from, to, want] of families) {
        const echo = await ping(pod.ns, to);
        const tcp = await runIn(pod.ns, [process.execPath, '-e', WHOAMI_CLIENT, to, String(port)], 5000);
        const seen = tcp.code === 0 ? tcp.stdout.trim() : '';
        const ok = echo.ok && seen === want;
        allOk &&= ok;
        const mark = tty ? (ok ? p.green('✔') : p.red('✘')) : ok ? 'ok' : 'FAIL';
        const what = seen ? `outside saw the connection come from ${seen}` : 'no TCP answer';
        out(`  ${mark} ${podLabel(pod)} ${from} → ${to}: ping ${echo.ok ? `${echo.ms?.toFixed(2)} ms` : 'lost'}, ${what}${ok ? ` = ${node.name}'s address (masqueraded)` : ` (want ${want})`}`);
      }
    }
  } finally {
    server.kill('SIGKILL');
  }
  return allOk;
}

// ---------- explore and clean up ----------

function exploreHints(cluster: Cluster, prefix: string): void {
  const n1 = cluster.node('node1');
  const pod = cluster.pods[0]!;
  const other = cluster.pods[cluster.pods.length - 1]!;
  const nodeFlags = (node: ClusterNode) =>
    `--subnet-file ${cluster.subnetFile(node.name)} --data-dir ${join(cluster.nodeDir(node.name), 'networks')} --etcd-endpoints http://127.0.0.1:2379`;
  out('The cluster stays up. Try:');
  out(`  ip netns exec ${n1.ns} ip -d link show flannel.1`);
  out(`  ip netns exec ${n1.ns} bridge fdb show dev flannel.1`);
  if (n1.ip6) out(`  ip netns exec ${n1.ns} ip -6 route show dev flannel-v6.1`);
  out(`  ip netns exec ${pod.ns} ping -c3 ${other.ip}              # ${podLabel(pod)} → ${podLabel(other)}`);
  out(`  ip netns exec ${n1.ns} ${PLUGIN_BIN} status ${nodeFlags(n1)}`);
  out(`  ip netns exec ${n1.ns} ${PLUGIN_BIN} doctor ${nodeFlags(n1)}`);
  out(`  ETCDCTL_API=3 etcdctl --endpoints ${cluster.etcdEndpoint} get --prefix ${ETCD_PREFIX}/subnets`);
  out(`  tail -f ${join(cluster.nodeDir('node1'), 'tsflanneld.log')}`);
  out(`  ip netns list | grep ${prefix}`);
  out();
  out(`Ctrl-C tears it all down. If this process gets killed instead: node build/demo/main.js --cleanup ${prefix}`);
}

function pidsIn(ns: string): number[] {
  const res = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
  return (res.stdout ?? '').split(/\s+/).filter(Boolean).map(Number).filter((n) => n > 1);
}

/** Processes whose command line names one of `dirs`: etcd and anything else started for the demo. */
function pidsMentioning(dirs: string[]): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (dirs.some((d) => cmdline.includes(d))) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Removes what a demo with this prefix left: its processes, namespaces and temp dirs. */
export function cleanupPrefix(prefix: string): { namespaces: number; processes: number; dirs: number } {
  const names = (spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${prefix}-`));
  const dirs = readdirSync(tmpdir()).filter((d) => d.startsWith(`${prefix}-`)).map((d) => join(tmpdir(), d));
  const pids = [...new Set([...names.flatMap(pidsIn), ...pidsMentioning(dirs)])];
  killAll(pids);
  for (const ns of names.reverse()) spawnSync('ip', ['netns', 'del', ns]);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  return { namespaces: names.length, processes: pids.length, dirs: dirs.length };
}

// ---------- main ----------

export async function main(argv: string[] = process.argv.slice(2)): Promise<number> {
  let opts: Options;
  try {
    opts = parseArgs(argv);
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    return 2;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo: needs root (it creates network namespaces); run it with sudo\n');
    return 2;
  }
  if (opts.cleanup) {
    const r = cleanupPrefix(opts.cleanup);
    out(`removed ${r.namespaces} namespace(s), ${r.processes} process(es), ${r.dirs} temp dir(s) of ${opts.cleanup}`);
    return 0;
  }
  if (!existsSync('/usr/bin/etcd')) {
    process.stderr.write('demo: /usr/bin/etcd is missing (bash scripts/setup.sh installs etcd-server)\n');
    return 2;
  }

  const tty = Boolean(process.stdout.isTTY);
  const p = paintFor(process.stdout);
  const prefix = `tsfdemo${randomBytes(2).toString('hex')}`;
  const started = Date.now();
  const step = (line: string) => out(`${p.dim(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s]`)} ${line}`);
  const dual = !opts.ipv4Only;
  const netConf = dual ? { ...DEFAULT_NET_CONF, EnableIPv6: true, IPv6Network: NETWORK6 } : DEFAULT_NET_CONF;
  const cluster = new Cluster({ prefix, nodes: NODES, resyncSeconds: 5, log: step, netConf, ipv6Underlay: dual });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      step('tearing down: agents, etcd, namespaces, temp files');
      await cluster.stop().catch((err: Error) => process.stderr.write(`demo: clean-up: ${err.message}\n`));
      cleanupPrefix(prefix); // anything a failure half way left behind
    })();
    return stopping;
  };
  let result = 1;
  const onSignal = (signal: NodeJS.Signals) => {
    out();
    step(`${signal}`);
    void stop().then(() => process.exit(opts.keep ? result : 130));
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

  try {
    step(p.bold(dual
      ? `dual-stack cluster ${prefix}: node1, node2 on segment a (192.168.77.0/24, fd00:77::/64), node3 on segment b (192.168.78.0/24, fd00:78::/64) behind a router; pods in 10.244.0.0/16 and ${NETWORK6}`
      : `cluster ${prefix}: node1, node2 on segment a (192.168.77.0/24), node3 on segment b (192.168.78.0/24) behind a router`));
    await cluster.start();
    for (const node of NODES) {
      for (let i = 1; i <= PODS_PER_NODE; i++) {
        const pod = await cluster.addPod(node.name, `pod${i}`);
        const via = pod.servedBy === 'agent' ? `the forwarder and ${node.name}'s agent (${cluster.cniSocket(node.name)})` : `the standalone plugin ${PLUGIN_BIN}`;
        step(`pod ${podLabel(pod)} added through ${via}: ${pod.ip}${pod.ip6 && pod.ip6 !== pod.ip ? ` and ${pod.ip6}` : ''}`);
      }
    }
    step('waiting for every node to program every other node');
    const states = await waitForMesh(cluster, 20_000);
    out();
    out(p.bold('What each node programmed (read back from the kernel):'));
    out();
    await printNodes(cluster, states, p);
    out(p.bold(dual ? 'Pod-to-pod ping matrix, IPv4 (flannel.1):' : 'Pod-to-pod ping matrix:'));
    let matrixOk = await pingMatrix(cluster.pods, p, tty);
    if (dual) {
      out();
      out(p.bold('Pod-to-pod ping matrix, IPv6 (flannel-v6.1):'));
      matrixOk = (await pingMatrix(cluster.pods, p, tty, (pod) => pod.ip6 ?? 'no-ipv6-address')) && matrixOk;
    }
    out();
    out(p.bold(dual
      ? `Masquerade: pods → ${cluster.topo!.outsideIP} and ${cluster.topo!.outsideIP6} (the outside host has no route to 10.244.0.0/16 or ${NETWORK6}):`
      : `Masquerade: pods → ${cluster.topo!.outsideIP} (the outside host has no route to 10.244.0.0/16):`));
    const masqOk = await masqueradeCheck(cluster, p, tty);
    out();
    result = matrixOk && masqOk ? 0 : 1;
    out(result === 0 ? p.green(p.bold('demo passed')) : p.red(p.bold('demo FAILED')));
    if (opts.keep) {
      out();
      exploreHints(cluster, prefix);
      await new Promise<never>(() => undefined); // until a signal ends the process
    }
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n`);
    for (const node of cluster.topo?.nodes ?? []) {
      const log = cluster.agentLog(node.name).trim().split('\n').slice(-5).join('\n');
      if (log) process.stderr.write(`--- last lines of ${node.name}'s tsflanneld log:\n${log}\n`);
    }
    result = 1;
  }
  await stop();
  return result;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`demo: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
