// A running tsflannel cluster on one machine: the namespace topology, a
// real etcd, one tsflanneld per node and pods added through the real
// tsflannel binary exactly as a runtime calls it: the forwarder, which hands
// each call to its node's agent over the agent's CNI socket (one socket per
// node, since the nodes share this machine's filesystem) and runs the
// standalone plugin when that agent is down. Shared by `npm run demo` and
// the end-to-end tests. Options make the underlay dual-stack (`ipv6Underlay`)
// and swap etcd for a Kubernetes API server (`kube`: the tests' fake one),
// so one harness runs IPv4, dual-stack and IPv6-only clusters in both modes.
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addPodNamespace, buildTopology, destroyTopology, type ClusterNode, type NodeSpec, type Topology } from './topology.js';
import { bridgeUnixToTcp } from './port-bridge.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const PLUGIN_BIN = join(ROOT, 'bin/tsflannel');
export const AGENT_BIN = join(ROOT, 'bin/tsflanneld');
/** /opt/cni/bin/tsflannel on a real node (scripts/build-forward.sh builds it). */
export const FORWARDER_BIN = join(ROOT, 'native/build/tsflannel-forward');
const BRIDGE_JS = join(ROOT, 'build/demo/port-bridge.js');
// Debian's etcd-server and etcd-client; TSF_ETCD_BIN runs another etcd build
// (its etcdctl next to it), the same override the tests' etcd helper reads.
const ETCD_BIN = process.env.TSF_ETCD_BIN ?? '/usr/bin/etcd';
const ETCDCTL_BIN = join(dirname(ETCD_BIN), 'etcdctl');

/** Kubernetes mode: the agents use --kube-subnet-mgr against this API server instead of etcd. */
export interface KubeStore {
  /** the API server's URL as seen from this process, e.g. http://127.0.0.1:41234 */
  url: string;
}

export interface ClusterOptions {
  prefix: string;
  nodes: NodeSpec[];
  netConf?: object;
  /** give the underlay IPv6 addresses too (fd00:77::/64 ...), for dual-stack and IPv6-only clusters */
  ipv6Underlay?: boolean;
  /** run the agents in Kubernetes mode against this API server (the caller creates the Node objects) */
  kube?: KubeStore;
  ipMasq?: boolean;
  /** seconds between the agents' full reconciliations */
  resyncSeconds?: number;
  extraAgentArgs?: string[];
  /** FORWARD policy of every node before its agent starts; DROP is what Docker sets */
  forwardPolicy?: 'ACCEPT' | 'DROP';
  /** how pods are added: through the forwarder and the agent (default), or the standalone plugin alone */
  cniPath?: 'agent' | 'standalone';
  log?: (line: string) => void;
}

export interface Pod {
  name: string;
  node: string;
  ns: string;
  containerId: string;
  /** the pod's first address (IPv4, or IPv6 in an IPv6-only cluster) */
  ip: string;
  /** the pod's IPv6 address, when it has one */
  ip6?: string;
  /** which path the ADD took: the node's agent, or the standalone plugin (agent down) */
  servedBy: 'agent' | 'standalone';
}

export interface AgentProc {
  node: ClusterNode;
  child: ChildProcess;
  logFile: string;
}

export const DEFAULT_NET_CONF = { Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } };

async function freePort(): Promise<number> {
  const srv: Server = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (addr === null || typeof addr === 'string') throw new Error('no free port');
  return addr.port;
}

function httpOk(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = get(url, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.setTimeout(1000, () => req.destroy());
  });
}

async function waitFor(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function waitExit(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => child.once('exit', () => r()));
}

export class Cluster {
  private tempDir?: string;
  topo?: Topology;
  etcdEndpoint = '';
  readonly agents = new Map<string, AgentProc>();
  readonly pods: Pod[] = [];
  private etcd?: ChildProcess;
  private etcdArgs: string[] = [];
  private etcdBridge?: Server;
  private kubeBridge?: Server;
  private readonly bridges: ChildProcess[] = [];
  /** per node: a process holding the node's own mount namespace (its own /run/wireguard) */
  private readonly mountHolders = new Map<string, ChildProcess>();
  private readonly log: (line: string) => void;

  constructor(private readonly opts: ClusterOptions) {
    this.log = opts.log ?? (() => undefined);
  }

  /** The cluster's temp dir; made by start(), so a cluster never started leaves nothing. */
  get dir(): string {
    if (!this.tempDir) throw new Error('cluster not started');
    return this.tempDir;
  }

  private get socket(): string {
    return join(this.dir, this.opts.kube ? 'kube-api.sock' : 'etcd.sock');
  }

  /** The port the store (etcd or the API server) answers on inside every node, on 127.0.0.1. */
  private get storePort(): number {
    return this.opts.kube ? 6443 : 2379;
  }

  /** the net-conf.json the agents read (Kubernetes mode), for tools run on a node */
  get netConfFile(): string {
    return join(this.dir, 'net-conf.json');
  }

  node(name: string): ClusterNode {
    const node = this.topo?.nodes.find((n) => n.name === name);
    if (!node) throw new Error(`no node ${name}`);
    return node;
  }

  nodeDir(name: string): string {
    return join(this.dir, name);
  }

  subnetFile(name: string): string {
    return join(this.nodeDir(name), 'subnet.env');
  }

  /** Builds the namespaces, starts etcd with the network config, and one agent per node. */
  async start(): Promise<void> {
    this.tempDir = mkdtempSync(join(tmpdir(), `${this.opts.prefix}-`));
    this.log('building node namespaces');
    this.topo = buildTopology(this.opts.prefix, this.opts.nodes, { ipv6: this.opts.ipv6Underlay === true });
    if (this.opts.forwardPolicy) {
      for (const node of this.topo.nodes) {
        execFileSync('ip', ['netns', 'exec', node.ns, 'iptables', '-w', '5', '-P', 'FORWARD', this.opts.forwardPolicy]);
      }
    }
    if (this.opts.kube) await this.startKubeBridge(this.opts.kube);
    else await this.startEtcd();
    for (const node of this.topo.nodes) await this.startAgent(node.name);
    for (const node of this.topo.nodes) {
      await waitFor(`${node.name}'s subnet file`, 30_000, () => existsSync(this.subnetFile(node.name)));
    }
    this.log('all agents hold a lease');
  }

  private async startEtcd(): Promise<void> {
    const port = await freePort();
    const peer = await freePort();
    this.etcdEndpoint = `http://127.0.0.1:${port}`;
    this.log(`starting etcd on ${this.etcdEndpoint}`);
    this.etcdArgs = [
      '--name', 'default', '--data-dir', join(this.dir, 'etcd'),
      '--listen-client-urls', this.etcdEndpoint, '--advertise-client-urls', this.etcdEndpoint,
      '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-cluster', `default=http://127.0.0.1:${peer}`, '--log-level', 'error', '--logger', 'zap',
    ];
    await this.resumeEtcd();
    const netConf = JSON.stringify(this.opts.netConf ?? DEFAULT_NET_CONF);
    await this.etcdctl(['put', '/coreos.com/network/config', netConf]);
    this.etcdBridge = await bridgeUnixToTcp(this.socket, '127.0.0.1', port);
  }

  /** Kubernetes mode: net-conf.json as a file (flannel's kube-flannel-cfg), the API server reachable from every node. */
  private async startKubeBridge(kube: KubeStore): Promise<void> {
    writeFileSync(this.netConfFile, JSON.stringify(this.opts.netConf ?? DEFAULT_NET_CONF));
    const url = new URL(kube.url);
    this.kubeBridge = await bridgeUnixToTcp(this.socket, url.hostname, Number(url.port));
  }

  /** Stops etcd (an outage); its data and port stay for resumeEtcd. */
  async haltEtcd(): Promise<void> {
    if (!this.etcd) return;
    this.etcd.kill('SIGTERM');
    await waitExit(this.etcd);
    this.etcd = undefined;
  }

  /** Starts etcd on its data dir and port and waits until it is healthy. */
  async resumeEtcd(): Promise<void> {
    this.etcd = spawn(ETCD_BIN, this.etcdArgs, { stdio: 'ignore' });
    await waitFor('etcd', 20_000, () => httpOk(`${this.etcdEndpoint}/health`));
  }

  /**
   * Wipes etcd (restored from nothing): stops it, deletes its data, starts
   * it empty on the same port and puts back only the network config, as an
   * operator rebuilding the store would.
   */
  async wipeEtcd(): Promise<void> {
    await this.haltEtcd();
    rmSync(join(this.dir, 'etcd'), { recursive: true, force: true });
    await this.resumeEtcd();
    await this.etcdctl(['put', '/coreos.com/network/config', JSON.stringify(this.opts.netConf ?? DEFAULT_NET_CONF)]);
  }

  /** Runs etcdctl (v3 API) against the cluster's etcd. */
  etcdctl(args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = spawn(ETCDCTL_BIN, ['--endpoints', this.etcdEndpoint, ...args], {
        env: { ...process.env, ETCDCTL_API: '3' },
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      // 'close', not 'exit': under load the output can still be in the pipe when the process exits.
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`etcdctl ${args[0]}: ${err}`))));
    });
  }

  /** `env`: added to the agent's environment (a test's PATH with a failing iptables in front). */
  async startAgent(name: string, extraArgs: string[] = [], env: Record<string, string> = {}): Promise<AgentProc> {
    const node = this.node(name);
    mkdirSync(this.nodeDir(name), { recursive: true });
    if (!this.agents.size || !this.bridges.some((b) => b.spawnargs.includes(node.ns))) {
      await this.startBridge(node);
    }
    const logFile = join(this.nodeDir(name), 'tsflanneld.log');
    // The log is this agent's alone: a wait for a line must not be met by the previous agent's.
    writeFileSync(logFile, '');
    const args = [
      `--mount=${await this.mountNs(name)}`, 'ip', 'netns', 'exec', node.ns, AGENT_BIN,
      ...(this.opts.kube
        ? ['--kube-subnet-mgr', '--kube-api-url', `http://127.0.0.1:${this.storePort}`, '--net-config-path', this.netConfFile]
        : ['--etcd-endpoints', `http://127.0.0.1:${this.storePort}`]),
      '--iface', node.iface,
      '--subnet-file', this.subnetFile(name),
      '--cni-socket', this.cniSocket(name),
      '--node-name', name,
      '--resync-period', String(this.opts.resyncSeconds ?? 5),
      ...(this.opts.ipMasq === false ? [] : ['--ip-masq']),
      ...(this.opts.extraAgentArgs ?? []),
      ...extraArgs,
    ];
    // flannel's default key path would be one file for every simulated node.
    const child = spawn('nsenter', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, WIREGUARD_KEY_FILE: this.wireguardKeyFile(name), ...env } });
    const chunks: string[] = [];
    child.stderr?.on('data', (d: Buffer) => {
      chunks.push(d.toString());
      writeFileSync(logFile, chunks.join(''));
    });
    const agent = { node, child, logFile };
    this.agents.set(name, agent);
    this.log(`started tsflanneld on ${name}`);
    return agent;
  }

  private async startBridge(node: ClusterNode): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', node.ns, process.execPath, BRIDGE_JS, '127.0.0.1', String(this.storePort), this.socket], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.bridges.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout?.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`etcd bridge in ${node.ns} exited ${code}`)));
    });
  }

  /** The node's WireGuard private key file (WIREGUARD_KEY_FILE). */
  wireguardKeyFile(name: string): string {
    return join(this.nodeDir(name), 'wgkey');
  }

  /**
   * The node's mount namespace: a copy of ours with a private tmpfs on
   * /run/wireguard, where wg and wireguard-go keep one UAPI socket per
   * device name. A real node has its own /run; without this every simulated
   * node's flannel-wg would share one socket path. It lives as long as the
   * cluster, so a wireguard-go daemon outlives agent restarts as on a node.
   * Slave propagation: the pod netns files a runtime bind-mounts under
   * /run/netns afterwards still appear here, where the agent serves the
   * node's CNI calls, while the tmpfs stays this node's own.
   */
  private async mountNs(name: string): Promise<string> {
    let holder = this.mountHolders.get(name);
    if (!holder) {
      // It idles following a file in the cluster dir, so a clean-up that
      // looks for processes naming that dir (the demo's --cleanup) finds it.
      mkdirSync(this.nodeDir(name), { recursive: true });
      const hold = join(this.nodeDir(name), 'mount-ns.hold');
      writeFileSync(hold, '');
      const script = 'mkdir -p /run/wireguard && mount -t tmpfs -o mode=0700 tsflannel-wg /run/wireguard && echo ready && exec tail -f "$0"';
      holder = spawn('unshare', ['--mount', '--propagation', 'slave', 'sh', '-c', script, hold], { stdio: ['ignore', 'pipe', 'inherit'] });
      this.mountHolders.set(name, holder);
      const h = holder;
      await new Promise<void>((resolve, reject) => {
        h.stdout?.once('data', () => resolve());
        h.once('exit', (code) => reject(new Error(`mount namespace holder for ${name} exited ${code}`)));
      });
    }
    return `/proc/${holder.pid}/ns/mnt`;
  }

  /**
   * Runs a command inside a node, in its network and mount namespaces (e.g.
   * `wg show`), without blocking: the etcd bridge's root end lives in this
   * process. Rejects on a non-zero exit with `code` and `stdout` attached.
   */
  async nodeExec(name: string, cmd: string, args: string[]): Promise<string> {
    const mnt = await this.mountNs(name);
    const argv = [`--mount=${mnt}`, `--net=${this.node(name).nsPath}`, cmd, ...args];
    return new Promise((resolve, reject) => {
      execFile('nsenter', argv, { encoding: 'utf8', timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        reject(Object.assign(new Error(`${cmd} in ${name}: ${stderr || err.message}`), { code: typeof err.code === 'number' ? err.code : -1, stdout }));
      });
    });
  }

  /** Stops a node's agent with a signal and waits for it to exit. */
  async stopAgent(name: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const agent = this.agents.get(name);
    if (!agent) return;
    agent.child.kill(signal);
    await waitExit(agent.child);
    this.agents.delete(name);
  }

  agentLog(name: string): string {
    const file = join(this.nodeDir(name), 'tsflanneld.log');
    return existsSync(file) ? readFileSync(file, 'utf8') : '';
  }

  /** The node's agent socket: the conflist's agentSocket and tsflanneld's --cni-socket. */
  cniSocket(nodeName: string): string {
    return join(this.nodeDir(nodeName), 'run', 'cni.sock');
  }

  private pluginConf(nodeName: string): object {
    return {
      cniVersion: '1.0.0', name: 'cbr0', type: 'tsflannel',
      subnetFile: this.subnetFile(nodeName), dataDir: join(this.nodeDir(nodeName), 'networks'),
      agentSocket: this.opts.cniPath === 'standalone' ? '' : this.cniSocket(nodeName),
    };
  }

  /** Runs the plugin inside a node namespace, as a runtime would. */
  plugin(nodeName: string, env: Record<string, string>, stdin: object = this.pluginConf(nodeName)): Promise<{ code: number; stdout: string; stderr: string }> {
    const node = this.node(nodeName);
    const viaAgent = this.opts.cniPath !== 'standalone' && existsSync(FORWARDER_BIN);
    const bin = viaAgent ? FORWARDER_BIN : PLUGIN_BIN;
    return new Promise((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', node.ns, bin], {
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin', CNI_PATH: '/usr/lib/cni', TSFLANNEL_STANDALONE: PLUGIN_BIN, ...env },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
      child.stdin.end(JSON.stringify(stdin));
    });
  }

  async addPod(nodeName: string, podName: string): Promise<Pod> {
    if (!this.topo) throw new Error('cluster not started');
    const ns = addPodNamespace(this.topo, `${nodeName}-${podName}`);
    const containerId = `${nodeName}-${podName}`;
    const out = await this.plugin(nodeName, {
      CNI_COMMAND: 'ADD', CNI_CONTAINERID: containerId, CNI_NETNS: `/var/run/netns/${ns}`, CNI_IFNAME: 'eth0',
      CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${podName}`,
    });
    if (out.code !== 0) throw new Error(`ADD ${podName} on ${nodeName} failed: ${out.stdout}${out.stderr}`);
    const result = JSON.parse(out.stdout) as { ips: { address: string }[] };
    const servedBy = this.opts.cniPath === 'standalone' || out.stderr.includes('running standalone') ? 'standalone' : 'agent';
    const addrs = result.ips.map((i) => i.address.split('/')[0]!);
    const pod: Pod = { name: podName, node: nodeName, ns, containerId, ip: addrs[0]!, servedBy };
    const ip6 = addrs.find((a) => a.includes(':'));
    if (ip6) pod.ip6 = ip6;
    this.pods.push(pod);
    return pod;
  }

  async deletePod(pod: Pod): Promise<void> {
    const out = await this.plugin(pod.node, {
      CNI_COMMAND: 'DEL', CNI_CONTAINERID: pod.containerId, CNI_NETNS: `/var/run/netns/${pod.ns}`, CNI_IFNAME: 'eth0',
    });
    if (out.code !== 0) throw new Error(`DEL ${pod.name} failed: ${out.stdout}`);
    this.pods.splice(this.pods.indexOf(pod), 1);
  }

  /** Stops every process and removes every namespace and file the cluster made. */
  async stop(): Promise<void> {
    for (const name of [...this.agents.keys()]) await this.stopAgent(name).catch(() => undefined);
    for (const b of this.bridges) b.kill('SIGKILL');
    // Daemons the agents left behind on purpose (wireguard-go outlives its
    // agent, as on a node) keep a namespace alive: end what runs in ours.
    for (const node of this.topo?.nodes ?? []) {
      const pids = spawnSync('ip', ['netns', 'pids', node.ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGTERM');
        } catch {
          // already gone
        }
      }
    }
    for (const h of this.mountHolders.values()) h.kill('SIGKILL');
    this.etcdBridge?.close();
    this.kubeBridge?.close();
    if (this.etcd) {
      this.etcd.kill('SIGTERM');
      await waitExit(this.etcd);
    }
    if (this.topo) destroyTopology(this.topo);
    if (this.tempDir) rmSync(this.tempDir, { recursive: true, force: true });
  }
}
