// Pod start and stop through containerd's CRI plugin (the kubelet code path)
// with tsflannel vs the reference bridge + host-local chain, both followed by
// portmap as a real conflist would be. tsflannel is installed as on a node:
// the forwarder as `tsflannel`, calling a tsflanneld (--cni-only) that
// serves the node netns's CNI socket. Two containerd daemons built from the
// same config, differing only in their CNI conf dir, run side by side in one
// private node netns; calls alternate between them (ABBA) so machine noise
// hits both alike. Each figure is one CRI call as a kubelet makes it:
// RunPodSandbox (pause container + CNI ADD for loopback and the network) and
// StopPodSandbox + RemovePodSandbox (CNI DEL twice, sandbox teardown).
//
// The containerd, image and CRI helpers are the runtime tests' own
// (test/e2e/runtimes/*.ts), bundled on the fly with esbuild.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { onCleanup } from './lib/cleanup.js';
import { agentCommand, startCniAgent } from './lib/cni-agent.js';
import { addNetns, nsPath, PREFIX, tempDir } from './lib/netns.js';
import { ratio, summarize } from './lib/stats.js';
import { writeSubnetEnv } from './lib/cni.js';

// The warm-up pods also bring the agent, started for this module, past its
// first calls: a fresh agent's handler costs more while V8 compiles it, for
// about its first 40 calls (bench/cni-warmup.js), and a node's agent serves
// most pods warm. 20 pods make 40 CNI calls on each network.
const FULL = { pods: 40, warmup: 20 };
const QUICK = { pods: 6, warmup: 4 };

/** Bundles the runtime-test helpers into one ES module and imports it. */
async function loadKit(repoRoot) {
  const { build } = await import('esbuild');
  const dir = join(repoRoot, 'test/e2e/runtimes');
  // node_modules/.cache so the bundle's bare imports (@grpc/*) resolve from the repo
  const out = join(repoRoot, 'node_modules/.cache/tsflannel-bench/cri-kit.mjs');
  mkdirSync(join(out, '..'), { recursive: true });
  await build({
    stdin: {
      contents: [
        "export { Containerd } from './containerd.ts';",
        "export { buildImages, PAUSE_IMAGE } from './images.ts';",
        "export { makeBinDir, makeConfDir, tsflannelConflist, bridgeConflist } from './cni.ts';",
        "export { cgroupPids, leaseFiles, pidsWithArg, registerMachineDirs, releaseMachineDirs, removeCgroup, removeNetnsFile, unmountUnder, vethsIn } from './host.ts';",
      ].join('\n'),
      resolveDir: dir,
      loader: 'ts',
    },
    bundle: true,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    outfile: out,
    logLevel: 'warning',
    plugins: [{
      // each helper finds its neighbours (cri.proto, bin/tsflannel) through import.meta.url
      name: 'keep-meta-url',
      setup(b) {
        b.onLoad({ filter: /\.ts$/ }, (args) => ({
          loader: 'ts',
          contents: readFileSync(args.path, 'utf8').replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href)),
        }));
      },
    }],
  });
  return import(`${pathToFileURL(out).href}?t=${Date.now()}`);
}

function inSubnet(ip, prefix) {
  return typeof ip === 'string' && ip.startsWith(prefix);
}

export async function run(ctx) {
  const plan = ctx.quick ? QUICK : FULL;
  const kit = await loadKit(ctx.repoRoot);
  const dir = tempDir('cri');
  const [node] = addNetns(['crinode'], { lo: true });
  spawnSync('ip', ['netns', 'exec', node, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  const cgroupParent = `/${PREFIX}-cri`;
  const netnsFiles = new Set();
  kit.registerMachineDirs();
  // for an interrupted run: synchronous, idempotent, before the temp dir goes
  onCleanup('containerd daemons of the CRI bench', () => {
    for (const pid of [...kit.pidsWithArg(dir), ...kit.cgroupPids(cgroupParent)]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    for (const f of netnsFiles) kit.removeNetnsFile(f);
    kit.unmountUnder(dir);
    kit.releaseMachineDirs();
  });

  ctx.log('building images');
  const images = await kit.buildImages(join(dir, 'images'));
  const binDir = kit.makeBinDir(join(dir, 'bin'));
  const subnetFile = join(dir, 'subnet.env');
  writeSubnetEnv(subnetFile);
  const contenders = [
    {
      key: 'T', label: 'tsflannel', subnetPrefix: '10.244.1.', leaseDir: join(dir, 'tsf-ipam', 'benchnet'),
      conflist: kit.tsflannelConflist({ name: 'benchnet', subnetFile, dataDir: join(dir, 'tsf-ipam'), agentSocket: join(dir, 'run', 'cni.sock') }),
    },
    {
      key: 'R', label: 'bridge+host-local', subnetPrefix: '10.244.2.', leaseDir: join(dir, 'ref-ipam', 'benchnet'),
      conflist: kit.bridgeConflist({ name: 'benchnet', bridge: 'refbr0', subnet: '10.244.2.0/24', dataDir: join(dir, 'ref-ipam') }),
    },
  ];
  const daemons = [];
  const agent = await startCniAgent(agentCommand(ctx.repoRoot), node, join(dir, 'run', 'cni.sock'));
  try {
    for (const c of contenders) {
      const confDir = kit.makeConfDir(join(dir, `net.d-${c.key}`), c.conflist);
      c.containerd = await kit.Containerd.start({ dir: join(dir, `containerd-${c.key}`), netns: nsPath(node), binDir, confDir, sandboxImage: kit.PAUSE_IMAGE });
      daemons.push(c.containerd);
      await c.containerd.importImage(images.pauseTar);
      c.cri = c.containerd.cri();
      c.run = [];
      c.stop = [];
    }

    let seq = 0;
    const podCycle = async (c, record) => {
      const config = { metadata: { name: `b${seq}`, uid: `${PREFIX}-b${seq}`, namespace: 'default' }, hostname: `b${seq}`, linux: { cgroupParent } };
      seq++;
      let t = performance.now();
      const id = await c.cri.runPodSandbox(config);
      const runMs = performance.now() - t;
      const status = await c.cri.podSandboxStatus(id);
      netnsFiles.add(await c.cri.sandboxNetns(id));
      if (!inSubnet(status.status.network?.ip, c.subnetPrefix)) throw new Error(`${c.label}: pod IP ${status.status.network?.ip} not in ${c.subnetPrefix}0/24`);
      t = performance.now();
      await c.cri.stopPodSandbox(id);
      await c.cri.removePodSandbox(id);
      const stopMs = performance.now() - t;
      if (record) {
        c.run.push(runMs);
        c.stop.push(stopMs);
      }
    };

    ctx.log(`warm-up: ${plan.warmup} pod(s) per network`);
    for (let i = 0; i < plan.warmup; i++) for (const c of contenders) await podCycle(c, false);
    ctx.log(`measuring: ${plan.pods} pods per network, ABBA`);
    for (let i = 0; i < plan.pods; i++) {
      const order = i % 2 === 0 ? contenders : [...contenders].reverse();
      for (const c of order) await podCycle(c, true);
    }
    for (const c of contenders) {
      const left = kit.leaseFiles(c.leaseDir);
      if (left.length) throw new Error(`${c.label}: leases left after teardown: ${left.join(', ')}`);
    }
    const veths = kit.vethsIn(node, []);
    if (veths.length) throw new Error(`veths left after teardown: ${veths.join(', ')}`);
  } finally {
    for (const d of daemons) await d.stop().catch(() => undefined);
    agent.stop();
    await kit.removeCgroup(cgroupParent);
    for (const f of netnsFiles) kit.removeNetnsFile(f);
  }

  const [T, R] = contenders;
  const row = (name, key) => {
    const t = summarize(T[key]);
    const r = summarize(R[key]);
    return {
      name, n: t.n,
      'tsflannel median': t.median, 'tsflannel p95': t.p95,
      'bridge+host-local median': r.median, 'bridge+host-local p95': r.p95,
      'ratio median': ratio(t.median, r.median),
      'extra ms (median)': t.median - r.median,
    };
  };
  return {
    title: 'CRI pod start/stop through containerd: tsflannel vs bridge+host-local (ms)',
    rows: [row('RunPodSandbox', 'run'), row('StopPodSandbox + RemovePodSandbox', 'stop')],
    notes: [
      `containerd ${versionOf()} CRI plugin, two daemons with identical configs (private root/state, restrict_oom_score_adj, runc), one per network, both in the same node netns; pause image built from busybox-static.`,
      'Conflists: [tsflannel, portmap] vs [bridge + host-local, portmap], same MTU 1450, hairpin, gateway; loopback is run by containerd in parallel, as always.',
      `${plan.pods} pods per network after ${plan.warmup} warm-up each, alternating networks ABBA; each pod is run, its IP checked in its subnet, then stopped and removed before the next.`,
      'RunPodSandbox includes starting the pause container; Stop+Remove includes two CNI DELs (the second with an empty netns). Ratio = tsflannel / reference.',
      'Checked afterwards: no lease files and no pod veths left in the node netns.',
    ],
  };
}

function versionOf() {
  const r = spawnSync('containerd', ['--version'], { encoding: 'utf8' });
  return (r.stdout ?? '').split(' ')[2] ?? 'unknown';
}
