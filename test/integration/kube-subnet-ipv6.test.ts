// The Kubernetes subnet manager with dual-stack and IPv6-only clusters,
// against the in-memory API server: spec.podCIDRs of both families and
// flannel's IPv6 annotations (backend-v6-data, public-ipv6,
// public-ipv6-overwrite), read and written with flannel's names.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FakeKube } from '../helpers/fake-kube.js';
import { collectLeases } from '../helpers/lease-watch.js';
import { pollFor } from '../helpers/eventually.js';
import { KubeSubnetError, KubeSubnetManager } from '../../src/daemon/subnet/kube.js';
import type { Lease, LeaseAttrs } from '../../src/daemon/types.js';

const P = 'flannel.alpha.coreos.com';
let dir: string;
const cleanups: Array<() => Promise<void> | void> = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tsf-kube-v6-'));
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

let confCount = 0;
function netConf(conf: object): string {
  const path = join(dir, `net-conf-${++confCount}.json`);
  writeFileSync(path, JSON.stringify({ Backend: { Type: 'vxlan' }, ...conf }));
  return path;
}

const DUAL = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' };
const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10:244::/56' };

async function startFake(): Promise<FakeKube> {
  const fake = await FakeKube.start();
  cleanups.push(() => fake.close());
  return fake;
}

function manager(fake: FakeKube, conf: object, nodeName = 'node-a'): KubeSubnetManager {
  const m = new KubeSubnetManager({
    nodeName,
    netConfPath: netConf(conf),
    apiServerUrl: fake.url,
    backoff: { initialMs: 20, maxMs: 200 },
    logger: pino({ level: 'silent' }),
  });
  cleanups.push(() => m.close());
  return m;
}

const dualAttrs: LeaseAttrs = {
  publicIP: '192.168.50.1',
  publicIPv6: 'fd50::1',
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:0a' },
  backendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:06:0a' },
};

const v6Attrs: LeaseAttrs = {
  publicIP: '',
  publicIPv6: 'fd50::1',
  backendType: 'vxlan',
  backendData: {},
  backendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:06:0a' },
};

/** What a dual-stack flanneld node carries (pkg/subnet/kube AcquireLease). */
function flannelDualAnnotations(n: number): Record<string, string> {
  return {
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"0a:00:00:00:00:0${n}"}`,
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/backend-v6-data`]: `{"VNI":1,"VtepMAC":"0a:00:00:00:06:0${n}"}`,
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ip`]: `192.168.50.${n}`,
    [`${P}/public-ipv6`]: `fd50::${n}`,
  };
}

// The in-memory API server answers at once: poll every 10 ms, for 10 s.
const waitFor = <T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> => pollFor(what, probe, timeoutMs, 10);

const watch = (m: KubeSubnetManager): Lease[][] => collectLeases(m, (fn) => cleanups.push(fn));

describe('kube subnet manager, dual-stack', () => {
  it("publishes flannel's IPv4 and IPv6 annotations and takes both pod CIDRs from spec.podCIDRs", async () => {
    const fake = await startFake();
    fake.addNode('node-a', ['10.244.7.0/24', 'fd00:10:244:7::/64']);
    const lease = await manager(fake, DUAL).acquireLease(dualAttrs);
    expect(lease).toEqual({
      nodeName: 'node-a',
      subnet: '10.244.7.0/24',
      ipv6Subnet: 'fd00:10:244:7::/64',
      publicIP: '192.168.50.1',
      publicIPv6: 'fd50::1',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:0a' },
      backendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:06:0a' },
    });
    expect(fake.getNode('node-a')!.metadata.annotations).toEqual({
      [`${P}/backend-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:0a"}',
      [`${P}/backend-type`]: 'vxlan',
      [`${P}/backend-v6-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:06:0a"}',
      [`${P}/kube-subnet-manager`]: 'true',
      [`${P}/public-ip`]: '192.168.50.1',
      [`${P}/public-ipv6`]: 'fd50::1',
    });
  });

  it('reads IPv6-first podCIDRs too (an IPv6-primary cluster)', async () => {
    const fake = await startFake();
    fake.addNode('node-a', ['fd00:10:244:9::/64', '10.244.9.0/24']);
    const lease = await manager(fake, DUAL).acquireLease(dualAttrs);
    expect([lease.subnet, lease.ipv6Subnet]).toEqual(['10.244.9.0/24', 'fd00:10:244:9::/64']);
  });

  it('sees dual-stack flanneld nodes with every IPv6 field, and drops one whose IPv6 annotations are garbage', async () => {
    const fake = await startFake();
    fake.addNode('node-a', ['10.244.1.0/24', 'fd00:10:244:1::/64']);
    fake.addNode('node-b', ['10.244.2.0/24', 'fd00:10:244:2::/64'], flannelDualAnnotations(2));
    const m = manager(fake, DUAL);
    await m.acquireLease(dualAttrs);
    const calls = watch(m);
    const first = await waitFor('both nodes', () => calls.find((c) => c.length === 2));
    expect(first.find((l) => l.nodeName === 'node-b')).toEqual({
      nodeName: 'node-b',
      subnet: '10.244.2.0/24',
      ipv6Subnet: 'fd00:10:244:2::/64',
      publicIP: '192.168.50.2',
      publicIPv6: 'fd50::2',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:02' },
      backendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:06:02' },
    });
    // A change of node-b's IPv6 address alone reaches the watcher.
    fake.setAnnotations('node-b', { [`${P}/public-ipv6`]: 'fd50::22' });
    await waitFor('the new IPv6 address', () => calls.at(-1)?.find((l) => l.nodeName === 'node-b')?.publicIPv6 === 'fd50::22');
    fake.setAnnotations('node-b', { [`${P}/public-ipv6`]: '192.168.50.2' });
    await waitFor('node-b dropped', () => calls.at(-1)?.length === 1);
    fake.setAnnotations('node-b', { [`${P}/public-ipv6`]: 'fd50::2', [`${P}/backend-v6-data`]: '{"VNI":1}' });
    await waitFor('node-b still dropped without an IPv6 VtepMAC', () => fake.getNode('node-b')!.metadata.annotations![`${P}/backend-v6-data`] === '{"VNI":1}');
    await new Promise((r) => setTimeout(r, 200));
    expect(calls.at(-1)!.map((l) => l.nodeName)).toEqual(['node-a']);
  });

  it('publishes public-ipv6-overwrite instead of the detected IPv6 address, as flannel does', async () => {
    const fake = await startFake();
    fake.addNode('node-a', ['10.244.7.0/24', 'fd00:10:244:7::/64'], { [`${P}/public-ipv6-overwrite`]: '2001:db8::7' });
    const lease = await manager(fake, DUAL).acquireLease(dualAttrs);
    expect(lease.publicIPv6).toBe('2001:db8::7');
    expect(fake.getNode('node-a')!.metadata.annotations![`${P}/public-ipv6`]).toBe('2001:db8::7');
  });

  it('refuses a node without an IPv6 pod CIDR, one outside IPv6Network, and a node with no IPv6 address, naming why', async () => {
    const fake = await startFake();
    fake.addNode('node-a', '10.244.7.0/24');
    await expect(manager(fake, DUAL).acquireLease(dualAttrs)).rejects.toThrow(/no IPv6 pod CIDR, but EnableIPv6 is true/);
    fake.setPodCIDR('node-a', ['10.244.7.0/24', 'fd00:99::/64']);
    await expect(manager(fake, DUAL).acquireLease(dualAttrs)).rejects.toThrow(/IPv6Network fd00:10:244::\/56 .* does not contain IPv6 pod CIDR fd00:99::\/64/);
    fake.setPodCIDR('node-a', ['10.244.7.0/24', 'fd00:10:244:7::/64']);
    const { publicIPv6: _drop, backendV6Data: _data, ...v4only } = dualAttrs;
    await expect(manager(fake, DUAL).acquireLease(v4only)).rejects.toThrow(KubeSubnetError);
    await expect(manager(fake, DUAL).acquireLease(v4only)).rejects.toThrow(/has no IPv6 address to publish/);
  });

  it('keeps an IPv4-only config blind to IPv6: the same lease and annotations as before', async () => {
    const fake = await startFake();
    fake.addNode('node-a', ['10.244.7.0/24', 'fd00:10:244:7::/64']);
    fake.addNode('node-b', ['10.244.2.0/24', 'fd00:10:244:2::/64'], flannelDualAnnotations(2));
    const { publicIPv6: _drop, backendV6Data: _data, ...v4only } = dualAttrs;
    const m = manager(fake, { Network: '10.244.0.0/16' });
    const lease = await m.acquireLease(v4only);
    expect(lease.ipv6Subnet).toBeUndefined();
    expect(Object.keys(fake.getNode('node-a')!.metadata.annotations!).sort()).toEqual(
      ['backend-data', 'backend-type', 'kube-subnet-manager', 'public-ip'].map((k) => `${P}/${k}`),
    );
    const calls = watch(m);
    const first = await waitFor('both nodes', () => calls.find((c) => c.length === 2));
    expect(first.find((l) => l.nodeName === 'node-b')).toEqual({
      nodeName: 'node-b',
      subnet: '10.244.2.0/24',
      publicIP: '192.168.50.2',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:02' },
    });
  });
});

describe('kube subnet manager, IPv6-only', () => {
  it('publishes only the IPv6 annotations and leases the IPv6 pod CIDR', async () => {
    const fake = await startFake();
    fake.addNode('node-a', 'fd00:10:244:3::/64');
    const lease = await manager(fake, V6ONLY).acquireLease(v6Attrs);
    expect(lease).toEqual({
      nodeName: 'node-a',
      subnet: '',
      ipv6Subnet: 'fd00:10:244:3::/64',
      publicIP: '',
      publicIPv6: 'fd50::1',
      backendType: 'vxlan',
      backendData: {},
      backendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:06:0a' },
    });
    expect(fake.getNode('node-a')!.metadata.annotations).toEqual({
      [`${P}/backend-type`]: 'vxlan',
      [`${P}/backend-v6-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:06:0a"}',
      [`${P}/kube-subnet-manager`]: 'true',
      [`${P}/public-ipv6`]: 'fd50::1',
    });
  });

  it('sees IPv6-only flanneld peers (no public-ip, no backend-data)', async () => {
    const fake = await startFake();
    fake.addNode('node-a', 'fd00:10:244:3::/64');
    fake.addNode('node-b', 'fd00:10:244:4::/64', {
      [`${P}/backend-type`]: 'vxlan',
      [`${P}/backend-v6-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:06:0b"}',
      [`${P}/kube-subnet-manager`]: 'true',
      [`${P}/public-ipv6`]: 'fd50::b',
    });
    const m = manager(fake, V6ONLY);
    await m.acquireLease(v6Attrs);
    const calls = watch(m);
    const first = await waitFor('both nodes', () => calls.find((c) => c.length === 2));
    expect(first.find((l) => l.nodeName === 'node-b')).toMatchObject({
      subnet: '',
      publicIP: '',
      ipv6Subnet: 'fd00:10:244:4::/64',
      publicIPv6: 'fd50::b',
      backendV6Data: { VNI: 1, VtepMAC: '0a:00:00:00:06:0b' },
    });
  });
});
