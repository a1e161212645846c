// A kube-mode node whose Node has no spec.podCIDR yet: the agent is alive
// (/healthz 200, so a liveness probe does not restart it in a loop) but not
// ready (/readyz 503 naming what it waits for). Once the podCIDR appears it
// becomes ready and only then sets NetworkUnavailable=False, with its
// annotations under --kube-annotation-prefix.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTopology, destroyTopology, type Topology } from '../../src/demo/topology.js';
import { bridgeUnixToTcp } from '../../src/demo/port-bridge.js';
import { FakeKube } from '../helpers/fake-kube.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { eventually } from '../helpers/eventually.js';
import { appendLog } from '../helpers/agent-log.js';

const AGENT = fileURLToPath(new URL('../../bin/tsflanneld', import.meta.url));
const BRIDGE = fileURLToPath(new URL('../../build/demo/port-bridge.js', import.meta.url));
const PREFIX = 'tsflannel.example.com';


function probe(ns: string, path: string): { status: number; body: string } {
  const script = `fetch('http://127.0.0.1:18082'+process.argv[1]).then(async r=>process.stdout.write(JSON.stringify({status:r.status,body:await r.text()}))).catch(()=>process.stdout.write('{"status":0,"body":""}'))`;
  return JSON.parse(execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', script, path], { encoding: 'utf8', timeout: 10_000 })) as { status: number; body: string };
}

describe.skipIf(requireOrSkip('kube-readiness', { root: isRoot }))('readiness of a kube-mode node waiting for its podCIDR', () => {
  let topo: Topology;
  let kube: FakeKube;
  let apiBridge: Server;
  let dir = '';
  const procs: ChildProcess[] = [];
  let ns = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tsf-kready-'));
    topo = buildTopology(`tsfkr${randomBytes(2).toString('hex')}`, [{ name: 'r1', segment: 'a' }]);
    ns = topo.nodes[0]!.ns;
    kube = await FakeKube.start();
    kube.addNode('r1', undefined);
    const sock = join(dir, 'api.sock');
    apiBridge = await bridgeUnixToTcp(sock, '127.0.0.1', Number(new URL(kube.url).port));
    const netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
    const bridge = spawn('ip', ['netns', 'exec', ns, process.execPath, BRIDGE, '127.0.0.1', '6443', sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(bridge);
    await new Promise((r) => bridge.stdout!.once('data', r));
    const agent = spawn('ip', ['netns', 'exec', ns, AGENT, '--kube-subnet-mgr', '--kube-api-url', 'http://127.0.0.1:6443',
      '--net-config-path', netConf, '--node-name', 'r1', '--iface', 'eth0', '--subnet-file', join(dir, 'subnet.env'),
      '--resync-period', '2', '--healthz-port', '18082', '--cni-socket', ''], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, FLANNELD_KUBE_ANNOTATION_PREFIX: PREFIX },
    });
    agent.stderr!.on('data', appendLog(join(dir, 'agent.log')));
    procs.push(agent);
  }, 60_000);
  afterAll(async () => {
    for (const p of procs) p.kill('SIGKILL');
    apiBridge?.close();
    await kube?.close();
    if (topo) destroyTopology(topo);
    rmSync(dir, { recursive: true, force: true });
  });

  it('is alive but not ready while the Node has no podCIDR, and leaves NetworkUnavailable alone', async () => {
    await eventually('the health server answers', 20_000, () => probe(ns, '/healthz').status !== 0);
    await new Promise((r) => setTimeout(r, 1500));
    expect(probe(ns, '/healthz')).toEqual({ status: 200, body: 'ok: alive\n' });
    const readyz = probe(ns, '/readyz');
    expect(readyz.status).toBe(503);
    expect(readyz.body).toMatch(/^not ready: waiting for leaseHeld, deviceReady, rulesInstalled, subnetFileWritten, firstReconcileDone\n$/);
    const cond = kube.getNode('r1')!.status.conditions?.find((c) => c.type === 'NetworkUnavailable');
    expect(cond?.status).not.toBe('False');
  });

  it('becomes ready once the podCIDR appears, then sets NetworkUnavailable=False; annotations use --kube-annotation-prefix (from env)', async () => {
    kube.setPodCIDR('r1', '10.244.9.0/24');
    await eventually('ready', 30_000, () => probe(ns, '/readyz').status === 200);
    expect(readFileSync(join(dir, 'subnet.env'), 'utf8')).toContain('FLANNEL_SUBNET=10.244.9.1/24');
    await eventually('NetworkUnavailable=False', 10_000, () =>
      kube.getNode('r1')!.status.conditions?.find((c) => c.type === 'NetworkUnavailable')?.status === 'False');
    const annotations = kube.getNode('r1')!.metadata.annotations ?? {};
    expect(annotations[`${PREFIX}/backend-type`]).toBe('vxlan');
    expect(Object.keys(annotations).some((k) => k.startsWith('flannel.alpha.coreos.com/'))).toBe(false);
  });
});
