// A short soak of the real binary (see test/soak/soak.ts; `npm run soak` runs
// it for minutes), and the full tsflannel binary racing the reference
// host-local plugin on one store.
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, isRoot, nsPath } from '../helpers/netns.js';
import { CNI_REF_DIR, refPlugin } from '../helpers/reference.js';
import { requireOrSkip } from '../helpers/require.js';
import { runSoak, spawnPlugin, type SpawnResult } from '../soak/soak.js';
import * as nl from '../../src/netlink/index.js';

const REFERENCE = refPlugin('host-local');

// scripts/soak.sh sets these for long runs.
const SECONDS = Number(process.env.SOAK_TEST_SECONDS ?? 20);
const IN_FLIGHT = Number(process.env.SOAK_IN_FLIGHT ?? 20);
const KILL_SHARE = Number(process.env.SOAK_KILL_SHARE ?? 0.1);
const REPORT = process.env.SOAK_REPORT;

describe.skipIf(requireOrSkip('soak', { root: isRoot }))('soak', () => {
  it(`${SECONDS} s of ADD/CHECK/DEL with ${IN_FLIGHT} in flight and ${KILL_SHARE * 100}% of plugins SIGKILLed: no duplicate IP, no leak`, async () => {
    const seconds = SECONDS;
    const report = await runSoak({ seconds, inFlight: IN_FLIGHT, killShare: KILL_SHARE, keep: 3 });
    if (REPORT) writeFileSync(REPORT, JSON.stringify({ inFlight: IN_FLIGHT, killShare: KILL_SHARE, ...report }, null, 2));
    console.log(
      `soak ${seconds}s: ${report.operations.total} ops (add ${report.operations.add}, del ${report.operations.del}, check ${report.operations.check}), ` +
        `${report.killed} killed, ${report.samples} samples, max live ${report.maxLive}, duplicates ${report.duplicates}, ` +
        `op ms p50 ${report.opMs.p50} p95 ${report.opMs.p95} max ${report.opMs.max}`,
    );
    const hostile = Object.entries(report.hostile).map(([cls, h]) => `${cls} ${h.calls}/${h.wrong}`).join(', ');
    console.log(
      `soak classes: races sameIdAdds ${report.races.sameIdAdds}, addDel ${report.races.addDel}; ` +
        `hostile (calls / answered wrong) ${hostile || 'none'}; slowest hostile ${report.hostileMaxMs} ms`,
    );
    expect(report.problems).toEqual([]);
    expect(report.duplicates).toBe(0);
    expect(report.leaks).toEqual({ leasesAfterDel: [], vethsAfterDel: [], leases: [], veths: [], podInterfaces: [], files: [], nodeLinks: [] });
    expect(report.gatewayOk).toBe(true);
    expect(report.kept).toHaveLength(3);
    // The run must really have been a soak: enough work, and kills that landed.
    // (The rate depends on the machine's load, so the floor is modest: every
    // slot of the in-flight window did several operations.)
    expect(report.operations.total).toBeGreaterThanOrEqual(60);
    expect(report.killed).toBeGreaterThan(0);
    // ... and it raced same-attachment calls and mixed in hostile invocations.
    expect(report.races.sameIdAdds).toBeGreaterThan(0);
    expect(report.races.addDel).toBeGreaterThan(0);
    expect(Object.values(report.hostile).reduce((n, h) => n + h.calls, 0)).toBeGreaterThan(0);
    expect(report.minMutatingInFlight).toBe(IN_FLIGHT);
    // One sample a second, give or take timer drift on a loaded machine.
    expect(report.samples).toBeGreaterThanOrEqual(Math.floor(seconds * 0.9) - 1);
  }, (SECONDS + 240) * 1000);
});

describe.skipIf(requireOrSkip('host-local race', { root: isRoot, [REFERENCE]: existsSync(REFERENCE) }))('tsflannel binary and reference host-local on one store', () => {
  const dirs: string[] = [];
  afterAll(() => {
    cleanupAll();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('20 full tsflannel ADDs racing 20 reference host-local ADDs never hand out one IP twice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-race-'));
    dirs.push(dir);
    const node = addNetns('racenode');
    const subnetFile = join(dir, 'subnet.env');
    const dataDir = join(dir, 'data');
    const network = `race${process.pid}`;
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    const ours = JSON.stringify({ cniVersion: '1.1.0', name: network, type: 'tsflannel', subnetFile, dataDir });
    // What flannel's delegate would hand host-local for the same node subnet.
    const ref = JSON.stringify({
      cniVersion: '1.0.0',
      name: network,
      type: 'bridge',
      ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.244.5.0/24', gateway: '10.244.5.1' }]] },
    });
    const N = 20;
    const pods = Array.from({ length: N }, (_, i) => addNetns(`race${i}`));
    const env = (command: string, id: string, netns: string) => ({
      CNI_COMMAND: command,
      CNI_CONTAINERID: id,
      CNI_NETNS: netns,
      CNI_IFNAME: 'eth0',
      CNI_PATH: CNI_REF_DIR,
    });
    const tsf = (command: string, i: number) =>
      spawnPlugin({ nodeNs: node, env: env(command, `tsf-${i}`, nsPath(pods[i]!)), stdin: ours, timeoutMs: 60_000 });
    const reference = (command: string, i: number) =>
      spawnPlugin({ nodeNs: node, bin: REFERENCE, env: env(command, `ref-${i}`, '/var/run/netns/unused'), stdin: ref, timeoutMs: 60_000 });

    // Interleave the spawns so both implementations contend from the start.
    const runs: Promise<SpawnResult>[] = [];
    for (let i = 0; i < N; i++) runs.push(tsf('ADD', i), reference('ADD', i));
    const results = await Promise.all(runs);
    const owner = new Map<string, string>();
    results.forEach((r, k) => {
      const who = `${k % 2 === 0 ? 'tsf' : 'ref'}-${Math.floor(k / 2)}`;
      expect(r.code, `${who}: ${r.stdout}${r.stderr.slice(0, 400)}`).toBe(0);
      const ip = (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
      expect(owner.get(ip), `${ip} handed to ${owner.get(ip)} and ${who}`).toBeUndefined();
      owner.set(ip, who);
    });
    expect(owner.size).toBe(2 * N);
    const store = join(dataDir, network);
    const leases = readdirSync(store).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    expect(leases.sort()).toEqual([...owner.keys()].sort());
    for (const [ip, who] of owner) expect(readFileSync(join(store, ip), 'utf8')).toBe(`${who}\r\neth0`);
    // Our pods carry exactly the addresses the store gave them.
    for (let i = 0; i < N; i++) {
      const addrs = nl.addrList({ dev: 'eth0', family: 'inet', netns: nsPath(pods[i]!) }).map((a) => a.cidr.split('/')[0]);
      expect(addrs).toEqual([[...owner].find(([, w]) => w === `tsf-${i}`)![0]]);
    }

    // Each releases its own, and the store ends empty.
    const dels = await Promise.all(Array.from({ length: N }, (_, i) => [tsf('DEL', i), reference('DEL', i)]).flat());
    for (const r of dels) expect(r.code, r.stdout).toBe(0);
    expect(readdirSync(store).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f))).toEqual([]);
    expect(nl.linkList({ netns: nsPath(node) }).filter((l) => l.type === 'veth')).toEqual([]);
  }, 120_000);
});
