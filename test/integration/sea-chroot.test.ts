// The single executables on a machine with no Node: a chroot holding only
// dist/tsflannel, dist/tsflanneld and the shared libraries ldd names. The
// plugin answers VERSION, attaches a pod netns (ADD) from a node netns and
// detaches it (DEL); tsflanneld prints its help; install copies itself.
// Mounts are made inside `unshare --mount` (within `ip netns exec`, which
// has its own mount namespace too), so they vanish with the process even
// when a test fails; afterAll still checks none leaked before deleting.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip, skipOrFail } from '../helpers/require.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const DIST = join(REPO, 'dist');
const CHROOT = '/usr/sbin/chroot';
const NET = 'tsfsea';
const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
const CONF = JSON.stringify({ cniVersion: '1.0.0', name: NET, type: 'tsflannel' });

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Every library ldd lists for these files, the dynamic loader included. */
function sharedLibraries(files: string[]): string[] {
  const libs = new Set<string>();
  for (const f of files) {
    const out = execFileSync('ldd', [f], { encoding: 'utf8' });
    for (const m of out.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)) libs.add(m[1]!);
  }
  return [...libs];
}

function run(cmd: string, args: string[], input = ''): Run {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

describe.skipIf(requireOrSkip('sea-chroot', { root: isRoot }))('single executables in a chroot without Node', () => {
  let root = '';
  let buildError = '';
  let node = '';
  let pod = '';

  /** `env -i VAR=... chroot <root> <argv>`, optionally in a node netns with the pod netns and /proc mounted. */
  const inChroot = (argv: string[], env: Record<string, string>, opts: { nodeNs?: string; podNs?: string; input?: string } = {}): Run => {
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const target = ['env', '-i', ...envArgs, CHROOT, root, ...argv];
    if (!opts.nodeNs) return run(target[0]!, target.slice(1), opts.input);
    const mounts = [join(root, 'proc')];
    let script = 'set -e; mount -t proc proc "$1"; ';
    if (opts.podNs) {
      mounts.push(nsPath(opts.podNs), join(root, nsPath(opts.podNs)));
      script += 'mount --bind "$2" "$3"; shift; shift; ';
    }
    script += 'shift; exec "$@"';
    return run('ip', ['netns', 'exec', opts.nodeNs, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...mounts, ...target], opts.input);
  };

  const cni = (command: string, containerId: string, nodeNs: string, podNs: string) =>
    inChroot(
      ['/tsflannel'],
      { CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_NETNS: nsPath(podNs), CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' },
      { nodeNs, podNs, input: CONF },
    );

  beforeAll(() => {
    const build = spawnSync('bash', [join(REPO, 'scripts/package.sh')], { cwd: REPO, encoding: 'utf8', timeout: 170_000 });
    if (build.status !== 0 || !['tsflannel', 'tsflanneld', 'tsflannel-forward'].every((b) => existsSync(join(DIST, b)))) {
      buildError = `dist/ could not be built (scripts/package.sh exit ${build.status}): ${(build.stderr || String(build.error ?? '')).trim().slice(-2000)}`;
      return;
    }
    root = mkdtempSync(join(tmpdir(), 'tsf-chroot-'));
    const binaries = ['tsflannel', 'tsflanneld'].map((b) => join(DIST, b));
    for (const b of binaries) copyFileSync(b, join(root, b.slice(DIST.length)));
    // Static: it needs no library, so it stays out of the copied-libraries list.
    copyFileSync(join(DIST, 'tsflannel-forward'), join(root, 'tsflannel-forward'));
    const embedded = [join(REPO, 'native/build/libtsfnl.so')];
    for (const lib of sharedLibraries([...binaries, ...embedded])) {
      mkdirSync(join(root, dirname(lib)), { recursive: true });
      copyFileSync(lib, join(root, lib));
    }
    for (const d of ['proc', 'var/run/netns', 'run/flannel']) mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, 'run/flannel/subnet.env'), SUBNET_ENV);
    node = addNetns('seanode');
    pod = addNetns('seapod');
    writeFileSync(join(root, nsPath(pod)), '');
  }, 180_000);

  afterAll(() => {
    cleanupAll();
    if (!root) return;
    const leaked = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4])
      .filter((m): m is string => !!m && m.startsWith(root));
    for (const m of leaked.reverse()) spawnSync('umount', ['-l', m]);
    rmSync(root, { recursive: true, force: true });
    expect(leaked).toEqual([]);
  });

  const needsBuild = (skip: (note?: string) => void) => {
    if (buildError) skipOrFail(skip, 'sea-chroot', buildError);
  };

  it('holds nothing but the three binaries, the SEAs\' libraries (the static forwarder needs none) and the node state files', ({ skip }) => {
    needsBuild(skip);
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(dir, e.name));
        else files.push(join(dir, e.name).slice(root.length));
      }
    };
    walk(root);
    const libs = sharedLibraries(['tsflannel', 'tsflanneld'].map((b) => join(DIST, b)).concat(join(REPO, 'native/build/libtsfnl.so')));
    expect(files.sort()).toEqual(['/tsflannel', '/tsflanneld', '/tsflannel-forward', '/run/flannel/subnet.env', nsPath(pod), ...libs].sort());
    expect(files.some((f) => /node$|node_modules|\.js$|\.cjs$/.test(f))).toBe(false);
  });

  it('answers VERSION with env -i and no /proc, without extracting anything', ({ skip }) => {
    needsBuild(skip);
    const r = inChroot(['/tsflannel'], { CNI_COMMAND: 'VERSION' }, { input: '{"cniVersion":"1.0.0"}' });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { cniVersion: string; supportedVersions: string[] };
    expect(out.cniVersion).toBe('1.0.0');
    expect(out.supportedVersions).toEqual(expect.arrayContaining(['0.3.1', '0.4.0', '1.0.0', '1.1.0']));
    // VERSION never loads netlink, so the native files stay embedded.
    expect(existsSync(join(root, 'var/lib/tsflannel'))).toBe(false);
  });

  it('attaches a pod with ADD from a node netns, then detaches it with DEL', ({ skip }) => {
    needsBuild(skip);
    const add = cni('ADD', 'sea0000001', node, pod);
    expect(add.stderr).toBe('');
    expect(add.code).toBe(0);
    const result = JSON.parse(add.stdout) as { ips: { address: string; gateway: string }[]; interfaces: { name: string; sandbox?: string }[] };
    const [ip] = result.ips;
    expect(ip!.address).toMatch(/^10\.244\.9\.\d+\/24$/);
    expect(result.interfaces.find((i) => i.sandbox)).toMatchObject({ name: 'eth0', sandbox: nsPath(pod) });

    // The kernel agrees: the pod has the address, the node a bridge holding the gateway.
    const podAddrs = ipJson<{ addr_info: { family: string; local: string; prefixlen: number }[] }[]>(pod, ['addr', 'show', 'dev', 'eth0']);
    expect(podAddrs[0]!.addr_info).toContainEqual(expect.objectContaining({ family: 'inet', local: ip!.address.split('/')[0], prefixlen: 24 }));
    const bridge = ipJson<{ addr_info: { family: string; local: string }[] }[]>(node, ['addr', 'show', 'dev', 'cni0']);
    expect(bridge[0]!.addr_info.map((a) => a.local)).toContain('10.244.9.1');
    inNs(pod, 'ping', ['-c', '1', '-W', '2', '10.244.9.1']);

    // The native files were extracted once, into the private cache inside the chroot.
    const cache = join(root, 'var/lib/tsflannel/sea');
    const [key] = readdirSync(cache);
    expect(readdirSync(join(cache, key!)).sort()).toEqual(['koffi.node', 'libtsfnl.so']);
    expect(lstatSync(join(cache, key!)).mode & 0o777).toBe(0o700);
    const inode = lstatSync(join(cache, key!, 'libtsfnl.so')).ino;
    const lease = join(root, 'var/lib/cni/networks', NET, ip!.address.split('/')[0]!);
    expect(readFileSync(lease, 'utf8')).toContain('sea0000001');

    const del = cni('DEL', 'sea0000001', node, pod);
    expect(del.stderr).toBe('');
    expect(del.code).toBe(0);
    expect(del.stdout).toBe('');
    expect(ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname)).toEqual(['lo']);
    expect(ipJson<{ ifname: string }[]>(node, ['link', 'show', 'type', 'veth'])).toEqual([]);
    expect(existsSync(lease)).toBe(false);
    // DEL reused the extracted copy.
    expect(readdirSync(cache)).toEqual([key]);
    expect(lstatSync(join(cache, key!, 'libtsfnl.so')).ino).toBe(inode);
  });

  it('installs the forwarder beside it as tsflannel and itself as tsflannel-standalone with `tsflannel install` (the init container path)', ({ skip }) => {
    needsBuild(skip);
    const r = inChroot(['/tsflannel', 'install', '--cni-bin-dir', '/opt/cni/bin', '--cni-conf-dir', '/etc/cni/net.d'], {}, { nodeNs: node });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const installed = readFileSync(join(root, 'opt/cni/bin/tsflannel'));
    expect(installed.equals(readFileSync(join(DIST, 'tsflannel-forward')))).toBe(true);
    const standalone = readFileSync(join(root, 'opt/cni/bin/tsflannel-standalone'));
    expect(standalone.equals(readFileSync(join(DIST, 'tsflannel')))).toBe(true);
    const conflist = readFileSync(join(root, 'etc/cni/net.d/10-tsflannel.conflist'));
    expect(conflist.equals(readFileSync(join(REPO, 'conf/10-tsflannel.conflist')))).toBe(true);
  });

  it('runs tsflanneld --help', ({ skip }) => {
    needsBuild(skip);
    // In an empty netns: if --help ever fell through to the agent, it could reach nothing.
    const r = inChroot(['/tsflanneld', '--help'], {}, { nodeNs: addNetns('seahelp') });
    expect(r.stdout).toContain('tsflanneld [options]');
    expect(r.stdout).toContain('--kube-subnet-mgr');
    expect(r.stdout).toContain('--healthz-port');
  });

  it('exits 0 after tsflanneld --help without starting the agent', ({ skip }) => {
    needsBuild(skip);
    const r = inChroot(['/tsflanneld', '--help'], {}, { nodeNs: addNetns('seahelp2') });
    expect(r.stderr, 'tsflanneld went on to run the agent after printing --help').toBe('');
    expect(r.code).toBe(0);
  });
});
