// How an agent's CPU per call moves from its start: rounds of sequential
// ADDs, then DELs, of fresh pods through the forwarder into a freshly
// started `tsflanneld --cni-only`, each call after a short idle pause (as
// pods come), the agent's CPU split by thread per round. It shows the cost
// of a fresh agent's first calls, while V8 still compiles the handler, and
// where the figure settles (what bench/cni-path.js judges the targets on
// after its untimed warm-up calls).
import { join } from 'node:path';
import { describeFailure, pluginJob, writeSubnetEnv } from './lib/cni.js';
import { agentCommand, agentCpuSnapshot, agentCpuSplit, startCniAgent } from './lib/cni-agent.js';
import { addNetns, delNetns, nsPath, PREFIX, tempDir } from './lib/netns.js';
import { startNsDriver } from './lib/ns-driver.js';

const CNI_PATH = '/usr/lib/cni';
const FULL = { rounds: 6, perRound: 20 };
const QUICK = { rounds: 3, perRound: 8 };
/** The idle pause before each call (pods do not come back to back). */
const GAP_MS = 15;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function run(ctx) {
  const N = ctx.quick ? QUICK : FULL;
  const dir = tempDir('warmup');
  const subnetFile = join(dir, 'subnet.env');
  writeSubnetEnv(subnetFile);
  const socket = join(dir, 'run', 'cni.sock');
  const conf = { cniVersion: '1.0.0', name: `${PREFIX}-wu`, type: 'tsflannel', subnetFile, dataDir: join(dir, 'ipam'), agentSocket: socket };
  const forwarder = join(ctx.repoRoot, 'dist', 'tsflannel-forward');
  const [nodeNs] = addNetns(['node'], { lo: true });
  const pods = addNetns(Array.from({ length: N.perRound }, (_, i) => `w${i}`));
  const agentCmd = agentCommand(ctx.repoRoot);
  const agent = await startCniAgent(agentCmd, nodeNs, socket);
  const driver = startNsDriver(nodeNs);
  const job = (command, round, i) => {
    const j = pluginJob(forwarder, { command, containerId: `${PREFIX}-r${round}-${i}`, netns: nsPath(pods[i]), ifname: 'eth0', path: CNI_PATH }, conf);
    j.env = { ...j.env, TSFLANNEL_STANDALONE: join(ctx.repoRoot, 'dist', 'tsflannel') };
    return j;
  };
  const rows = [];
  try {
    let served = 0;
    for (let round = 0; round < N.rounds; round++) {
      for (const command of ['ADD', 'DEL']) {
        const acc = { total: 0, forwarder: 0, main: 0, workers: 0, other: 0, ended: 0 };
        for (let i = 0; i < N.perRound; i++) {
          await sleep(GAP_MS);
          const before = agentCpuSnapshot(agent.pid);
          const { results: [r] } = await driver.run([job(command, round, i)]);
          const split = agentCpuSplit(agent.pid, before, agentCpuSnapshot(agent.pid));
          for (const k of ['total', 'main', 'workers', 'other', 'ended']) acc[k] += split[k];
          if (r.code !== 0) throw new Error(`${command} in round ${round}: ${describeFailure(r)}`);
          if (r.stderr.includes('running standalone')) throw new Error(`${command} in round ${round} fell back: ${r.stderr.trim()}`);
          acc.forwarder += r.cpuMs;
        }
        const per = (v) => v / N.perRound;
        rows.push({
          name: `${command}, calls ${served + 1}-${served + N.perRound}`,
          'CPU/call (forwarder + agent)': per(acc.forwarder + acc.total),
          forwarder: per(acc.forwarder),
          'agent main': per(acc.main),
          'agent workers': per(acc.workers),
          'agent other': per(acc.other),
          'agent ended threads': per(acc.ended),
        });
        served += N.perRound;
      }
    }
  } finally {
    await driver.close();
    agent.stop();
    delNetns([nodeNs, ...pods]);
  }
  return {
    title: 'CNI agent warm-up: CPU per call (ms) by the calls served since its start',
    rows,
    notes: [
      `${agentCmd.join(' ')} --cni-only (its default CNI workers), started for this module; ${N.rounds} rounds of ${N.perRound} sequential ADDs then their DELs of fresh pods, through the forwarder, a ${GAP_MS} ms pause before each call; "calls" counts ADDs and DELs together.`,
      'Forwarder: its own rusage (bench/driver); agent: its process CPU clock per call (exact, bench/lib/cpu-clock.js), split by thread as in cni-path (other = V8\'s compiler and GC helpers, the Go runtime; ended = the shim\'s threads that entered the pod\'s netns). No idle rate is subtracted (about 2-4 ms per second, i.e. 0.03-0.06 ms per 15 ms pause).',
    ],
  };
}
