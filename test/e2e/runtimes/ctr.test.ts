// tsflannel under `ctr run --cni` (containerd's own client, go-cni) on a node
// of a real tsflannel cluster: the container gets an IP from the node's
// subnet, pings the gateway and a pod the plugin added directly, and ctr's
// teardown hands everything back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Pod } from '../../../src/demo/cluster.js';
import { Containerd } from './containerd.js';
import { eventually, leaseFiles, removeCgroup, removeCniCache, mustSkip, vethsIn, type RunResult } from './host.js';
import { buildImages, PAUSE_IMAGE, SHELL_IMAGE } from './images.js';
import { Cleanup, expectPathTaken, inSubnet, nodeNet, RUNTIME_PATHS, setUpSuite, suitePrefix, type NodeNet } from './suite.js';

// ctr's CNI dirs are fixed paths; the test shadows them, so they must exist to be mount points.
const fixedDirs = ['/etc/cni/net.d', '/usr/lib/cni'].filter((d) => !existsSync(d));
const skip = mustSkip('ctr', ['containerd', 'ctr', 'runc', 'buildah', 'busybox', 'nsenter', 'unshare'], {
  "ctr's fixed CNI dirs /etc/cni/net.d and /usr/lib/cni (shadowed by the test)": fixedDirs.length === 0,
});

describe.skipIf(skip).each(RUNTIME_PATHS)('tsflannel under ctr run --cni: $name', (path) => {
  const prefix = suitePrefix('ctr');
  const cgroupParent = `/${prefix}`;
  const cleanup = new Cleanup();
  let cluster: Cluster;
  let net: NodeNet;
  let containerd: Containerd;
  let binDir = '';
  let neighbour: Pod;
  const machineCniDirs = ['/etc/cni/net.d', '/usr/lib/cni'];
  const listing = () => machineCniDirs.map((d) => `${d}: ${readdirSync(d).sort().join(' ')}`);
  let listingBefore: string[] = [];

  beforeAll(async () => {
    listingBefore = listing();
    const setup = await setUpSuite({
      prefix, path, cleanup,
      nodes: [{ name: 'n1', segment: 'a' }],
      cleanups: [
        ['container cgroups', () => removeCgroup(cgroupParent)],
        ['libcni cache entries', () => removeCniCache([prefix])],
      ],
      alongside: (dir) => buildImages(join(dir, 'images')),
    });
    ({ cluster, binDir } = setup);
    const images = setup.built;
    net = nodeNet(cluster, 'n1', { portmap: false });
    containerd = await Containerd.start({
      dir: join(setup.dir, 'containerd'), netns: net.node.nsPath, binDir, confDir: net.confDir, sandboxImage: PAUSE_IMAGE,
    });
    cleanup.add('containerd', () => containerd.stop());
    await containerd.importImage(images.shellTar, 'default');
    neighbour = await cluster.addPod('n1', 'neighbour');
  }, 120_000);

  afterAll(async () => {
    await cleanup.run();
  }, 120_000);

  it('the container gets an IP from the node subnet, pings the gateway and a neighbour pod, and ctr releases it', async () => {
    const name = `${prefix}-c1`;
    const script = `ip -4 addr show eth0; ip route; ping -c 2 -W 2 ${net.gateway} && ping -c 2 -W 2 ${neighbour.ip} && sleep 2`;
    const running = containerd.ctrWithCni(
      ['run', '--rm', '--cni', ...containerd.ctrRunFlags(), '--cgroup', `${cgroupParent}/${name}`, SHELL_IMAGE, name, '/bin/sh', '-c', script],
      { netns: net.node.nsPath, confDir: net.confDir, binDir },
      { allowFail: true, timeoutMs: 60_000 },
    );
    let exited: RunResult | undefined;
    void running.then((r) => (exited = r));
    // while it runs: a lease held under ctr's container id (<namespace>-<name>) and a second veth on cni0
    const lease = await eventually('a lease for the ctr container', 20_000, () => {
      if (exited) throw new Error(`ctr exited ${exited.code} first: ${exited.stdout}${exited.stderr}`);
      return leaseFiles(net.leaseDir).find((ip) => ip !== neighbour.ip);
    });
    expect(readFileSync(join(net.leaseDir, lease), 'utf8')).toBe(`default-${name}\r\neth0`);
    expect(vethsIn(net.node.ns)).toHaveLength(2);

    const res = await running;
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toContain(`inet ${lease}/24`);
    expect(inSubnet(lease, net.subnet)).toBe(true);
    expect(res.stdout).toContain(`default via ${net.gateway}`);
    expect(res.stdout.match(/2 packets transmitted, 2 packets received/g)).toHaveLength(2);

    expect(leaseFiles(net.leaseDir)).toEqual([neighbour.ip]);
    expect(vethsIn(net.node.ns)).toHaveLength(1);
  });

  it('leaves the machine\'s CNI dirs as they were (the test\'s dirs were only mounted over them)', () => {
    expect(listing()).toEqual(listingBefore);
    expect(existsSync('/usr/lib/cni/tsflannel')).toBe(false);
  });
  it(`took the path it names (${path.name})`, async () => {
    await expectPathTaken(cluster, path, ['n1']);
  });
});
