// Runs inside a node netns (bench/cni-breakdown.js): the plugin handler in
// this process, as a CNI worker of the agent runs it, for N ADDs then N DELs
// of fresh pods, recording per call its wall and CPU time, every shim op
// (traceShimCalls) and the host-local store's locked sections. Prints one
// JSON document.
// argv: repoRoot, dir (subnet file, store), network name, pod netns paths...
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [repoRoot, dir, network, ...pods] = process.argv.slice(2);
const mod = (p) => import(pathToFileURL(join(repoRoot, 'build', p)).href);
const { handleCni, preloadHandler } = await mod('plugin/handler.js');
const nl = await mod('netlink/index.js');
const { HostLocalIpam } = await mod('ipam/index.js');
await preloadHandler();

let sections = [];
for (const name of ['allocate', 'held', 'find', 'release', 'releaseFound']) {
  const orig = HostLocalIpam.prototype[name];
  HostLocalIpam.prototype[name] = async function (...args) {
    const t0 = performance.now();
    try {
      return await orig.apply(this, args);
    } finally {
      sections.push({ name: `ipam.${name}`, ms: performance.now() - t0 });
    }
  };
}

const stdin = Buffer.from(JSON.stringify({ cniVersion: '1.0.0', name: network, type: 'tsflannel', subnetFile: join(dir, 'subnet.env'), dataDir: join(dir, 'ipam') }));
const env = (command, i) => ({ CNI_COMMAND: command, CNI_CONTAINERID: `${network}-c${i}`, CNI_NETNS: pods[i], CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' });

// BENCH_BREAKDOWN_GAP_MS: the pause before each timed call. 0 (the default)
// measures the handler hot, back to back; a pause like the one between two
// agent calls in cni-path shows what an idle moment costs the next call.
const GAP_MS = Number(process.env.BENCH_BREAKDOWN_GAP_MS || 0);

async function one(command, i) {
  if (GAP_MS > 0) await new Promise((r) => setTimeout(r, GAP_MS));
  sections = [];
  nl.traceShimCalls(true);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const res = await handleCni({ env: env(command, i), stdin });
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  const ops = nl.traceShimCalls(false);
  if (res.exitCode !== 0) throw new Error(`${command} #${i}: ${res.stdout.toString()} ${res.stderr}`);
  return { ms, cpuMs: (cpu.user + cpu.system) / 1000, sysMs: cpu.system / 1000, ops, sections };
}

// Pod 0 warms up (the bridge is made there); the rest are measured.
await one('ADD', 0);
await one('DEL', 0);
const out = { ADD: [], DEL: [] };
for (let i = 1; i < pods.length; i++) out.ADD.push(await one('ADD', i));
for (let i = 1; i < pods.length; i++) out.DEL.push(await one('DEL', i));
process.stdout.write(JSON.stringify(out));
