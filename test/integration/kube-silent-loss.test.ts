// The Kubernetes subnet manager when its watch connection dies without a
// word: a NAT entry dropped, the API server's host gone without a FIN or RST.
// A Node watch only ever reads, so nothing on it fails: without a liveness
// check it waits on the dead connection until the next full re-list (5 to 6
// minutes in production), and Nodes that joined, left or changed meanwhile
// are not programmed. kube-apiserver's watch cache sends a BOOKMARK about once
// a minute to a watch that allows them; the fake API server here does the
// same, faster, and a TCP proxy between it and the manager stops passing
// bytes on the open connection without closing it.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FakeKube } from '../helpers/fake-kube.js';
import { startTcpProxy, type TcpProxy } from '../helpers/etcd.js';
import { collectLeases } from '../helpers/lease-watch.js';
import { pollFor } from '../helpers/eventually.js';
import { KubeSubnetManager, type KubeSubnetManagerOptions } from '../../src/daemon/subnet/kube.js';
import type { Lease } from '../../src/daemon/types.js';

const P = 'flannel.alpha.coreos.com';
let dir: string;
let netConf: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-kube-silent-'));
  netConf = join(dir, 'net-conf.json');
  writeFileSync(netConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function annotations(ip: string, mac: string): Record<string, string> {
  return {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${mac}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: ip,
  };
}

/** A fake API server with two annotated Nodes, reached through a TCP proxy the test can stall. */
async function cluster(bookmarkEveryMs: number): Promise<{ fake: FakeKube; proxy: TcpProxy }> {
  const fake = await FakeKube.start({ bookmarkEveryMs });
  cleanups.push(() => fake.close());
  fake.addNode('node-a', '10.244.1.0/24', annotations('192.168.50.1', '0a:00:00:00:00:0a'));
  fake.addNode('node-b', '10.244.2.0/24', annotations('192.168.50.2', '0a:00:00:00:00:0b'));
  const proxy = await startTcpProxy(Number(new URL(fake.url).port));
  cleanups.push(() => proxy.close());
  return { fake, proxy };
}

function watch(proxy: TcpProxy, extra: Partial<KubeSubnetManagerOptions>): Lease[][] {
  const m = new KubeSubnetManager({
    nodeName: 'node-a',
    netConfPath: netConf,
    apiServerUrl: proxy.endpoint,
    // The full re-list must not be what finds the change: far beyond the test's length.
    resyncSeconds: 600,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: pino({ level: 'silent' }),
    ...extra,
  });
  cleanups.push(() => m.close());
  return collectLeases(m, (fn) => cleanups.push(fn));
}

const subnets = (calls: Lease[][]): string[] => (calls.at(-1) ?? []).map((l) => l.subnet).sort();

describe('kube subnet manager on a watch connection that dies silently', () => {
  it('notices a silent watch within the idle timeout and resumes it without a re-list: a Node added after the stall is delivered', async () => {
    const { fake, proxy } = await cluster(500);
    const calls = watch(proxy, { watchIdleTimeoutMs: 3000 });
    await pollFor('the first list', () => subnets(calls).length === 2);
    await pollFor('the watch open', () => fake.openWatches === 1);
    const lists = fake.count('list');
    const watches = fake.count('watch');
    const connections = proxy.accepted;

    proxy.stall();
    const stalledAt = Date.now();
    fake.addNode('node-c', '10.244.3.0/24', annotations('192.168.50.3', '0a:00:00:00:00:0c'));
    await pollFor('node-c delivered after the stall', () => subnets(calls).includes('10.244.3.0/24'), 30_000, 50);
    const noticedMs = Date.now() - stalledAt;
    // Within the idle timeout plus one bookmark period, with room for a loaded machine.
    expect(noticedMs).toBeLessThan(10_000);
    expect(subnets(calls)).toEqual(['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24']);
    // Over a new connection, by a watch resumed from the last resourceVersion: no re-list.
    expect(proxy.accepted).toBeGreaterThan(connections);
    expect(fake.count('watch')).toBe(watches + 1);
    expect(fake.count('list')).toBe(lists);
  }, 45_000);

  it('costs nothing while bookmarks arrive: a quiet but live watch is kept for many idle timeouts', async () => {
    const { fake, proxy } = await cluster(300);
    const calls = watch(proxy, { watchIdleTimeoutMs: 1200 });
    await pollFor('the first list', () => subnets(calls).length === 2);
    await pollFor('the watch open', () => fake.openWatches === 1);
    await new Promise((r) => setTimeout(r, 6000));
    expect(fake.count('watch')).toBe(1);
    expect(fake.count('list')).toBe(1);
    expect(proxy.accepted).toBe(2);
  }, 30_000);
});
