// podman 4 with its CNI backend, confined to a test dir: CONTAINERS_CONF
// names the test's plugin and config dirs, storage root/runroot and tmp dir
// are private (vfs, so images never mount), and every call runs inside a node
// netns with `nsenter --net`, so the host side of each pod (cni0, veth,
// portmap's rules) lands in that node. Containers run from a plain root file
// system (`--rootfs`), no image store needed.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeCgroup, run, unmountUnder, type RunResult } from './host.js';
import { containersConf } from './images.js';

export interface PodmanOptions {
  dir: string;
  netns: string;
  binDir: string;
  confDir: string;
  /** cgroup parent for every container, removed by cleanup() */
  cgroupParent: string;
}

export class Podman {
  readonly conf: string;

  constructor(readonly opts: PodmanOptions) {
    mkdirSync(opts.dir, { recursive: true });
    this.conf = join(opts.dir, 'containers.conf');
    writeFileSync(this.conf, containersConf([
      `tmp_dir = ${JSON.stringify(join(opts.dir, 'tmp'))}`,
      '[network]',
      'network_backend = "cni"',
      `cni_plugin_dirs = [${JSON.stringify(opts.binDir)}]`,
      `network_config_dir = ${JSON.stringify(opts.confDir)}`,
    ].join('\n')));
  }

  /** Runs `podman <args>` in the node netns; rejects on failure unless allowFail. */
  podman(args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    const base = [
      `--net=${this.opts.netns}`, 'podman',
      '--root', join(this.opts.dir, 'storage'), '--runroot', join(this.opts.dir, 'runroot'),
      '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs',
      // runc's state would otherwise go to /run/runc
      '--runtime-flag', `root=${join(this.opts.dir, 'runc')}`,
    ];
    return run('nsenter', [...base, ...args], { env: { ...process.env, CONTAINERS_CONF: this.conf }, ...opts });
  }

  /** Flags for `podman run` that keep a container inside the test's cgroup. */
  runFlags(): string[] {
    return ['--cgroup-parent', this.opts.cgroupParent];
  }

  async inspect<T>(name: string, format: string): Promise<T> {
    const out = await this.podman(['inspect', name, '--format', `{{json ${format}}}`]);
    return JSON.parse(out.stdout) as T;
  }

  /** Removes every container, unmounts what podman left and deletes the dir. */
  async cleanup(): Promise<void> {
    await this.podman(['rm', '--all', '--force', '--time', '0'], { allowFail: true });
    await removeCgroup(this.opts.cgroupParent);
    unmountUnder(this.opts.dir);
    rmSync(this.opts.dir, { recursive: true, force: true });
  }
}
