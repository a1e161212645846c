// The image from the repository's Dockerfile and the pod of
// conf/kube-tsflannel.yml, run for real: scripts/image.sh builds the image
// with buildah (reused while its inputs are unchanged), then on two node
// namespaces the DaemonSet's pod template runs with podman the way a kubelet
// would run it, against a Kubernetes-shaped API server that serves TLS and
// checks the service-account token.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTopology, destroyTopology, type Topology } from '../../src/demo/topology.js';
import { bridgeUnixToTcp } from '../../src/demo/port-bridge.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { ipJson } from '../helpers/netns.js';
import { podmanRunArgs, probeUrl, readManifest, type Container, type Manifest, type NodeContext } from '../helpers/kubelet-pod.js';
import { Containerd } from './runtimes/containerd.js';
import type { CriClient, PodSandboxConfig } from './runtimes/cri-client.js';
import { eventually, registerMachineDirs, unmountUnder, releaseMachineDirs, removeCgroup, removeCniCache, removeNetnsFile, run, mustSkip, type RunResult } from './runtimes/host.js';
import { buildImages, containersConf, PAUSE_IMAGE, SHELL_IMAGE } from './runtimes/images.js';
import { Cleanup, httpGetFrom, inSubnet } from './runtimes/suite.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MANIFEST = join(ROOT, 'conf/kube-tsflannel.yml');
const BRIDGE = join(ROOT, 'build/demo/port-bridge.js');
const NET_CIDR = '10.244.0.0/16';
const PODCIDR: Record<string, string> = { n1: '10.244.1.0/24', n2: '10.244.2.0/24' };
const API_PORT = 6443;
// Cold: two Debian bases, Go and npm packages from their archives, two SEAs.
const BUILD_TIMEOUT_MS = 25 * 60_000;

const skip = mustSkip('image', ['buildah', 'podman', 'mmdebstrap', 'openssl', 'nsenter', 'unshare', 'runc', 'containerd', 'busybox']);
// The paths the installed conflist leaves at their defaults: the plugin reads
// the subnet file the agent wrote and keeps its leases on the node. Each
// node's containerd sees its own node's dirs there (a private mount namespace).
// The node paths containerd must see as the node has them: the subnet file and
// the IPAM store. Not /run/tsflannel: this containerd keeps its pod netns
// mounts in its private mount namespace, where the agent container cannot see
// them, so its CNI calls take the forwarder's standalone fallback here (the
// agent-served CRI path is proven by test/e2e/runtimes/cri.test.ts).
const NODE_PATHS = ['/run/flannel', '/var/lib/cni/networks'];

interface KubeletNode {
  name: string;
  ns: string;
  nsPath: string;
  ip: string;
  ctx: NodeContext;
  /** names of the pod's long-running containers, as podman knows them */
  containers: string[];
}

describe.skipIf(skip)('the Dockerfile built by buildah, and the manifest\'s DaemonSet pod run as a kubelet would', () => {
  const prefix = `tsfimg${randomBytes(2).toString('hex')}`;
  const cgroupParent = `/${prefix}`;
  const cleanup = new Cleanup();
  const procs: ChildProcess[] = [];
  const sandboxes: { cri: CriClient; id: string; netns?: string }[] = [];
  const nodes: KubeletNode[] = [];
  let dir = '';
  let image = '';
  let imageLog = '';
  let manifest: Manifest;
  let topo: Topology;
  let kube: FakeKube;
  let containersConfPath = '';

  const podman = (args: string[], opts: { netns?: string; allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> => {
    const base = ['podman', '--cgroup-manager', 'cgroupfs', ...args];
    const env = { ...process.env, CONTAINERS_CONF: containersConfPath };
    return opts.netns
      ? run('nsenter', [`--net=${opts.netns}`, ...base], { env, allowFail: opts.allowFail, timeoutMs: opts.timeoutMs })
      : run(base[0], base.slice(1), { env, allowFail: opts.allowFail, timeoutMs: opts.timeoutMs });
  };

  /** Runs one container of the pod spec on a node; init containers to completion. */
  async function startContainer(n: KubeletNode, c: Container, init: boolean): Promise<RunResult> {
    const name = `${prefix}-${n.name}-${c.name}`;
    const args = podmanRunArgs(manifest, n.ctx, c, name);
    // the manifest's image name, resolved in local storage as a node resolves a pre-loaded image
    const run = init ? ['run', '--rm'] : ['run', '--detach'];
    const res = await podman([...run, '--cgroup-parent', cgroupParent, ...args], { netns: n.nsPath, allowFail: true, timeoutMs: 120_000 });
    if (!init) n.containers.push(name);
    return res;
  }

  async function logsOf(n: KubeletNode): Promise<string> {
    const out: string[] = [];
    for (const c of n.containers) out.push(`--- ${c}\n${(await podman(['logs', c], { allowFail: true })).stderr}`);
    return out.join('\n');
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
    cleanup.add('temp dir', () => rmSync(dir, { recursive: true, force: true }));
    containersConfPath = join(dir, 'containers.conf');
    writeFileSync(containersConfPath, containersConf());

    // The image: built, or reused when nothing it is built from changed.
    const tag = (await run('bash', [join(ROOT, 'scripts/image.sh'), '--print-inputs-tag'])).stdout.trim();
    const built = await run('bash', [join(ROOT, 'scripts/image.sh')], { timeoutMs: BUILD_TIMEOUT_MS });
    imageLog = built.stderr;
    image = tag;
    manifest = readManifest(MANIFEST);
    // Mounts with propagation (HostToContainer, Bidirectional) need their
    // source on a shared mount, as a node's / is; the temp dir becomes one.
    const pod = [...(manifest.podSpec.initContainers ?? []), ...manifest.podSpec.containers];
    if (pod.some((c) => (c.volumeMounts ?? []).some((m) => m.mountPropagation && m.mountPropagation !== 'None'))) {
      await run('mount', ['--bind', dir, dir]);
      cleanup.add('shared temp dir', () => unmountUnder(dir));
      await run('mount', ['--make-rshared', dir]);
    }

    // A TLS API server with a service-account token, reached from each node at 127.0.0.1:6443.
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=kube-apiserver', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc',
      '-keyout', join(dir, 'apiserver.key'), '-out', join(dir, 'apiserver.crt')]);
    const caPem = readFileSync(join(dir, 'apiserver.crt'), 'utf8');
    const token = randomBytes(24).toString('hex');
    kube = await FakeKube.start({ token, tls: { key: readFileSync(join(dir, 'apiserver.key'), 'utf8'), cert: caPem } });
    cleanup.add('api server', () => kube.close());
    const sock = join(dir, 'api.sock');
    const apiBridge: Server = await bridgeUnixToTcp(sock, '127.0.0.1', Number(new URL(kube.url).port));
    // close() waits for every bridged connection to end; an agent's watch
    // left half-open would hold it forever, so the connections go first.
    const bridged = new Set<Socket>();
    apiBridge.on('connection', (c: Socket) => {
      bridged.add(c);
      c.on('close', () => bridged.delete(c));
    });
    cleanup.add('api bridge', () => new Promise<void>((r) => {
      for (const c of bridged) c.destroy();
      apiBridge.close(() => r());
    }));

    topo = buildTopology(prefix, [{ name: 'n1', segment: 'a' }, { name: 'n2', segment: 'b' }]);
    cleanup.add('topology', () => destroyTopology(topo));
    cleanup.add('pod cgroups', () => removeCgroup(cgroupParent));
    cleanup.add('containers', async () => {
      const names = nodes.flatMap((n) => n.containers);
      if (names.length) await podman(['rm', '--force', '--time', '0', ...names], { allowFail: true });
    });
    cleanup.add('port bridges', () => { for (const p of procs) p.kill('SIGKILL'); });
    for (const tn of topo.nodes) {
      kube.addNode(tn.name, PODCIDR[tn.name]);
      const bridge = spawn('ip', ['netns', 'exec', tn.ns, process.execPath, BRIDGE, '127.0.0.1', String(API_PORT), sock], { stdio: ['ignore', 'pipe', 'inherit'] });
      procs.push(bridge);
      await new Promise((r) => bridge.stdout!.once('data', r));
      const nodeDir = join(dir, tn.name);
      // A node's CNI bin dir before the DaemonSet runs: the runtime's own
      // loopback (kubeadm's kubernetes-cni, kind's image), no portmap.
      mkdirSync(join(nodeDir, 'host/opt/cni/bin'), { recursive: true });
      copyFileSync('/usr/lib/cni/loopback', join(nodeDir, 'host/opt/cni/bin/loopback'));
      nodes.push({
        name: tn.name, ns: tn.ns, nsPath: tn.nsPath, ip: tn.ip, containers: [],
        ctx: {
          nodeName: tn.name, nodeIP: tn.ip, podName: `${manifest.daemonSet.metadata.name}-${tn.name}`,
          hostRoot: join(nodeDir, 'host'), volumeDir: join(nodeDir, 'volumes'),
          apiHost: '127.0.0.1', apiPort: API_PORT, token, caPem,
        },
      });
    }
    // The pod spec names the image by its manifest name; tag the built one so.
    const images = new Set([...(manifest.podSpec.initContainers ?? []), ...manifest.podSpec.containers].map((c) => c.image));
    for (const ref of images) await podman(['tag', image, ref]);
  }, BUILD_TIMEOUT_MS + 120_000);

  // Stopping two containerds and podman's containers under a loaded CI machine took over 120 s once.
  afterAll(async () => {
    await cleanup.run();
  }, 300_000);

  it('scripts/image.sh builds the Dockerfile with buildah and reports the image size', async () => {
    expect(await podman(['image', 'exists', image], { allowFail: true })).toMatchObject({ code: 0 });
    const size = /localhost\/tsflannel:0\.1\.0 \(.*\): (\d+) MB/.exec(imageLog);
    expect(size, imageLog.slice(-2000)).not.toBeNull();
    // the size and what takes it, as scripts/image.sh measured it
    process.stderr.write(`${imageLog.split('\n').filter((l) => l.startsWith('[image]')).join('\n')}\n`);
    // one Node single executable (about 95 MB) serves every program; Debian takes most of the rest
    expect(Number(size![1])).toBeLessThan(250);
  });

  it('tsflannel and tsflanneld run in the image; `tsflannel install` writes plugin, portmap and conflist', async () => {
    const help = await podman(['run', '--rm', '--network', 'none', '--entrypoint', '/usr/local/bin/tsflanneld', image, '--help']);
    expect(help.stdout + help.stderr).toMatch(/--kube-subnet-mgr/);
    // one executable: tsflanneld is a link to it, the name picks the program
    const link = await podman(['run', '--rm', '--network', 'none', '--entrypoint', '/usr/bin/readlink', image, '/usr/local/bin/tsflanneld']);
    expect(link.stdout.trim()).toBe('tsflannel');
    const version = await podman(['run', '--rm', '--network', 'none', '--env', 'CNI_COMMAND=VERSION', '--entrypoint', '/usr/local/bin/tsflannel', image]);
    expect(JSON.parse(version.stdout)).toMatchObject({ supportedVersions: expect.arrayContaining(['1.0.0']) });
    const out = join(dir, 'install-check');
    mkdirSync(out);
    await podman(['run', '--rm', '--network', 'none', '-v', `${out}:/host`, '--entrypoint', '/usr/local/bin/tsflannel', image,
      'install', '--cni-bin-dir', '/host/bin', '--cni-conf-dir', '/host/net.d',
      '--conflist', '/usr/share/tsflannel/10-tsflannel.conflist', '--with-plugin', '/usr/lib/cni/portmap']);
    expect(readdirSync(join(out, 'bin')).sort()).toEqual(['portmap', 'tsflannel', 'tsflannel-standalone']);
    expect(statSync(join(out, 'bin/tsflannel')).mode & 0o111).toBe(0o111);
    // /opt/cni/bin/tsflannel is the static forwarder, the standalone plugin sits beside it
    expect(statSync(join(out, 'bin/tsflannel')).size).toBeLessThan(3 * 2 ** 20);
    expect(statSync(join(out, 'bin/tsflannel-standalone')).size).toBeGreaterThan(50 * 2 ** 20);
    expect(readFileSync(join(out, 'net.d/10-tsflannel.conflist'), 'utf8')).toBe(readFileSync(join(ROOT, 'conf/10-tsflannel.conflist'), 'utf8'));
  });

  it('every init container of the pod template exits 0 and installs the plugin and the ConfigMap conflist into the hostPath dirs', async () => {
    for (const n of nodes) {
      for (const c of manifest.podSpec.initContainers ?? []) {
        const res = await startContainer(n, c, true);
        expect(res.code, `${c.name} on ${n.name}: ${res.stderr}`).toBe(0);
      }
      const cniBin = join(n.ctx.hostRoot, 'opt/cni/bin');
      const netD = join(n.ctx.hostRoot, 'etc/cni/net.d');
      expect(readdirSync(cniBin).sort()).toEqual(['loopback', 'portmap', 'tsflannel', 'tsflannel-standalone']);
      const cm = manifest.objects.find((o) => o.kind === 'ConfigMap')!;
      expect(readFileSync(join(netD, '10-tsflannel.conflist'), 'utf8')).toBe(cm.data!['cni-conf.json']);
    }
  });

  it('the agent container takes its Node\'s podCIDR over TLS with the token, creates flannel.1 and writes the subnet file', async () => {
    for (const n of nodes) {
      for (const c of manifest.podSpec.containers) {
        const res = await startContainer(n, c, false);
        expect(res.code, `${c.name} on ${n.name}: ${res.stderr}`).toBe(0);
      }
    }
    for (const n of nodes) {
      const subnetFile = join(n.ctx.hostRoot, 'run/flannel/subnet.env');
      await eventually(`subnet file on ${n.name}`, 60_000, () => existsSync(subnetFile)).catch(async (err: unknown) => {
        throw new Error(`${String(err)}\n${await logsOf(n)}`);
      });
      const env = readFileSync(subnetFile, 'utf8');
      expect(env).toContain(`FLANNEL_NETWORK=${NET_CIDR}`);
      expect(env).toContain(`FLANNEL_SUBNET=${PODCIDR[n.name].replace('.0/24', '.1/24')}`);
      expect(env).toContain('FLANNEL_MTU=1450');
      const [link] = ipJson<{ linkinfo: { info_kind: string; info_data: { id: number; port: number } } }[]>(n.ns, ['-d', 'link', 'show', 'flannel.1']);
      expect(link.linkinfo.info_kind).toBe('vxlan');
      expect(link.linkinfo.info_data).toMatchObject({ id: 1, port: 8472 });
      const ann = kube.getNode(n.name)!.metadata.annotations ?? {};
      expect(ann['flannel.alpha.coreos.com/public-ip']).toBe(n.ip);
    }
    // every request carried the token (the server answers 401 otherwise) and none was refused
    const agentRequests = kube.requests.filter((r) => r.resource.startsWith('nodes'));
    expect(agentRequests.length).toBeGreaterThan(0);
    expect(agentRequests.every((r) => r.authorization === `Bearer ${nodes[0].ctx.token}`)).toBe(true);
    // each node learned the other's subnet through the API: a route to it over flannel.1
    for (const [n, other] of [[nodes[0], nodes[1]], [nodes[1], nodes[0]]] as const) {
      await eventually(`route to ${other.name}'s subnet on ${n.name}`, 30_000, () =>
        ipJson<{ dst: string; dev: string }[]>(n.ns, ['route', 'show', PODCIDR[other.name]]).some((r) => r.dev === 'flannel.1'));
    }
  }, 150_000);

  it('the liveness and readiness probes\' URLs from the manifest answer 200 in the node\'s network', async () => {
    let probes = 0;
    for (const n of nodes) {
      for (const c of manifest.podSpec.containers) {
        for (const probe of [c.livenessProbe, c.readinessProbe]) {
          const url = probeUrl(c, probe, n.ip);
          if (!url) continue;
          probes++;
          // busybox wget fails on any status but 2xx, as an httpGet probe does on >= 400
          await eventually(`${url} on ${n.name}`, 30_000, () => httpGetFrom(n.ns, url) !== undefined);
        }
      }
    }
    expect(probes).toBeGreaterThanOrEqual(2 * nodes.length);
  });

  it('containerd\'s CRI, given the installed bin and conf dirs, starts two pods on each node and they ping across nodes', async () => {
    registerMachineDirs();
    cleanup.add('machine dirs', () => releaseMachineDirs());
    for (const target of NODE_PATHS) {
      if (existsSync(target)) continue;
      mkdirSync(target, { recursive: true });
      cleanup.add(`mount point ${target}`, () => rmdirSync(target));
    }
    cleanup.add('libcni cache entries', () => removeCniCache(sandboxes.map((s) => s.id)));
    cleanup.add('sandbox netns files', () => { for (const s of sandboxes) if (s.netns) removeNetnsFile(s.netns); });
    const images = await buildImages(join(dir, 'images'));
    const pods: { node: KubeletNode; cri: CriClient; config: PodSandboxConfig; id: string; ip: string; shell: string }[] = [];
    for (const n of nodes) {
      const host = n.ctx.hostRoot;
      const binds = NODE_PATHS.map((p): [string, string] => {
        mkdirSync(join(host, p), { recursive: true });
        return [join(host, p), p];
      });
      const containerd = await Containerd.start({
        dir: join(dir, n.name, 'containerd'), netns: n.nsPath, sandboxImage: PAUSE_IMAGE, bindMounts: binds,
        binDir: join(host, 'opt/cni/bin'), confDir: join(host, 'etc/cni/net.d'),
      });
      cleanup.add(`containerd on ${n.name}`, () => containerd.stop());
      const cri = containerd.cri();
      cleanup.add(`sandboxes on ${n.name}`, async () => {
        for (const s of sandboxes) {
          if (s.cri !== cri) continue;
          await cri.stopPodSandbox(s.id).catch(() => undefined);
          await cri.removePodSandbox(s.id).catch(() => undefined);
        }
      });
      await containerd.importImage(images.pauseTar);
      await containerd.importImage(images.shellTar);
      expect((await cri.conditions()).find((c) => c.type === 'NetworkReady')?.status).toBe(true);
      for (const i of [1, 2]) {
        const config: PodSandboxConfig = {
          metadata: { name: `pod${i}`, uid: `${prefix}-${n.name}-pod${i}`, namespace: 'default', attempt: 0 },
          hostname: `${n.name}-pod${i}`, linux: { cgroupParent },
        };
        const id = await cri.runPodSandbox(config);
        const sandbox: (typeof sandboxes)[number] = { cri, id };
        sandboxes.push(sandbox);
        sandbox.netns = await cri.sandboxNetns(id);
        const ip = (await cri.podSandboxStatus(id)).status.network?.ip ?? '';
        expect(inSubnet(ip, PODCIDR[n.name]), `${ip} in ${n.name}'s podCIDR ${PODCIDR[n.name]}`).toBe(true);
        // the lease sits in the node's own store, under the conflist's network name
        expect(readFileSync(join(host, 'var/lib/cni/networks/cbr0', ip), 'utf8')).toContain(id);
        const shell = await cri.createContainer(id, { metadata: { name: 'shell' }, image: { image: SHELL_IMAGE }, command: ['/bin/sleep', '600'] }, config);
        await cri.startContainer(shell);
        pods.push({ node: n, cri, config, id, ip, shell });
      }
    }
    expect(new Set(pods.map((p) => p.ip)).size).toBe(4);
    for (const from of pods) {
      const targets = pods.filter((p) => p.node !== from.node).map((p) => p.ip);
      const res = await from.cri.execSync(from.shell, ['/bin/sh', '-c', targets.map((ip) => `ping -c 2 -W 3 ${ip}`).join(' && ')], 30);
      expect(res.exitCode, `${from.node.name}/${from.config.metadata.name} -> ${targets.join(', ')}: ${res.stdout}${res.stderr}`).toBe(0);
      expect(res.stdout.match(/2 packets transmitted, 2 packets received/g)).toHaveLength(targets.length);
    }
  }, 300_000);

  it('`tsflannel doctor --kube-subnet-mgr` run in the agent container (as kubectl exec runs it) passes every check: ping reaches the other VTEP, the pods\' leases are seen', async () => {
    const podsOnNode = 2;
    for (const n of nodes) {
      const agent = n.containers.find((c) => c.endsWith('-kube-tsflannel'));
      expect(agent, `agent container on ${n.name}`).toBeDefined();
      // podman exec, like runc exec, keeps the caller's network namespace for a
      // hostNetwork container: run it from the node's, where the pod lives.
      const res = await podman(['exec', agent!, 'tsflannel', 'doctor', '--kube-subnet-mgr'], { netns: n.nsPath, allowFail: true, timeoutMs: 60_000 });
      process.stderr.write(`--- kubectl exec ${manifest.daemonSet.metadata.name}-${n.name} -c kube-tsflannel -- tsflannel doctor --kube-subnet-mgr\n${res.stdout}${res.stderr}\n`);
      const verdicts = new Map([...res.stdout.matchAll(/^(PASS|WARN|FAIL|SKIP) +(\S+) +(.*)$/gm)].map((m) => [m[2], { status: m[1], text: m[3] }]));
      expect(res.code, res.stdout + res.stderr).toBe(0);
      expect(res.stdout.split('\n')[0]).toMatch(new RegExp(`^tsflannel doctor: this network namespace; leases: Kubernetes Nodes via .*\\(node ${n.name}\\)$`));
      const want = ['subnet-file', 'bridge-address', 'lease', 'vxlan-device', 'underlay-interface', 'mtu', 'peer-entries', 'stale-entries',
        'vtep-reachability', 'ip-forward', 'forward-policy', 'masquerade', 'ipam-leaks', 'ipam-capacity', 'cni-socket'];
      for (const id of want) expect(verdicts.get(id)?.status, `${id} on ${n.name}: ${verdicts.get(id)?.text ?? 'missing'}`).toBe('PASS');
      expect([...verdicts.values()].filter((v) => v.status === 'FAIL')).toEqual([]);
      // the ping went through flannel.1 to the other node's VTEP (not a false "UDP 8472 blocked")
      expect(verdicts.get('vtep-reachability')!.text).toMatch(/^1 remote VTEP answered through flannel\.1/);
      // the IPAM store is the node's, through the manifest's /var/lib/cni mount
      expect(verdicts.get('ipam-leaks')!.text).toBe(`${podsOnNode} leases in /var/lib/cni/networks/cbr0, each with its veth`);
      expect(verdicts.get('lease')!.text).toContain(PODCIDR[n.name]);
    }
  }, 150_000);
});
