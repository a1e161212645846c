// tsflannel under containerd's CRI plugin: the kubelet code path. Two nodes
// of a real tsflannel cluster (one per underlay segment, so pod traffic
// crosses the router inside VXLAN), each with a private containerd started
// in the node's netns and driven over gRPC exactly as a kubelet would:
// RunPodSandbox -> CNI ADD (tsflannel, then portmap), StopPodSandbox -> DEL,
// RemovePodSandbox -> a second DEL with an empty CNI_NETNS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Cluster } from '../../../src/demo/cluster.js';
import { Containerd, CriSandboxes } from './containerd.js';
import type { CriClient, PodSandboxConfig } from './cri-client.js';
import { cniCacheEntries, leaseFiles, natRules, removeCgroup, mustSkip, vethsIn } from './host.js';
import { buildImages, PAUSE_IMAGE, SHELL_IMAGE } from './images.js';
import { Cleanup, expectPathTaken, httpGetFrom, inSubnet, nodeNet, RUNTIME_PATHS, setUpSuite, suitePrefix, vxlanTxPackets, type NodeNet } from './suite.js';

const skip = mustSkip('cri', ['containerd', 'ctr', 'runc', 'buildah', 'busybox', 'nsenter', 'iptables-save']);
const HOST_PORT = 18080;
const PARALLEL_PODS = 20;

interface Node {
  net: NodeNet;
  containerd: Containerd;
  cri: CriClient;
}

interface Pod {
  id: string;
  config: PodSandboxConfig;
  ip: string;
  netns: string;
}

describe.skipIf(skip).each(RUNTIME_PATHS)('tsflannel under containerd CRI (the kubelet path), two nodes: $name', (path) => {
  const prefix = suitePrefix('cri');
  const cgroupParent = `/${prefix}`;
  const cleanup = new Cleanup();
  const nodes = new Map<string, Node>();
  const sandboxes = new CriSandboxes<Node>();
  let cluster: Cluster;
  let podA: Pod;
  let podB: Pod;
  let webContainer = '';

  const node = (name: string): Node => nodes.get(name)!;

  function sandboxConfig(name: string, portMappings: PodSandboxConfig['portMappings'] = []): PodSandboxConfig {
    return {
      metadata: { name, uid: `${prefix}-${name}`, namespace: 'default', attempt: 0 },
      hostname: name,
      portMappings,
      linux: { cgroupParent },
    };
  }

  async function runPod(n: Node, name: string, portMappings: PodSandboxConfig['portMappings'] = []): Promise<Pod> {
    const config = sandboxConfig(name, portMappings);
    const { id, status, netns } = await sandboxes.run(n, config);
    return { id, config, ip: status.network?.ip ?? '', netns };
  }

  async function shellContainer(n: Node, pod: Pod, name: string, command: string[]): Promise<string> {
    const id = await n.cri.createContainer(pod.id, { metadata: { name }, image: { image: SHELL_IMAGE }, command }, pod.config);
    await n.cri.startContainer(id);
    return id;
  }

  beforeAll(async () => {
    const setup = await setUpSuite({
      prefix, path, cleanup,
      nodes: [{ name: 'n1', segment: 'a' }, { name: 'n2', segment: 'b' }],
      cleanups: [
        ['pod cgroups', () => removeCgroup(cgroupParent)],
        ['libcni cache entries', () => sandboxes.removeCniCache()],
        ['sandbox netns files', () => sandboxes.removeNetnsFiles()],
      ],
      alongside: (dir) => buildImages(join(dir, 'images')),
    });
    cluster = setup.cluster;
    const { binDir, built: images, dir } = setup;
    for (const name of ['n1', 'n2']) {
      const net = nodeNet(cluster, name);
      const containerd = await Containerd.start({
        dir: join(dir, name, 'containerd'), netns: net.node.nsPath, binDir, confDir: net.confDir, sandboxImage: PAUSE_IMAGE,
      });
      cleanup.add(`containerd on ${name}`, () => containerd.stop());
      const n: Node = { net, containerd, cri: containerd.cri() };
      nodes.set(name, n);
      cleanup.add(`sandboxes on ${name}`, () => sandboxes.removeAllOn(n));
      await containerd.importCriImages(images);
    }
  }, 120_000);

  afterAll(async () => {
    await cleanup.run();
  }, 120_000);

  it('reports the runtime and its CNI network ready', async () => {
    const cri = node('n1').cri;
    expect((await cri.version()).runtimeName).toBe('containerd');
    const conditions = await cri.conditions();
    expect(conditions.find((c) => c.type === 'RuntimeReady')?.status).toBe(true);
    expect(conditions.find((c) => c.type === 'NetworkReady')?.status).toBe(true);
  });

  it('RunPodSandbox gives each pod an IP from its node\'s FLANNEL_SUBNET, leased under the sandbox id', async () => {
    podA = await runPod(node('n1'), 'web', [{ protocol: 'TCP', containerPort: 8080, hostPort: HOST_PORT }]);
    podB = await runPod(node('n2'), 'client');
    for (const [pod, n] of [[podA, node('n1')], [podB, node('n2')]] as const) {
      expect(inSubnet(pod.ip, n.net.subnet), `${pod.ip} in ${n.net.subnet}`).toBe(true);
      expect(pod.ip).not.toBe(n.net.gateway);
      expect(readFileSync(join(n.net.leaseDir, pod.ip), 'utf8')).toBe(`${pod.id}\r\neth0`);
      expect(existsSync(pod.netns)).toBe(true);
      expect(vethsIn(n.net.node.ns)).toHaveLength(1);
    }
    expect(node('n1').net.subnet).not.toBe(node('n2').net.subnet);
  });

  it('ExecSync in a pod on n1 pings the pod on n2 across flannel.1', async () => {
    webContainer = await shellContainer(node('n1'), podA, 'web', ['/bin/httpd', '-f', '-p', '8080', '-h', '/www']);
    const before = vxlanTxPackets(node('n1').net.node.ns);
    const res = await node('n1').cri.execSync(webContainer, ['/bin/sh', '-c', `ip -4 addr show eth0; ip route; ping -c 3 -W 2 ${podB.ip}`]);
    expect(res.exitCode, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toContain(`inet ${podA.ip}/24`);
    expect(res.stdout).toContain('mtu 1450');
    expect(res.stdout).toContain(`default via ${node('n1').net.gateway}`);
    expect(res.stdout).toMatch(/3 packets transmitted, 3 packets received/);
    expect(vxlanTxPackets(node('n1').net.node.ns) - before).toBeGreaterThanOrEqual(3);
  });

  it('a hostPort mapping reaches the pod, from its own node and from the other node', async () => {
    const dnat = natRules(node('n1').net.node.ns);
    expect(dnat).toContain(`--to-destination ${podA.ip}:8080`);
    expect(httpGetFrom(node('n1').net.node.ns, `http://127.0.0.1:${HOST_PORT}/`)).toBe('tsflannel-ok\n');
    expect(httpGetFrom(node('n2').net.node.ns, `http://${node('n1').net.node.ip}:${HOST_PORT}/`)).toBe('tsflannel-ok\n');
    // and the other node's pod reaches it directly over the overlay
    const client = await shellContainer(node('n2'), podB, 'client', ['/bin/sleep', '600']);
    const res = await node('n2').cri.execSync(client, ['/bin/wget', '-q', '-O', '-', `http://${podA.ip}:8080/`], 5);
    expect(res.stdout).toBe('tsflannel-ok\n');
  });

  it('StopPodSandbox releases the IP, veth and hostPort rules; RemovePodSandbox finishes with an empty netns', async () => {
    const n1 = node('n1');
    await n1.cri.stopContainer(webContainer);
    await n1.cri.removeContainer(webContainer);
    await n1.cri.stopPodSandbox(podA.id);
    expect(leaseFiles(n1.net.leaseDir)).toEqual([]);
    expect(vethsIn(n1.net.node.ns)).toEqual([]);
    const nat = natRules(n1.net.node.ns);
    expect(nat).not.toMatch(/CNI-DN-/);
    expect(nat).not.toContain(podA.ip);
    expect(nat).not.toContain(podA.id); // CNI-HOSTPORT-DNAT's jump rule names the sandbox
    await n1.cri.removePodSandbox(podA.id);
    sandboxes.forget(podA.id);
    expect(existsSync(podA.netns)).toBe(false);
    expect(cniCacheEntries(podA.id)).toEqual([]);
    await expect(n1.cri.podSandboxStatus(podA.id)).rejects.toThrow(/not found|does not exist/);
  });

  it(`${PARALLEL_PODS} pods created and removed in parallel on one node get distinct IPs and leave nothing`, async () => {
    const n2 = node('n2');
    const before = leaseFiles(n2.net.leaseDir);
    const pods = await Promise.all(Array.from({ length: PARALLEL_PODS }, (_, i) => runPod(n2, `par${i}`)));
    const ips = pods.map((p) => p.ip);
    expect(new Set(ips).size).toBe(PARALLEL_PODS);
    for (const ip of ips) expect(inSubnet(ip, n2.net.subnet), ip).toBe(true);
    expect(leaseFiles(n2.net.leaseDir).sort()).toEqual([...before, ...ips].sort());
    expect(vethsIn(n2.net.node.ns)).toHaveLength(before.length + PARALLEL_PODS);
    await Promise.all(pods.map((p) => sandboxes.remove(n2, p.id)));
    expect(leaseFiles(n2.net.leaseDir).sort()).toEqual(before.sort());
    expect(vethsIn(n2.net.node.ns)).toHaveLength(before.length);
    for (const p of pods) expect(existsSync(p.netns), p.netns).toBe(false);
    // the pod from the earlier tests still has its lease, and nothing else does
    expect(before).toEqual([podB.ip]);
  }, 180_000);
  it(`took the path it names (${path.name})`, async () => {
    await expectPathTaken(cluster, path, ['n1', 'n2']);
  });
});
