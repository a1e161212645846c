// Dual-stack and IPv6-only pods under containerd's CRI plugin, the kubelet
// code path. containerd only runs the plugin, so the nodes here are two
// stand-alone node namespaces with hand-written subnet files as flanneld
// writes them (one dual-stack, one IPv6-only), each with a private containerd
// driven over gRPC: RunPodSandbox -> CNI ADD (tsflannel, then portmap),
// PodSandboxStatus -> the addresses containerd took from the result,
// StopPodSandbox -> DEL, RemovePodSandbox -> a second DEL with an empty
// CNI_NETNS. Every case runs through the forwarder with the node's agent
// (tsflanneld --cni-only) serving, and again with that agent SIGKILLed (its
// socket file left behind), so the forwarder falls back to the standalone plugin.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { statsFilePath } from '../../../src/daemon/cni-server.js';
import { forwarderBuilt, startCniAgent, type RunningAgent } from '../../helpers/cni-agent.js';
import { addNetns, delNetns, isRoot, nsPath } from '../../helpers/netns.js';
import { DUAL_ENV, isLeaseFile, V6_ONLY_ENV } from '../../helpers/plugin.js';
import { requireOrSkip } from '../../helpers/require.js';
import { makeBinDir, makeConfDir, tsflannelConflist } from './cni.js';
import { Containerd, CriSandboxes } from './containerd.js';
import type { CriClient, PodSandboxConfig, PodSandboxStatus } from './cri-client.js';
import {
  cniCacheEntries, eventually, registerMachineDirs, releaseMachineDirs, removeCgroup, unmountUnder, vethsIn, which,
} from './host.js';
import { buildImages, PAUSE_IMAGE, SHELL_IMAGE, type Images } from './images.js';
import { Cleanup, NETWORK, RUNTIME_PATHS, suitePrefix } from './suite.js';

const TOOLS = ['containerd', 'ctr', 'runc', 'buildah', 'busybox', 'nsenter', 'ping'];
const needs: Record<string, boolean> = { root: isRoot, 'the forwarder (scripts/build-forward.sh)': forwarderBuilt };
for (const t of TOOLS) needs[t] = which(t) !== undefined;
const skip = requireOrSkip('containerd CRI dual-stack', needs);

// The images are built once for the file (buildah is the slowest step) and
// the machine dirs the tools create are registered once.
const fileCleanup = new Cleanup();
let images: Promise<Images> | undefined;
function sharedImages(): Promise<Images> {
  if (!images) {
    const dir = mkdtempSync(join(tmpdir(), 'tsfcrids-img-'));
    fileCleanup.add('image dir', () => {
      unmountUnder(dir);
      rmSync(dir, { recursive: true, force: true });
    });
    images = buildImages(dir);
  }
  return images;
}

beforeAll(() => {
  if (skip) return;
  registerMachineDirs();
  fileCleanup.add('machine dirs', () => releaseMachineDirs());
});

afterAll(async () => {
  await fileCleanup.run();
}, 60_000);

interface Node {
  ns: string;
  dir: string;
  leaseDir: string;
  agentSocket: string;
  containerd: Containerd;
  cri: CriClient;
}

interface Pod {
  id: string;
  config: PodSandboxConfig;
  status: PodSandboxStatus;
  netns: string;
}

/** `ip -j addr show dev eth0` in a pod's netns (the sandbox's netns file). */
function podAddrs(netns: string): { family: string; local: string; prefixlen: number; scope: string; tentative?: boolean }[] {
  const out = execFileSync('nsenter', [`--net=${netns}`, 'ip', '-j', 'addr', 'show', 'dev', 'eth0'], { encoding: 'utf8' });
  const [link] = JSON.parse(out) as { addr_info: { family: string; local: string; prefixlen: number; scope: string; tentative?: boolean }[] }[];
  return link.addr_info.filter((a) => a.scope === 'global');
}

function inPod(netns: string, cmd: string[]): string {
  return execFileSync('nsenter', [`--net=${netns}`, ...cmd], { encoding: 'utf8', timeout: 20_000 });
}

describe.skipIf(skip).each(RUNTIME_PATHS)('dual-stack and IPv6-only pods under containerd CRI: $name', (path) => {
  const prefix = suitePrefix('crids');
  const cgroupParent = `/${prefix}`;
  const cleanup = new Cleanup();
  const nodes = new Map<string, Node>();
  const sandboxes = new CriSandboxes<Node>();
  let dual: Node;
  let v6only: Node;
  let podA: Pod;
  let podB: Pod;
  let podC: Pod;
  let work = '';

  const leases = (n: Node) => (existsSync(n.leaseDir) ? readdirSync(n.leaseDir).filter(isLeaseFile).sort() : []);

  async function runPod(n: Node, name: string): Promise<Pod> {
    const config: PodSandboxConfig = {
      metadata: { name, uid: `${prefix}-${name}`, namespace: 'default', attempt: 0 },
      hostname: name,
      linux: { cgroupParent },
    };
    return { config, ...(await sandboxes.run(n, config)) };
  }

  async function startNode(label: string, subnetEnv: string, binDir: string, imgs: Images): Promise<Node> {
    const ns = addNetns(`${path.agent ? 'ag' : 'fb'}-${label}`);
    cleanup.add(`netns ${ns}`, () => delNetns(ns));
    const dir = join(work, label);
    mkdirSync(dir, { recursive: true });
    const subnetFile = join(dir, 'subnet.env');
    writeFileSync(subnetFile, subnetEnv);
    const dataDir = join(dir, 'networks');
    const agentSocket = join(dir, 'run', 'cni.sock');
    const confDir = makeConfDir(join(dir, 'net.d'), tsflannelConflist({ name: NETWORK, subnetFile, dataDir, agentSocket }));
    const agent: RunningAgent = await startCniAgent({ socket: agentSocket, nodeNs: ns });
    cleanup.add(`agent on ${label}`, () => agent.stop());
    // The fallback path: the agent dies (SIGKILL, as in a crash), its socket file stays and refuses.
    if (!path.agent) await agent.stop('SIGKILL');
    const containerd = await Containerd.start({ dir: join(dir, 'containerd'), netns: nsPath(ns), binDir, confDir, sandboxImage: PAUSE_IMAGE });
    cleanup.add(`containerd on ${label}`, () => containerd.stop());
    const n: Node = { ns, dir, leaseDir: join(dataDir, NETWORK), agentSocket, containerd, cri: containerd.cri() };
    nodes.set(label, n);
    cleanup.add(`sandboxes on ${label}`, () => sandboxes.removeAllOn(n));
    await containerd.importCriImages(imgs);
    return n;
  }

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), `${prefix}-`));
    cleanup.add('suite dir', () => {
      unmountUnder(work);
      rmSync(work, { recursive: true, force: true });
    });
    cleanup.add('pod cgroups', () => removeCgroup(cgroupParent));
    cleanup.add('libcni cache entries', () => sandboxes.removeCniCache());
    cleanup.add('sandbox netns files', () => sandboxes.removeNetnsFiles());
    const imgs = await sharedImages();
    const binDir = makeBinDir(join(work, 'cni-bin'));
    dual = await startNode('ds', DUAL_ENV, binDir, imgs);
    v6only = await startNode('v6', V6_ONLY_ENV, binDir, imgs);
  }, 180_000);

  afterAll(async () => {
    await cleanup.run();
  }, 120_000);

  it('RunPodSandbox on a dual-stack node: PodSandboxStatus reports the IPv4 address as network.ip and the IPv6 one as its only additional IP', async () => {
    podA = await runPod(dual, 'ds-a');
    podB = await runPod(dual, 'ds-b');
    // host-local hands out addresses in order: .2 and ::2 to the first pod
    expect(podA.status.network).toEqual({ ip: '10.244.1.2', additionalIps: [{ ip: 'fd00:10:244:1::2' }] });
    expect(podB.status.network).toEqual({ ip: '10.244.1.3', additionalIps: [{ ip: 'fd00:10:244:1::3' }] });
    expect(leases(dual)).toEqual(['10.244.1.2', '10.244.1.3', 'fd00:10:244:1::2', 'fd00:10:244:1::3']);
    // both leases of a pod are held under its sandbox id, as the reference host-local writes them
    expect(readFileSync(join(dual.leaseDir, 'fd00:10:244:1::2'), 'utf8')).toBe(`${podA.id}\r\neth0`);
    expect(readFileSync(join(dual.leaseDir, '10.244.1.2'), 'utf8')).toBe(`${podA.id}\r\neth0`);
    expect(vethsIn(dual.ns, [])).toHaveLength(2);
  });

  it('both addresses are on the pod\'s eth0, usable at once (not tentative), with a default route of each family', () => {
    expect(podAddrs(podA.netns).map((a) => [a.family, `${a.local}/${a.prefixlen}`, a.tentative ?? false])).toEqual([
      ['inet', '10.244.1.2/24', false],
      ['inet6', 'fd00:10:244:1::2/64', false],
    ]);
    const route6 = inPod(podA.netns, ['ip', '-6', 'route', 'show', 'dev', 'eth0']);
    expect(route6).toMatch(/^default via fd00:10:244:1::1 /m);
    expect(route6).toMatch(/^fd00:10:244::\/56 via fd00:10:244:1::1 /m);
    expect(inPod(podA.netns, ['ip', '-4', 'route'])).toContain('default via 10.244.1.1 dev eth0');
  });

  it('a container in one dual-stack pod pings the other pod over IPv6 and IPv4', async () => {
    const ctr = await dual.cri.createContainer(podA.id, { metadata: { name: 'pinger' }, image: { image: SHELL_IMAGE }, command: ['/bin/sleep', '600'] }, podA.config);
    await dual.cri.startContainer(ctr);
    const res = await dual.cri.execSync(ctr, ['/bin/sh', '-c', 'ping -6 -c 3 -W 2 fd00:10:244:1::3 && ping -4 -c 2 -W 2 10.244.1.3']);
    expect(res.exitCode, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toMatch(/PING fd00:10:244:1::3 [\s\S]*3 packets transmitted, 3 packets received/);
    expect(res.stdout).toMatch(/PING 10\.244\.1\.3 [\s\S]*2 packets transmitted, 2 packets received/);
    // and the other way, from B's netns
    expect(inPod(podB.netns, ['ping', '-6', '-c', '1', '-W', '3', 'fd00:10:244:1::2'])).toContain('1 received');
  });

  it('RunPodSandbox on an IPv6-only node: network.ip is the IPv6 address, no additional IP, no IPv4 on eth0, ping6 to the gateway', async () => {
    podC = await runPod(v6only, 'v6-c');
    expect(podC.status.network).toEqual({ ip: 'fd00:10:244:2::2', additionalIps: [] });
    expect(podAddrs(podC.netns).map((a) => `${a.local}/${a.prefixlen}`)).toEqual(['fd00:10:244:2::2/64']);
    expect(inPod(podC.netns, ['ip', '-4', 'route'])).toBe('');
    expect(inPod(podC.netns, ['ip', '-6', 'route', 'show', 'default'])).toMatch(/^default via fd00:10:244:2::1 dev eth0/m);
    expect(inPod(podC.netns, ['ping', '-6', '-c', '1', '-W', '3', 'fd00:10:244:2::1'])).toContain('1 received');
    expect(leases(v6only)).toEqual(['fd00:10:244:2::2']);
  });

  it('StopPodSandbox releases both families\' leases and the veth; RemovePodSandbox finishes with no netns, cache entry or sandbox', async () => {
    for (const [n, pod] of [[dual, podA], [dual, podB], [v6only, podC]] as const) {
      const ips = [pod.status.network!.ip, ...pod.status.network!.additionalIps.map((a) => a.ip)];
      await n.cri.stopPodSandbox(pod.id);
      expect(leases(n).filter((ip) => ips.includes(ip))).toEqual([]);
      await n.cri.removePodSandbox(pod.id);
      sandboxes.forget(pod.id);
      expect(existsSync(pod.netns), pod.netns).toBe(false);
      expect(cniCacheEntries(pod.id)).toEqual([]);
      await expect(n.cri.podSandboxStatus(pod.id)).rejects.toThrow(/not found|does not exist/);
    }
    expect(leases(dual)).toEqual([]);
    expect(leases(v6only)).toEqual([]);
    expect(vethsIn(dual.ns, [])).toEqual([]);
    expect(vethsIn(v6only.ns, [])).toEqual([]);
  });

  it(`took the path it names (${path.name})`, async () => {
    const adds = (n: Node) => {
      try {
        const stats = JSON.parse(readFileSync(statsFilePath(n.agentSocket), 'utf8')) as { calls: Record<string, { ok: number }> };
        return stats.calls.ADD?.ok ?? 0;
      } catch {
        return 0;
      }
    };
    if (path.agent) {
      // the agent writes its counters at most once a second
      await eventually('each node\'s agent counted its pods\' ADDs', 5_000, () => adds(dual) >= 2 && adds(v6only) >= 1);
    } else {
      expect(adds(dual)).toBe(0);
      expect(adds(v6only)).toBe(0);
    }
  });
});
