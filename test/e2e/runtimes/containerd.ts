// A private containerd daemon for one test node: its own config, root,
// state, sockets and runc root under a temp dir, CNI pointed at the test's
// bin and conf dirs, started inside a node's network namespace with
// `nsenter --net` (`ip netns exec` remounts /sys, which hides the cgroup
// mounts from runc). stop() ends the daemon and every shim it started and
// unmounts whatever was left mounted under its dir.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CriClient, type PodSandboxConfig, type PodSandboxStatus } from './cri-client.js';
import { eventually, pidsWithArg, removeCniCache, removeNetnsFile, run, terminate, unmountUnder, type RunOptions, type RunResult } from './host.js';
import type { Images } from './images.js';

export interface ContainerdOptions {
  /** everything of this daemon lives here (created) */
  dir: string;
  /** network namespace path to run in; absent = the caller's */
  netns?: string;
  binDir: string;
  confDir: string;
  /** image the CRI plugin runs as each pod's sandbox (pause) container */
  sandboxImage: string;
  /**
   * Host paths to show the daemon (and the CNI plugins it runs) at other
   * paths, [source, target] each: it then runs in a private mount namespace
   * with these bind mounts, as a node whose /run/flannel is the test's dir.
   */
  bindMounts?: [string, string][];
}

function toml(s: string): string {
  return JSON.stringify(s);
}

export function containerdConfig(opts: ContainerdOptions): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = ${toml(join(opts.dir, 'root'))}
state = ${toml(join(opts.dir, 'state'))}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = ${toml(join(opts.dir, 'containerd.sock'))}

[ttrpc]
  address = ${toml(join(opts.dir, 'containerd.sock.ttrpc'))}

[plugins]
  [${cri}]
    sandbox_image = ${toml(opts.sandboxImage)}
    # no CAP_SYS_RESOURCE on this kind of machine: the sandbox's oom_score_adj -998 cannot be set
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [${cri}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [${cri}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [${cri}.containerd.runtimes.runc.options]
          Root = ${toml(join(opts.dir, 'runc'))}
    [${cri}.cni]
      bin_dir = ${toml(opts.binDir)}
      conf_dir = ${toml(opts.confDir)}
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = ${toml(join(opts.dir, 'opt'))}
`;
}

export class Containerd {
  readonly socket: string;
  readonly runcRoot: string;
  readonly logFile: string;
  private child?: ChildProcess;
  private clients: CriClient[] = [];

  private constructor(readonly opts: ContainerdOptions) {
    this.socket = join(opts.dir, 'containerd.sock');
    this.runcRoot = join(opts.dir, 'runc');
    this.logFile = join(opts.dir, 'containerd.log');
  }

  /** Writes the config and starts the daemon; resolves once `ctr version` answers. */
  static async start(opts: ContainerdOptions): Promise<Containerd> {
    const d = new Containerd(opts);
    mkdirSync(opts.dir, { recursive: true });
    const config = join(opts.dir, 'config.toml');
    writeFileSync(config, containerdConfig(opts));
    let daemon = ['containerd', '--config', config];
    if (opts.bindMounts?.length) {
      const script = 'set -e; while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done; shift; exec "$@"';
      daemon = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'node-mounts', ...opts.bindMounts.flat(), '--', ...daemon];
    }
    const [cmd, args] = opts.netns ? ['nsenter', [`--net=${opts.netns}`, ...daemon]] : [daemon[0], daemon.slice(1)];
    const log = createWriteStream(d.logFile);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    d.child = child;
    try {
      await eventually('containerd to answer', 20_000, async () => {
        if (child.exitCode !== null) throw new Error(`containerd exited ${child.exitCode}; see ${d.logFile}`);
        return existsSync(d.socket) && (await d.ctr(['version'], { allowFail: true })).code === 0;
      });
    } catch (err) {
      await d.stop({ keepDir: true });
      throw err;
    }
    return d;
  }

  /** Runs ctr against this daemon (namespace `k8s.io` unless given). */
  ctr(args: string[], opts: RunOptions & { namespace?: string } = {}): Promise<RunResult> {
    return run('ctr', ['-a', this.socket, '-n', opts.namespace ?? 'k8s.io', ...args], opts);
  }

  /**
   * Runs ctr in a node netns with CNI pointed at the test's dirs. `ctr run --cni`
   * has no flag or env for them: it reads /etc/cni/net.d and Debian's
   * /usr/lib/cni. So ctr runs in a private mount namespace where the test's
   * conf and bin dirs are bind-mounted over those two paths; the machine's
   * dirs are never written, and the mounts vanish with the process.
   */
  ctrWithCni(args: string[], cni: { netns: string; confDir: string; binDir: string }, opts: RunOptions & { namespace?: string } = {}): Promise<RunResult> {
    const script = 'set -e; mount --bind "$1" /etc/cni/net.d; mount --bind "$2" /usr/lib/cni; shift 2; exec "$@"';
    return run('nsenter', [
      `--net=${cni.netns}`, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'ctr-cni', cni.confDir, cni.binDir,
      'ctr', '-a', this.socket, '-n', opts.namespace ?? 'default', ...args,
    ], opts);
  }

  /** Flags that keep a `ctr run` container's runc state and FIFOs inside this daemon's dir. */
  ctrRunFlags(): string[] {
    return ['--runc-root', this.runcRoot, '--fifo-dir', join(this.opts.dir, 'fifo')];
  }

  /** The pause and shell images, into the namespace CRI uses. */
  async importCriImages(images: Images): Promise<void> {
    await this.importImage(images.pauseTar);
    await this.importImage(images.shellTar);
  }

  async importImage(tar: string, namespace = 'k8s.io'): Promise<void> {
    await this.ctr(['images', 'import', tar], { namespace });
  }

  /** A CRI client on this daemon's socket, closed by stop(). */
  cri(): CriClient {
    const c = new CriClient(this.socket);
    this.clients.push(c);
    return c;
  }

  /** Ends the daemon and its shims, unmounts leftovers under the dir and removes it. */
  async stop(opts: { keepDir?: boolean } = {}): Promise<string[]> {
    for (const c of this.clients) c.close();
    this.clients = [];
    const pids = this.child?.pid !== undefined ? [this.child.pid] : [];
    await terminate(pids, 5000);
    // shims outlive the daemon by design; they carry its socket in their command line
    await terminate(pidsWithArg(this.socket), 3000);
    const unmounted = unmountUnder(this.opts.dir);
    if (!opts.keepDir) rmSync(this.opts.dir, { recursive: true, force: true });
    return unmounted;
  }
}

/**
 * The pod sandboxes a CRI test runs on its nodes, run and removed as a kubelet
 * does, with what the clean-up needs: the sandboxes still there, by node, and
 * every id and netns file the test made.
 */
export class CriSandboxes<N extends { cri: CriClient }> {
  private readonly live = new Map<string, { node: N; netns?: string }>();
  private readonly every: string[] = [];

  /** RunPodSandbox, then its status and netns file. */
  async run(n: N, config: PodSandboxConfig): Promise<{ id: string; status: PodSandboxStatus; netns: string }> {
    const id = await n.cri.runPodSandbox(config);
    this.live.set(id, { node: n });
    this.every.push(id);
    const { status } = await n.cri.podSandboxStatus(id);
    const netns = await n.cri.sandboxNetns(id);
    this.live.get(id)!.netns = netns;
    return { id, status, netns };
  }

  /** StopPodSandbox then RemovePodSandbox. */
  async remove(n: N, id: string): Promise<void> {
    await n.cri.stopPodSandbox(id);
    await n.cri.removePodSandbox(id);
    this.live.delete(id);
  }

  /** The test removed the sandbox itself. */
  forget(id: string): void {
    this.live.delete(id);
  }

  /** Clean-up: removes every sandbox still on n, errors ignored. */
  async removeAllOn(n: N): Promise<void> {
    for (const [id, s] of this.live) if (s.node === n) await this.remove(n, id).catch(() => undefined);
  }

  /** Clean-up: the libcni cache entries of every sandbox run. */
  removeCniCache(): void {
    removeCniCache(this.every);
  }

  /** Clean-up: the netns files of the sandboxes still there. */
  removeNetnsFiles(): void {
    for (const s of this.live.values()) if (s.netns) removeNetnsFile(s.netns);
  }
}
