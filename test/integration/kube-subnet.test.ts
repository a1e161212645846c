// The Kubernetes subnet manager against an in-memory API server that speaks
// the Node API over real HTTP (list, chunked watch, patch, status subresource).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import pino from 'pino';
import { collectLeases } from '../helpers/lease-watch.js';
import { FakeKube, type FakeKubeOptions, type RecordedRequest } from '../helpers/fake-kube.js';
import { pollFor } from '../helpers/eventually.js';
import { KUBE_API_CALLS, KubeSubnetError, KubeSubnetManager, type KubeSubnetManagerOptions } from '../../src/daemon/subnet/kube.js';
import type { Lease, LeaseAttrs } from '../../src/daemon/types.js';

const P = 'flannel.alpha.coreos.com';
const MAC_A = '0a:00:00:00:00:0a';
const MAC_B = '0a:00:00:00:00:0b';
const MAC_C = '0a:00:00:00:00:0c';

let dir: string;
let netConf: string;
const allRequests: RecordedRequest[] = [];
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-kube-'));
  netConf = join(dir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Captured {
  logger: pino.Logger;
  lines: string[];
}

function captureLogs(): Captured {
  const lines: string[] = [];
  return { lines, logger: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }) };
}

async function startFake(opts: FakeKubeOptions = {}): Promise<FakeKube> {
  const fake = await FakeKube.start(opts);
  cleanups.push(async () => {
    allRequests.push(...fake.requests);
    await fake.close();
  });
  return fake;
}

function newManager(fake: FakeKube, extra: Partial<KubeSubnetManagerOptions> = {}, logs = captureLogs()): KubeSubnetManager {
  const m = new KubeSubnetManager({
    nodeName: 'node-a',
    netConfPath: netConf,
    apiServerUrl: fake.url,
    resyncSeconds: 300,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: logs.logger,
    ...extra,
  });
  cleanups.push(() => m.close());
  return m;
}

function flannelAnnotations(ip: string, mac: string): Record<string, string> {
  return {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: ip,
  };
}

function lease(node: string, subnet: string, ip: string, mac: string): Lease {
  return { nodeName: node, subnet, publicIP: ip, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: mac } };
}

const attrsA: LeaseAttrs = { publicIP: '192.168.50.1', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: MAC_A } };

// The in-memory API server answers at once: poll every 10 ms, for 10 s.
const waitFor = <T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> => pollFor(what, probe, timeoutMs, 10);

/** Starts watchLeases and records every callback. */
function watch(m: KubeSubnetManager): { calls: Lease[][]; stop: () => Promise<void> } {
  let stop: () => Promise<void> = async () => undefined;
  const calls = collectLeases(m, (fn) => {
    stop = fn;
    cleanups.push(fn);
  });
  return { calls, stop };
}

function byName(leases: Lease[]): Record<string, Lease> {
  return Object.fromEntries(leases.map((l) => [l.nodeName!, l]));
}

const count = (fake: FakeKube, verb: string): number => fake.requests.filter((r) => r.verb === verb).length;

// A full garbage collection on demand: Node 20 collected the timeout inside
// AbortSignal.any([signal, AbortSignal.timeout(ms)]), and the deadline with it.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

describe('acquireLease', () => {
  it('waits for spec.podCIDR, patches exactly flannel\'s annotations, and sets NetworkUnavailable=False only once told the node is ready', async () => {
    const fake = await startFake();
    fake.addNode('node-a', undefined, { 'example.com/keep': 'me' });
    const logs = captureLogs();
    const m = newManager(fake, {}, logs);

    const pending = m.acquireLease(attrsA);
    await waitFor('three reads of the node', () => fake.requests.filter((r) => r.verb === 'get').length >= 3);
    expect(fake.requests.filter((r) => r.verb === 'patch')).toEqual([]);
    expect(logs.lines.join('')).toContain('waiting for spec.podCIDR');

    fake.setPodCIDR('node-a', '10.244.7.0/24');
    const got = await pending;
    expect(got).toEqual(lease('node-a', '10.244.7.0/24', '192.168.50.1', MAC_A));

    const node = fake.getNode('node-a')!;
    expect(node.metadata.annotations).toEqual({ 'example.com/keep': 'me', ...flannelAnnotations('192.168.50.1', MAC_A) });
    expect(node.spec).toEqual({ podCIDR: '10.244.7.0/24', podCIDRs: ['10.244.7.0/24'] });
    const before = Object.fromEntries((node.status.conditions ?? []).map((c) => [c.type, c]));
    expect(before.NetworkUnavailable?.status).not.toBe('False');
    expect(fake.requests.filter((r) => r.method === 'PATCH')).toHaveLength(1);

    await m.leaseReady(new AbortController().signal);
    const conditions = Object.fromEntries((fake.getNode('node-a')!.status.conditions ?? []).map((c) => [c.type, c]));
    expect(conditions.Ready?.status).toBe('True');
    expect(conditions.NetworkUnavailable).toMatchObject({ status: 'False', reason: 'FlannelIsUp' });

    const patches = fake.requests.filter((r) => r.method === 'PATCH');
    expect(patches.map((p) => [p.path, p.contentType])).toEqual([
      ['/api/v1/nodes/node-a/status', 'application/strategic-merge-patch+json'],
      ['/api/v1/nodes/node-a/status', 'application/strategic-merge-patch+json'],
    ]);
    expect(patches[0]!.body).toEqual({ metadata: { annotations: flannelAnnotations('192.168.50.1', MAC_A) } });
    expect(patches[1]!.body).toMatchObject({ status: { conditions: [{ type: 'NetworkUnavailable', status: 'False' }] } });
  });

  it('writes nothing when the node already says the same, and only what changed otherwise', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.7.0/24', { ...flannelAnnotations('192.168.50.1', MAC_A), [`${P}/public-ip`]: '192.168.50.9' });
    const m = newManager(fake);
    await m.acquireLease(attrsA);
    const first = fake.requests.filter((r) => r.method === 'PATCH');
    expect(first[0]!.body).toEqual({ metadata: { annotations: { [`${P}/public-ip`]: '192.168.50.1' } } });
    expect(first).toHaveLength(1);

    const rv = fake.resourceVersion;
    const again = newManager(fake);
    expect(await again.acquireLease(attrsA)).toEqual(lease('node-a', '10.244.7.0/24', '192.168.50.1', MAC_A));
    expect(fake.requests.filter((r) => r.method === 'PATCH')).toHaveLength(1);
    expect(fake.resourceVersion).toBe(rv);

    await newManager(fake).acquireLease({ ...attrsA, backendData: { VNI: 1, VtepMAC: MAC_B } });
    const last = fake.requests.filter((r) => r.method === 'PATCH');
    expect(last).toHaveLength(2);
    expect(last[1]!.body).toEqual({ metadata: { annotations: { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${MAC_B}"}` } } });
  });

  it('leaves NetworkUnavailable alone with --set-node-network-unavailable=false, and sets it once only', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.7.0/24');
    const off = newManager(fake, { setNodeNetworkUnavailable: false });
    await off.acquireLease(attrsA);
    await off.leaseReady(new AbortController().signal);
    expect(fake.requests.filter((r) => r.method === 'PATCH')).toHaveLength(1);
    expect(fake.getNode('node-a')!.status.conditions?.find((c) => c.type === 'NetworkUnavailable')).toBeUndefined();

    const on = newManager(fake);
    await on.leaseReady(new AbortController().signal);
    await on.leaseReady(new AbortController().signal);
    expect(fake.requests.filter((r) => r.method === 'PATCH')).toHaveLength(2);
    expect(fake.getNode('node-a')!.status.conditions?.find((c) => c.type === 'NetworkUnavailable')?.status).toBe('False');
  });

  it('publishes a user\'s public-ip-overwrite instead of the detected address', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.7.0/24', { [`${P}/public-ip-overwrite`]: '203.0.113.7' });
    const got = await newManager(fake).acquireLease(attrsA);
    expect(got.publicIP).toBe('203.0.113.7');
    expect(fake.getNode('node-a')!.metadata.annotations![`${P}/public-ip`]).toBe('203.0.113.7');
  });

  it('retries transient API errors and fails fast on a pod CIDR outside Network', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.7.0/24');
    fake.failNextRequests(2, 503);
    fake.failNextRequests(1, 500, (r) => r.method === 'PATCH');
    const got = await newManager(fake).acquireLease(attrsA);
    expect(got.subnet).toBe('10.244.7.0/24');
    expect(fake.requests.filter((r) => r.status !== undefined && r.status >= 500)).toHaveLength(3);

    fake.addNode('node-x', '10.99.0.0/24');
    await expect(newManager(fake, { nodeName: 'node-x' }).acquireLease(attrsA)).rejects.toThrow(/does not contain pod CIDR 10\.99\.0\.0\/24/);
    expect(fake.getNode('node-x')!.metadata.annotations).toBeUndefined();
  });

  it('gives up waiting when aborted', async () => {
    const fake = await startFake();
    fake.addNode('node-a');
    const ac = new AbortController();
    const pending = newManager(fake).acquireLease(attrsA, ac.signal);
    await waitFor('a read', () => count(fake, 'get') >= 1);
    ac.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
  });
});

describe('watchLeases', () => {
  it('follows nodes being added, changed and deleted with full-set callbacks', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.1.0/24', flannelAnnotations('192.168.50.1', MAC_A));
    fake.addNode('node-b', '10.244.2.0/24', flannelAnnotations('192.168.50.2', MAC_B));
    fake.addNode('bare', '10.244.9.0/24');
    fake.addNode('no-cidr', undefined, flannelAnnotations('192.168.50.8', MAC_C));
    const m = newManager(fake);
    const { calls } = watch(m);

    const a = lease('node-a', '10.244.1.0/24', '192.168.50.1', MAC_A);
    let b = lease('node-b', '10.244.2.0/24', '192.168.50.2', MAC_B);
    await waitFor('first callback', () => calls.length >= 1);
    expect(calls[0]).toEqual([a, b]);
    await waitFor('watch open', () => fake.openWatches === 1);

    const expectNext = async (expected: Lease[]): Promise<void> => {
      const before = calls.length;
      await waitFor('next callback', () => calls.length > before);
      expect(calls.at(-1)).toEqual(expected);
    };

    fake.addNode('node-c', '10.244.3.0/24', flannelAnnotations('192.168.50.3', MAC_C));
    const c = lease('node-c', '10.244.3.0/24', '192.168.50.3', MAC_C);
    await expectNext([a, b, c]);

    fake.setAnnotations('node-b', { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"0a:00:00:00:00:bb"}` });
    b = lease('node-b', '10.244.2.0/24', '192.168.50.2', '0a:00:00:00:00:bb');
    await expectNext([a, b, c]);

    fake.setAnnotations('node-b', { [`${P}/public-ip`]: '192.168.50.22' });
    b = { ...b, publicIP: '192.168.50.22' };
    await expectNext([a, b, c]);

    // Heartbeat-like updates and nodes flannel has not reached do not trigger callbacks.
    const quiet = calls.length;
    fake.touch('node-a');
    fake.touch('bare');
    fake.setAnnotations('bare', { unrelated: 'x' });

    fake.deleteNode('node-c');
    await expectNext([a, b]);
    expect(calls.length).toBe(quiet + 1);

    // A node whose annotations become garbage stops being a lease; fixing them brings it back.
    fake.setAnnotations('node-b', { [`${P}/backend-data`]: '{oops' });
    await expectNext([a]);
    fake.setAnnotations('node-b', { [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${MAC_B}"}` });
    await expectNext([a, { ...b, backendData: { VNI: 1, VtepMAC: MAC_B } }]);

    expect(count(fake, 'list')).toBe(1);
    expect(calls.every((set) => set.length > 0)).toBe(true);
  });

  it('re-lists and converges after dropped watches, 500s and 410 Gone, never emitting an empty set', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.1.0/24', flannelAnnotations('192.168.50.1', MAC_A));
    fake.addNode('node-b', '10.244.2.0/24', flannelAnnotations('192.168.50.2', MAC_B));
    const logs = captureLogs();
    const { calls } = watch(newManager(fake, {}, logs));
    await waitFor('watch open', () => fake.openWatches === 1 && calls.length === 1);
    const converged = (names: string[]) => () => {
      const last = calls.at(-1);
      return last && JSON.stringify(Object.keys(byName(last)).sort()) === JSON.stringify(names) && fake.openWatches === 1;
    };

    // Graceful close (the API server's watch timeout): the watch resumes where it ended, without a re-list.
    let lists = count(fake, 'list');
    const watches = count(fake, 'watch');
    expect(fake.closeWatches('graceful')).toBe(1);
    fake.addNode('node-c', '10.244.3.0/24', flannelAnnotations('192.168.50.3', MAC_C));
    await waitFor('converged after graceful close', converged(['node-a', 'node-b', 'node-c']));
    expect(count(fake, 'list')).toBe(lists);
    expect(count(fake, 'watch')).toBe(watches + 1);

    // Abrupt close, then the API server fails every request for a while.
    lists = count(fake, 'list');
    fake.failNextRequests(6, 500);
    fake.closeWatches('abrupt');
    fake.deleteNode('node-b');
    await waitFor('converged after 500s', converged(['node-a', 'node-c']));
    expect(fake.requests.filter((r) => r.status === 500)).toHaveLength(6);
    expect(count(fake, 'list')).toBeGreaterThan(lists + 1);
    expect(logs.lines.join('')).toContain('keeping the last known leases');

    // The watch itself is refused with 500, and then answered with 410 Gone.
    fake.failNextRequests(2, 500, (r) => r.verb === 'watch');
    fake.expireNextWatches(1);
    fake.closeWatches();
    fake.setAnnotations('node-c', { [`${P}/public-ip`]: '192.168.50.33' });
    await waitFor('converged after failed watches', () => calls.at(-1)?.find((l) => l.publicIP === '192.168.50.33') && fake.openWatches === 1);
    expect(fake.requests.filter((r) => r.verb === 'watch' && r.status === 500)).toHaveLength(2);

    // Everything disappearing during errors must never reach the backend as "no nodes".
    expect(calls.every((set) => set.length > 0)).toBe(true);
  });

  it('a periodic resync picks up a change whose watch event was lost', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.1.0/24', flannelAnnotations('192.168.50.1', MAC_A));
    fake.addNode('node-b', '10.244.2.0/24', flannelAnnotations('192.168.50.2', MAC_B));
    const { calls } = watch(newManager(fake, { resyncSeconds: 2 }));
    await waitFor('watch open', () => fake.openWatches === 1);
    fake.setAnnotations('node-b', { [`${P}/public-ip`]: '192.168.50.99' }, { notify: false });
    await new Promise((r) => setTimeout(r, 300));
    expect(byName(calls.at(-1)!)['node-b']!.publicIP).toBe('192.168.50.2');
    await waitFor('resync', () => byName(calls.at(-1)!)['node-b']!.publicIP === '192.168.50.99', 5000);
    expect(count(fake, 'list')).toBeGreaterThanOrEqual(2);
  });

  it('abandons a list stalled mid-body at its deadline and retries, even after a garbage collection', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.1.0/24', flannelAnnotations('192.168.50.1', MAC_A));
    fake.addNode('node-b', '10.244.2.0/24', flannelAnnotations('192.168.50.2', MAC_B));
    // The first two lists get headers and the start of the body, then nothing (a proxy cutting the answer short).
    fake.stallNextRequests(2, (r) => r.verb === 'list');
    const logs = captureLogs();
    const { calls } = watch(newManager(fake, { listTimeoutMs: 400 }, logs));
    for (let n = 1; n <= 2; n++) {
      await waitFor(`stalled list ${n}`, () => count(fake, 'list') >= n);
      collectGarbage();
    }
    await waitFor('leases after the stalled lists', () => calls.length === 1 && fake.openWatches === 1, 10_000);
    expect(Object.keys(byName(calls[0]!)).sort()).toEqual(['node-a', 'node-b']);
    expect(count(fake, 'list')).toBe(3);
    expect(logs.lines.filter((l) => l.includes('listing Nodes failed'))).toHaveLength(2);
  });

  it('the periodic resync still comes after a garbage collection', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.1.0/24', flannelAnnotations('192.168.50.1', MAC_A));
    const { calls } = watch(newManager(fake, { resyncSeconds: 1 }));
    await waitFor('watch open', () => fake.openWatches === 1 && calls.length === 1);
    collectGarbage();
    // Jittered to 0.8-1.2 s.
    await waitFor('the resync list', () => count(fake, 'list') >= 2, 5000);
  });

  it('resolves once aborted or closed, and stops talking to the API', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.1.0/24', flannelAnnotations('192.168.50.1', MAC_A));
    const m = newManager(fake);
    const { stop, calls } = watch(m);
    await waitFor('watch open', () => fake.openWatches === 1 && calls.length === 1);
    await stop();
    await waitFor('watch closed', () => fake.openWatches === 0);

    const m2 = newManager(fake);
    fake.failNextRequests(1000, 500);
    const done = m2.watchLeases(() => undefined, new AbortController().signal);
    await waitFor('some failures', () => fake.requests.filter((r) => r.status === 500).length >= 2);
    await m2.close();
    await done;
    const n = fake.requests.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(fake.requests.length).toBe(n);
  });
});

describe('credentials', () => {
  const token = 'tsf-test-token-3f9a61c2d47e';

  function kubeconfig(server: string, tok: string): string {
    const file = join(dir, `kubeconfig-${Math.random().toString(36).slice(2)}`);
    writeFileSync(
      file,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        `- name: fake\n  cluster:\n    server: ${server}`,
        'users:',
        `- name: flannel\n  user:\n    token: ${tok}`,
        'contexts:',
        '- name: fake\n  context:\n    cluster: fake\n    user: flannel',
        'current-context: fake',
        '',
      ].join('\n'),
    );
    return file;
  }

  it('sends the bearer token from a kubeconfig but never logs it', async () => {
    const fake = await startFake({ token });
    fake.addNode('node-a', '10.244.1.0/24');
    fake.addNode('node-b', '10.244.2.0/24', flannelAnnotations('192.168.50.2', MAC_B));
    const logs = captureLogs();
    const file = kubeconfig(fake.url, token);
    const m = new KubeSubnetManager({ nodeName: 'node-a', netConfPath: netConf, kubeconfig: file, backoff: { initialMs: 20, maxMs: 100 }, logger: logs.logger });
    cleanups.push(() => m.close());

    fake.failNextRequests(2, 500);
    await m.acquireLease(attrsA);
    const { calls } = watch(m);
    await waitFor('watch open', () => fake.openWatches === 1 && calls.length >= 1);
    fake.failNextRequests(2, 503);
    fake.closeWatches('abrupt');
    await waitFor('recovered', () => fake.openWatches === 1 && fake.requests.filter((r) => r.status === 503).length === 2);
    expect(calls.at(-1)!.map((l) => l.nodeName)).toEqual(['node-a', 'node-b']);

    // The token really was used, on every kind of request ...
    const verbs = new Set(fake.requests.filter((r) => r.authorization === `Bearer ${token}`).map((r) => r.verb));
    expect([...verbs].sort()).toEqual(['get', 'list', 'patch', 'watch']);
    expect(fake.requests.every((r) => r.authorization === `Bearer ${token}`)).toBe(true);
    // ... and no log line carries it, or any Authorization header.
    const text = logs.lines.join('');
    expect(logs.lines.length).toBeGreaterThan(5);
    expect(text).toContain('retrying');
    expect(text).not.toContain(token);
    expect(text.toLowerCase()).not.toContain('authorization');
    expect(text.toLowerCase()).not.toContain('bearer');
  });

  it('a wrong token fails fast with a message that holds no token', async () => {
    const fake = await startFake({ token });
    fake.addNode('node-a', '10.244.1.0/24');
    const logs = captureLogs();
    const wrong = 'tsf-wrong-token-77e1a0';
    const m = new KubeSubnetManager({ nodeName: 'node-a', netConfPath: netConf, kubeconfig: kubeconfig(fake.url, wrong), logger: logs.logger });
    cleanups.push(() => m.close());
    const err = await m.acquireLease(attrsA).then(() => undefined, (e: unknown) => e as Error);
    expect(err).toBeInstanceOf(KubeSubnetError);
    expect(err!.message).toMatch(/HTTP 401/);
    expect(fake.requests).toHaveLength(1);
    expect(`${err!.message}${err!.stack}${logs.lines.join('')}`).not.toContain(wrong);
  });

  it('a broken kubeconfig is reported without its contents', () => {
    const file = join(dir, 'broken-kubeconfig');
    writeFileSync(file, `users:\n- name: x\n  user:\n    token: ${token}\n   bad: [indent\n`);
    const err = (() => {
      try {
        new KubeSubnetManager({ nodeName: 'n', kubeconfig: file, logger: captureLogs().logger });
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(KubeSubnetError);
    expect(err!.message).toContain(file);
    expect(err!.message).not.toContain(token);
  });
});

describe('API surface', () => {
  it('every request made in this file is one KUBE_API_CALLS declares, and each declared call is used', async () => {
    // A full cycle of its own, so this holds even when run alone.
    const fake = await startFake();
    fake.addNode('node-a', '10.244.1.0/24');
    const m = newManager(fake);
    await m.acquireLease(attrsA);
    const { calls, stop } = watch(m);
    await waitFor('first callback', () => calls.length === 1);
    await stop();
    const requests = [...allRequests, ...fake.requests];

    const allowed = new Set(KUBE_API_CALLS.map((c) => `${c.verb} ${c.resource}`));
    const made = new Set(requests.map((r) => `${r.verb} ${r.resource}`));
    expect([...made].filter((c) => !allowed.has(c))).toEqual([]);
    expect([...allowed].sort()).toEqual([...made].sort());
    expect(made.has('patch nodes')).toBe(false);
  });
});
