// tsflanneld in Kubernetes mode against an API server with many Nodes: a
// storm of status-only heartbeats writes nothing to the kernel and runs no
// reconcile pass, and every remote Node changing its VTEP MAC at once is
// applied in a few passes. Quick sizes here (TSF_KUBE_SCALE_NODES,
// TSF_KUBE_SCALE_HEARTBEATS override them); `npm run bench` runs 5,000
// Nodes and 10,000 heartbeats (bench/kube-scale.js).
import { describe, expect, it } from 'vitest';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { runAgentStorm } from '../helpers/kube-agent-storm.js';

const NODES = Number(process.env.TSF_KUBE_SCALE_NODES ?? 500);
const HEARTBEATS = Number(process.env.TSF_KUBE_SCALE_HEARTBEATS ?? 1000);

describe.skipIf(requireOrSkip('kube mode at scale', { root: isRoot }))('tsflanneld with many Nodes', () => {
  it(`writes nothing and runs no pass for ${HEARTBEATS} status heartbeats over ${NODES} Nodes, and applies ${NODES - 1} MAC changes at once in a few passes`, async () => {
    const r = await runAgentStorm({ nodes: NODES, heartbeats: HEARTBEATS, timeoutMs: 150_000, log: (l) => process.stderr.write(`[kube-scale e2e] ${l}\n`) });
    process.stderr.write(
      `[kube-scale e2e] ${r.nodes} Nodes programmed in ${(r.programMs / 1000).toFixed(1)} s; one MAC change = ${r.oneChangeWrites} kernel writes; ` +
        `${r.heartbeats} heartbeats: ${r.heartbeatsIgnored} ignored, ${r.heartbeatKernelWrites} kernel writes, ${r.heartbeatPasses} passes, agent CPU ${r.heartbeatAgentCpuMs.toFixed(0)} ms ` +
        `(${((r.heartbeatAgentCpuMs * 1000) / r.heartbeats).toFixed(0)} µs each) in ${r.heartbeatWallMs.toFixed(0)} ms; ` +
        `${r.changes} MAC changes: ${r.changePasses} passes, ${r.changeKernelWrites} kernel writes, ${r.changeWallMs.toFixed(0)} ms, agent CPU ${r.changeAgentCpuMs.toFixed(0)} ms; ` +
        `${r.lists} list, ${r.watches} watch requests; RSS ${r.agentRssMiB.toFixed(0)} MiB\n`,
    );
    expect(r.oneChangeWrites).toBeGreaterThan(0);
    expect(r.heartbeatKernelWrites, r.heartbeatKernelLines.join('\n')).toBe(0);
    expect(r.heartbeatPasses).toBe(0);
    // Every heartbeat reached the agent and was counted as ignored.
    expect(r.heartbeatsIgnored).toBe(r.heartbeats);
    // The agent's CPU per heartbeat is printed above; speed is bench/api-scale.js's to judge, not a timed test's.
    expect(r.changePasses).toBeGreaterThanOrEqual(1);
    expect(r.changePasses).toBeLessThanOrEqual(5);
    expect(r.changeKernelWrites).toBeGreaterThanOrEqual(r.changes);
    expect(r.lists).toBe(1);
    expect(r.watches).toBe(1);
  }, 300_000);
});
