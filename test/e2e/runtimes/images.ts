// Container images for the runtime tests, made on the spot from Debian's
// busybox-static with buildah (no registry): a shell image whose command is
// /bin/sh and a pause image whose entrypoint sleeps, each pushed to an OCI
// archive that containerd imports. buildah's own storage (vfs, so no mounts)
// lives in the temp dir and is deleted once the archives exist.
import { copyFileSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, unmountUnder } from './host.js';

export const SHELL_IMAGE = 'tsf.local/shell:1';
export const PAUSE_IMAGE = 'tsf.local/pause:1';

const APPLETS = ['sh', 'ls', 'ip', 'ping', 'cat', 'echo', 'sleep', 'hostname', 'wget', 'nc', 'httpd', 'true', 'ifconfig', 'route', 'grep', 'mkdir', 'ps', 'kill'];

export interface Images {
  /** a root file system with busybox, usable as `podman --rootfs` */
  rootfs: string;
  shellTar: string;
  pauseTar: string;
}

/** Writes a minimal busybox root file system into `dir`. */
export function buildRootfs(dir: string): string {
  for (const sub of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'run', 'root', 'www']) mkdirSync(join(dir, sub), { recursive: true });
  copyFileSync('/bin/busybox', join(dir, 'bin/busybox'));
  for (const applet of APPLETS) symlinkSync('busybox', join(dir, 'bin', applet));
  writeFileSync(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(dir, 'etc/group'), 'root:x:0:\n');
  writeFileSync(join(dir, 'www/index.html'), 'tsflannel-ok\n');
  return dir;
}

/** The containers.conf every buildah/podman call here uses (through CONTAINERS_CONF). */
export function containersConf(extra = ''): string {
  return [
    '[containers]',
    // root lacks CAP_SYS_RESOURCE here: the default 1048576 nofile limit cannot be set
    'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]',
    '[engine]',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    'runtime = "runc"',
    extra,
  ].join('\n');
}

/** Builds both images in `dir` and returns the archives; removes buildah's storage afterwards. */
export async function buildImages(dir: string): Promise<Images> {
  mkdirSync(dir, { recursive: true });
  const rootfs = buildRootfs(join(dir, 'rootfs'));
  const conf = join(dir, 'containers.conf');
  writeFileSync(conf, containersConf());
  const storage = join(dir, 'buildah');
  const env = { ...process.env, CONTAINERS_CONF: conf };
  const buildah = (args: string[]) =>
    run('buildah', ['--root', join(storage, 'root'), '--runroot', join(storage, 'run'), '--storage-driver', 'vfs', ...args], { env });
  const image = async (ref: string, entrypoint: string[], cmd: string[], tar: string) => {
    const ctr = (await buildah(['from', 'scratch'])).stdout.trim();
    await buildah(['copy', ctr, `${rootfs}/`, '/']);
    await buildah(['config', '--entrypoint', JSON.stringify(entrypoint), '--cmd', JSON.stringify(cmd), ctr]);
    await buildah(['commit', '-q', ctr, ref]);
    await buildah(['rm', ctr]);
    await buildah(['push', '-q', ref, `oci-archive:${tar}:${ref}`]);
  };
  const images: Images = { rootfs, shellTar: join(dir, 'shell-oci.tar'), pauseTar: join(dir, 'pause-oci.tar') };
  try {
    await image(SHELL_IMAGE, [], ['/bin/sh'], images.shellTar);
    await image(PAUSE_IMAGE, ['/bin/sleep', '2147483647'], [], images.pauseTar);
  } finally {
    await buildah(['rmi', '--all', '--force']).catch(() => undefined);
    unmountUnder(storage);
    rmSync(storage, { recursive: true, force: true });
  }
  return images;
}
