// tsflannel as podman's network (podman 4, CNI backend) on a node of a real
// tsflannel cluster: a container on n1 reaches a pod on n2 (other underlay
// segment) over flannel.1, `-p` publishes a port through the chained
// portmap, and `podman rm` hands the IP back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster, Pod } from '../../../src/demo/cluster.js';
import { cniCacheEntries, leaseFiles, natRules, removeCniCache, removeNetnsFile, mustSkip, vethsIn } from './host.js';
import { buildRootfs } from './images.js';
import { Podman } from './podman.js';
import { Cleanup, expectPathTaken, httpGetFrom, inSubnet, NETWORK, nodeNet, RUNTIME_PATHS, setUpSuite, suitePrefix, vxlanTxPackets, type NodeNet } from './suite.js';

const skip = mustSkip('podman', ['podman', 'runc', 'conmon', 'busybox', 'nsenter', 'iptables-save']);
const HOST_PORT = 18081;

interface NetworkSettings {
  SandboxKey: string;
  Networks: Record<string, { IPAddress: string; Gateway: string; IPPrefixLen: number }>;
}

describe.skipIf(skip).each(RUNTIME_PATHS)('tsflannel as a podman network (CNI backend): $name', (path) => {
  const prefix = suitePrefix('pod');
  const cleanup = new Cleanup();
  const netnsFiles: string[] = [];
  const containerIds: string[] = [];
  let cluster: Cluster;
  let net1: NodeNet;
  let net2: NodeNet;
  let podman: Podman;
  let rootfs = '';
  let target: Pod;

  beforeAll(async () => {
    const setup = await setUpSuite({
      prefix, path, cleanup,
      nodes: [{ name: 'n1', segment: 'a' }, { name: 'n2', segment: 'b' }],
      cleanups: [
        ['podman netns files', () => netnsFiles.forEach(removeNetnsFile)],
        ['libcni cache entries', () => removeCniCache(containerIds)],
      ],
    });
    cluster = setup.cluster;
    rootfs = buildRootfs(join(setup.dir, 'rootfs'));
    net1 = nodeNet(cluster, 'n1');
    net2 = nodeNet(cluster, 'n2');
    target = await cluster.addPod('n2', 'target');
    podman = new Podman({
      dir: join(setup.dir, 'podman'), netns: net1.node.nsPath,
      binDir: setup.binDir, confDir: net1.confDir, cgroupParent: `/${prefix}`,
    });
    cleanup.add('podman containers', () => podman.cleanup());
  }, 120_000);

  afterAll(async () => {
    await cleanup.run();
  }, 120_000);

  it('lists the tsflannel conflist as a CNI network', async () => {
    expect((await podman.podman(['info', '--format', '{{.Host.NetworkBackend}}'])).stdout.trim()).toBe('cni');
    const nets = await podman.podman(['network', 'ls', '--format', '{{.Name}} {{.Driver}}']);
    expect(nets.stdout).toContain(`${NETWORK} tsflannel`);
  });

  it('a container on n1 gets an IP from n1\'s subnet and pings a pod on n2 across flannel.1', async () => {
    const before = vxlanTxPackets(net1.node.ns);
    const res = await podman.podman([
      'run', '--rm', ...podman.runFlags(), '--network', NETWORK, '--rootfs', rootfs,
      '/bin/sh', '-c', `ip -4 addr show eth0; ip route; ping -c 3 -W 2 ${target.ip}`,
    ], { allowFail: true });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    const ip = /inet (\d+\.\d+\.\d+\.\d+)\/24/.exec(res.stdout)?.[1] ?? '';
    expect(inSubnet(ip, net1.subnet), `${ip} in ${net1.subnet}`).toBe(true);
    expect(res.stdout).toContain(`default via ${net1.gateway}`);
    expect(res.stdout).toMatch(/3 packets transmitted, 3 packets received/);
    expect(vxlanTxPackets(net1.node.ns) - before).toBeGreaterThanOrEqual(3);
    // --rm released everything
    expect(leaseFiles(net1.leaseDir)).toEqual([]);
    expect(vethsIn(net1.node.ns)).toEqual([]);
  });

  it('-p publishes a container port on the node through portmap; podman rm releases the IP', async () => {
    const started = await podman.podman([
      'run', '-d', '--name', 'web', ...podman.runFlags(), '--network', NETWORK, '-p', `${HOST_PORT}:8080`, '--rootfs', rootfs,
      '/bin/httpd', '-f', '-p', '8080', '-h', '/www',
    ]);
    const containerId = started.stdout.trim();
    containerIds.push(containerId);
    const settings = await podman.inspect<NetworkSettings>('web', '.NetworkSettings');
    netnsFiles.push(settings.SandboxKey);
    const ip = settings.Networks[NETWORK].IPAddress;
    expect(inSubnet(ip, net1.subnet)).toBe(true);
    expect(settings.Networks[NETWORK].Gateway).toBe(net1.gateway);
    expect(readFileSync(join(net1.leaseDir, ip), 'utf8')).toBe(`${containerId}\r\neth0`);
    expect(natRules(net1.node.ns)).toContain(`--to-destination ${ip}:8080`);

    expect(httpGetFrom(net1.node.ns, `http://127.0.0.1:${HOST_PORT}/`)).toBe('tsflannel-ok\n');
    expect(httpGetFrom(net2.node.ns, `http://${net1.node.ip}:${HOST_PORT}/`)).toBe('tsflannel-ok\n');
    // the n2 pod reaches the container directly over the overlay
    expect(httpGetFrom(target.ns, `http://${ip}:8080/`)).toBe('tsflannel-ok\n');

    await podman.podman(['rm', '--force', '--time', '0', 'web']);
    expect(leaseFiles(net1.leaseDir)).toEqual([]);
    expect(vethsIn(net1.node.ns)).toEqual([]);
    const nat = natRules(net1.node.ns);
    expect(nat).not.toMatch(/CNI-DN-/);
    expect(nat).not.toContain(containerId);
    expect(existsSync(settings.SandboxKey)).toBe(false);
    expect(cniCacheEntries(containerId)).toEqual([]);
  });
  it(`took the path it names (${path.name})`, async () => {
    await expectPathTaken(cluster, path, ['n1']);
  });
});
