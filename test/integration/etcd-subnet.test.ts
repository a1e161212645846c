// The etcd subnet manager against a real etcd (Debian's etcd-server).
import { Writable } from 'node:stream';
import { describe, expect, it, onTestFailed } from 'vitest';
import { Etcd3 } from 'etcd3';
import pino from 'pino';
import { ConfigError } from '../../src/daemon/config.js';
import { SubnetError } from '../../src/daemon/subnet/etcd.js';
import { inRange } from '../../src/daemon/subnet/allocate.js';
import type { Lease, LeaseAttrs } from '../../src/daemon/types.js';
import { requireOrSkip } from '../helpers/require.js';
import { ETCD_BIN, haveEtcd, startTcpProxy } from '../helpers/etcd.js';
import { useEtcdSubnetSuite } from '../helpers/etcd-suite.js';
import { pollFor as waitFor } from '../helpers/eventually.js';

interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

function captureLogger(): { logger: pino.Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  // The manager's own account of what happened is the best clue when a test fails.
  onTestFailed(() => {
    for (const l of lines) process.stderr.write(`${JSON.stringify(l)}\n`);
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

const attrsFor = (i: number, mac = `0a:00:00:00:00:${i.toString(16).padStart(2, '0')}`): LeaseAttrs => ({
  publicIP: `198.51.100.${i}`,
  backendType: 'vxlan',
  backendData: { VNI: 1, VtepMAC: mac },
});

const rawValue = (ip: string, mac: string) =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });

describe.skipIf(requireOrSkip('etcd subnet manager', { [`etcd (${ETCD_BIN})`]: haveEtcd }))('etcd subnet manager (real etcd)', () => {
  const suite = useEtcdSubnetSuite('tsf-test');
  const { network, manager } = suite;

  async function storedValue(prefix: string, subnet: string): Promise<Record<string, unknown> | null> {
    const text = await suite.admin.get(`${prefix}/subnets/${subnet.replace('/', '-')}`).string();
    return text === null ? null : (JSON.parse(text) as Record<string, unknown>);
  }

  it('reads net-conf.json from <prefix>/config', async () => {
    const prefix = await network({ Network: '10.40.0.0/16', Backend: { Type: 'vxlan', VNI: 7 } });
    const conf = await manager({ prefix }).getNetworkConfig();
    expect(conf).toMatchObject({ network: '10.40.0.0/16', subnetLen: 24, subnetMin: '10.40.1.0', subnetMax: '10.40.255.0' });
    expect(conf.backend).toMatchObject({ type: 'vxlan', vni: 7, port: 8472 });

    const missing = await network(undefined);
    await expect(manager({ prefix: missing }).getNetworkConfig()).rejects.toThrow(SubnetError);
    const broken = await network({ Network: '10.40.0.0/16', SubnetLen: 40 });
    await expect(manager({ prefix: broken }).getNetworkConfig()).rejects.toThrow(ConfigError);
    // A trailing slash on the prefix means the same place.
    expect((await manager({ prefix: `${prefix}/` }).getNetworkConfig()).network).toBe('10.40.0.0/16');
  });

  it('gives 10 agents starting at once 10 distinct subnets inside SubnetMin..SubnetMax', async () => {
    const config = { Network: '10.41.0.0/16', SubnetMin: '10.41.3.0', SubnetMax: '10.41.14.0' };
    const prefix = await network(config);
    const leases = await Promise.all(Array.from({ length: 10 }, (_, i) => manager({ prefix, leaseTtlSeconds: 30 }).acquireLease(attrsFor(i + 1))));
    const subnets = leases.map((l) => l.subnet);
    expect(new Set(subnets).size).toBe(10);
    const range = { network: '10.41.0.0/16', subnetLen: 24, subnetMin: '10.41.3.0', subnetMax: '10.41.14.0' };
    for (const s of subnets) expect(inRange(range, s), s).toBe(true);

    // What etcd holds matches, in flannel's format, on a lease with our TTL.
    const stored = await suite.admin.getAll().prefix(`${prefix}/subnets/`).exec();
    expect(stored.kvs).toHaveLength(10);
    for (const [i, lease] of leases.entries()) {
      expect(lease.publicIP).toBe(`198.51.100.${i + 1}`);
      expect(await storedValue(prefix, lease.subnet)).toEqual(JSON.parse(rawValue(`198.51.100.${i + 1}`, attrsFor(i + 1).backendData.VtepMAC!)));
      expect(lease.expiration!.getTime()).toBeGreaterThan(Date.now() + 20_000);
    }
    const kv = stored.kvs[0]!;
    expect(kv.lease).not.toBe('0');
    const ttl = await suite.admin.leaseClient.leaseTimeToLive({ ID: kv.lease });
    expect(Number(ttl.grantedTTL)).toBe(30);

    // Two more fill the range; the next one is told it is out of subnets.
    await manager({ prefix }).acquireLease(attrsFor(11));
    await manager({ prefix }).acquireLease(attrsFor(12));
    await expect(manager({ prefix }).acquireLease(attrsFor(13))).rejects.toThrow(/out of subnets/);
  });

  it('survives agents that all pick the same candidate first', async () => {
    const prefix = await network({ Network: '10.42.0.0/16' });
    // random() = 0 makes every agent want the lowest free subnet: all but one lose each race.
    const leases = await Promise.all(Array.from({ length: 6 }, (_, i) => manager({ prefix, random: () => 0 }).acquireLease(attrsFor(i + 1))));
    expect(leases.map((l) => l.subnet).sort()).toEqual(['10.42.1.0/24', '10.42.2.0/24', '10.42.3.0/24', '10.42.4.0/24', '10.42.5.0/24', '10.42.6.0/24']);
  });

  it('gives a restarted agent with the same PublicIP its old subnet, with updated attributes', async () => {
    const prefix = await network({ Network: '10.43.0.0/16' });
    const first = manager({ prefix, leaseTtlSeconds: 60 });
    const before = await first.acquireLease(attrsFor(1, '0a:00:00:00:00:aa'));
    const other = await manager({ prefix }).acquireLease(attrsFor(2));
    await first.close();
    // flannel leaves the key in place on shutdown.
    expect(await storedValue(prefix, before.subnet)).not.toBeNull();

    const again = await manager({ prefix, leaseTtlSeconds: 60 }).acquireLease(attrsFor(1, '0a:00:00:00:00:bb'));
    expect(again.subnet).toBe(before.subnet);
    expect(again.backendData.VtepMAC).toBe('0a:00:00:00:00:bb');
    expect((await storedValue(prefix, before.subnet))?.BackendData).toEqual({ VNI: 1, VtepMAC: '0a:00:00:00:00:bb' });
    expect(again.subnet).not.toBe(other.subnet);

    // A node whose key is gone gets back the subnet it remembers (subnet.env) when it is free...
    const remembered = await manager({ prefix, previousSubnet: '10.43.77.0/24' }).acquireLease(attrsFor(3));
    expect(remembered.subnet).toBe('10.43.77.0/24');
    // ...but not one somebody else holds.
    const clash = await manager({ prefix, previousSubnet: before.subnet }).acquireLease(attrsFor(4));
    expect([before.subnet, other.subnet, remembered.subnet]).not.toContain(clash.subnet);
  });

  it('finds its lease under an older public IP by the previous subnet and VTEP MAC, and updates it in place', async () => {
    const prefix = await network({ Network: '10.50.0.0/16' });
    const mac = '0a:00:00:00:00:c1';
    const old = await manager({ prefix, leaseTtlSeconds: 60 }).acquireLease(attrsFor(1, mac));
    const moved = { ...attrsFor(21, mac) };
    const m = manager({ prefix, leaseTtlSeconds: 60 });
    const again = await m.acquireLease(moved, undefined, { subnet: old.subnet });
    expect(again.subnet).toBe(old.subnet);
    const all = await suite.admin.getAll().prefix(`${prefix}/subnets/`).strings();
    expect(Object.values(all)).toEqual([rawValue('198.51.100.21', mac)]);

    // The same MAC without the subnet.env to back it is not enough: another subnet is taken.
    const prefix2 = await network({ Network: '10.51.0.0/16' });
    const first = await manager({ prefix: prefix2, leaseTtlSeconds: 60 }).acquireLease(attrsFor(2, mac));
    // (a subnet the first node's random one is not)
    const wanted = first.subnet === '10.51.250.0/24' ? '10.51.251.0/24' : '10.51.250.0/24';
    const stranger = await manager({ prefix: prefix2 }).acquireLease(attrsFor(22, mac), undefined, { subnet: wanted });
    expect(stranger.subnet).toBe(wanted);
    expect(await storedValue(prefix2, first.subnet)).toEqual(JSON.parse(rawValue('198.51.100.2', mac)));
  });

  it('finds its WireGuard lease under an older public IP by the previous subnet and public key, and updates it in place', async () => {
    const prefix = await network({ Network: '10.57.0.0/16', Backend: { Type: 'wireguard' } });
    const wg = (i: number, key: string): LeaseAttrs => ({ publicIP: `198.51.100.${i}`, backendType: 'wireguard', backendData: { PublicKey: key } });
    const key = 'kJmA0e6cXxS1y0bq3m1rQb0oO3WQ6xgqg1q2dM3YV2o=';
    const old = await manager({ prefix, leaseTtlSeconds: 60 }).acquireLease(wg(1, key));
    const again = await manager({ prefix, leaseTtlSeconds: 60 }).acquireLease(wg(31, key), undefined, { subnet: old.subnet });
    expect(again.subnet).toBe(old.subnet);
    const all = await suite.admin.getAll().prefix(`${prefix}/subnets/`).strings();
    expect(Object.values(all).map((v) => JSON.parse(v) as unknown)).toEqual([
      { PublicIP: '198.51.100.31', PublicIPv6: null, BackendType: 'wireguard', BackendData: { PublicKey: key } },
    ]);
    // Another key on that subnet is another node's lease: it is left alone.
    const stranger = await manager({ prefix }).acquireLease(wg(32, 'OtherKeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='), undefined, { subnet: old.subnet });
    expect(stranger.subnet).not.toBe(old.subnet);
    expect((await storedValue(prefix, old.subnet))?.PublicIP).toBe('198.51.100.31');
  });

  it('asks for the subnet passed at acquire time (subnet.env), logging that it reuses it', async () => {
    const prefix = await network({ Network: '10.52.0.0/16' });
    const { logger, lines } = captureLogger();
    const lease = await manager({ prefix, logger }).acquireLease(attrsFor(5), undefined, { subnet: '10.52.33.0/24' });
    expect(lease.subnet).toBe('10.52.33.0/24');
    expect(lines.some((l) => l.msg === 'found previously leased subnet, reusing')).toBe(true);
  });

  it('re-registers at once when its key disappears, long before the next renewal', async () => {
    const prefix = await network({ Network: '10.53.0.0/16' });
    // A 24 h TTL renews once a minute: only the watch can bring the key back quickly.
    const m = manager({ prefix });
    const lease = await m.acquireLease(attrsFor(6));
    const stop = new AbortController();
    const watching = m.watchLeases(() => undefined, stop.signal);
    try {
      const key = `${prefix}/subnets/${lease.subnet.replace('/', '-')}`;
      await new Promise((r) => setTimeout(r, 300)); // the watch is listening
      const t0 = Date.now();
      await suite.admin.delete().key(key);
      await waitFor('the key back', async () => (await suite.admin.get(key).string()) !== null, 5000);
      const ms = Date.now() - t0;
      expect(ms).toBeLessThan(2000);
      const kv = (await suite.admin.get(key).exec()).kvs[0]!;
      expect(kv.lease).not.toBe('0');
    } finally {
      stop.abort();
      await watching;
    }
  });

  it('keeps an operator reservation (a key without TTL) without a TTL', async () => {
    const prefix = await network({ Network: '10.44.0.0/16' });
    await suite.admin.put(`${prefix}/subnets/10.44.200.0-24`).value(rawValue('198.51.100.9', '0a:00:00:00:00:01'));
    const lease = await manager({ prefix, leaseTtlSeconds: 5 }).acquireLease(attrsFor(9));
    expect(lease.subnet).toBe('10.44.200.0/24');
    expect(lease.expiration).toBeUndefined();
    const kv = (await suite.admin.get(`${prefix}/subnets/10.44.200.0-24`).exec()).kvs[0]!;
    expect(kv.lease).toBe('0');
    expect(JSON.parse(kv.value.toString()).BackendData.VtepMAC).toBe(attrsFor(9).backendData.VtepMAC);
  });

  it('reports additions, attribute changes, deletions and TTL expiry to watchLeases', async () => {
    const prefix = await network({ Network: '10.45.0.0/16' });
    // Our own subnet is fixed (subnet.env's), apart from the ones added by hand below (a random one was 1 in 250).
    const own = await manager({ prefix }).acquireLease(attrsFor(1), undefined, { subnet: '10.45.1.0/24' });
    const seen: Lease[][] = [];
    const watcher = manager({ prefix });
    const abort = new AbortController();
    const watching = watcher.watchLeases((l) => seen.push(l), abort.signal);
    const last = () => seen.at(-1) ?? [];
    const subnetsNow = () => last().map((l) => l.subnet);

    await waitFor('first list', () => seen.length > 0);
    expect(subnetsNow()).toEqual([own.subnet]);
    expect(last()[0]).toMatchObject({ publicIP: '198.51.100.1', backendType: 'vxlan', backendData: attrsFor(1).backendData });

    // addition by hand, in flannel's format
    const key = `${prefix}/subnets/10.45.100.0-24`;
    await suite.admin.put(key).value(rawValue('198.51.100.50', '0a:00:00:00:00:50'));
    await waitFor('addition', () => subnetsNow().includes('10.45.100.0/24'));
    // junk under the prefix is not a lease
    await suite.admin.put(`${prefix}/subnets/not-a-subnet`).value('{}');
    await suite.admin.put(`${prefix}/subnets/10.45.101.0-24`).value('not json');

    // attribute change
    await suite.admin.put(key).value(rawValue('198.51.100.50', '0a:00:00:00:00:51'));
    await waitFor('attribute change', () => last().find((l) => l.subnet === '10.45.100.0/24')?.backendData.VtepMAC === '0a:00:00:00:00:51');
    expect(subnetsNow()).toEqual([own.subnet, '10.45.100.0/24']);

    // deletion by hand
    await suite.admin.delete().key(key);
    await waitFor('deletion', () => !subnetsNow().includes('10.45.100.0/24'));

    // an agent with a 3 s TTL that goes away: its key expires, and the watch sees it
    const shortLived = manager({ prefix, leaseTtlSeconds: 3 });
    const gone = await shortLived.acquireLease(attrsFor(2));
    await waitFor('short-lived lease', () => subnetsNow().includes(gone.subnet));
    const closedAt = Date.now();
    await shortLived.close();
    await waitFor('TTL expiry', () => !subnetsNow().includes(gone.subnet), 10_000);
    expect(Date.now() - closedAt).toBeGreaterThan(1000);

    expect(subnetsNow()).toEqual([own.subnet]);
    expect(seen.every((set) => set.length > 0)).toBe(true);
    // level-triggered, but no repeats of an unchanged set
    for (let i = 1; i < seen.length; i++) expect(JSON.stringify(seen[i])).not.toBe(JSON.stringify(seen[i - 1]));
    abort.abort();
    await watching;
  });

  it('waits for an unreachable etcd at start-up, and gives up only when told to', async () => {
    const prefix = await network({ Network: '10.48.0.0/16' });
    const proxy = await startTcpProxy(suite.etcd.clientPort);
    suite.closeAfterEach(proxy);
    proxy.cut();
    const { logger, lines } = captureLogger();
    const m = manager({ prefix, endpoints: [proxy.endpoint], logger });
    const seen: Lease[][] = [];
    const abort = new AbortController();
    const watching = m.watchLeases((l) => seen.push(l), abort.signal);
    let acquired: Lease | undefined;
    const acquiring = m.acquireLease(attrsFor(1)).then((l) => (acquired = l));
    await waitFor('a retry warning', () => lines.some((l) => l.level === 40 && /cannot acquire subnet lease/.test(l.msg)));
    await new Promise((r) => setTimeout(r, 1000));
    expect(acquired).toBeUndefined();
    expect(seen).toEqual([]);

    proxy.restore();
    await acquiring;
    expect(acquired?.subnet).toMatch(/^10\.48\.\d+\.0\/24$/);
    await waitFor('watch after etcd came back', () => seen.at(-1)?.some((l) => l.subnet === acquired!.subnet));
    abort.abort();
    await watching;

    // An aborted acquisition stops retrying and rejects.
    proxy.cut();
    const giveUp = new AbortController();
    const pending = manager({ prefix, endpoints: [proxy.endpoint] }).acquireLease(attrsFor(2), giveUp.signal);
    setTimeout(() => giveUp.abort(new Error('agent stopping')), 300);
    await expect(pending).rejects.toThrow('agent stopping');
  });

  it('rides out an etcd outage longer than the TTL: logs it, keeps its subnet, watch never goes empty', async () => {
    const prefix = await network({ Network: '10.46.0.0/16' });
    // A reservation keeps the set non-empty even if our own key came and went.
    await suite.admin.put(`${prefix}/subnets/10.46.250.0-24`).value(rawValue('198.51.100.99', '0a:00:00:00:00:99'));
    const { logger, lines } = captureLogger();
    const m = manager({ prefix, leaseTtlSeconds: 3, logger });
    const lease = await m.acquireLease(attrsFor(1));
    const seen: Lease[][] = [];
    const abort = new AbortController();
    const watching = manager({ prefix }).watchLeases((l) => seen.push(l), abort.signal);
    await waitFor('first list', () => seen.at(-1)?.length === 2);

    await suite.etcd.halt();
    await new Promise((r) => setTimeout(r, 5000));
    expect(lines.some((l) => l.level === 40 && /cannot renew subnet lease/.test(l.msg))).toBe(true);
    await suite.etcd.restart();

    await waitFor('renewal after the outage', () => lines.some((l) => /etcd reachable again/.test(l.msg)), 15_000);
    const check = new Etcd3({ hosts: suite.etcd.endpoint });
    try {
      await waitFor('our key back', async () => {
        const v = await check.get(`${prefix}/subnets/${lease.subnet.replace('/', '-')}`).string();
        return v !== null && JSON.parse(v).PublicIP === '198.51.100.1';
      });
    } finally {
      check.close();
    }
    await waitFor('watch converged', () => {
      const subnets = seen.at(-1)?.map((l) => l.subnet) ?? [];
      return subnets.includes(lease.subnet) && subnets.includes('10.46.250.0/24');
    });
    expect(seen.every((set) => set.length > 0)).toBe(true);
    abort.abort();
    await watching;
  });

  it('re-acquires the same subnet after a partition outlived the TTL, and reports a subnet taken meanwhile', async () => {
    const prefix = await network({ Network: '10.47.0.0/16' });
    const proxy = await startTcpProxy(suite.etcd.clientPort);
    suite.closeAfterEach(proxy);
    const { logger, lines } = captureLogger();
    const lost: string[] = [];
    const m = manager({ prefix, endpoints: [proxy.endpoint], leaseTtlSeconds: 2, logger, onLeaseLost: (why) => lost.push(why) });
    const lease = await m.acquireLease(attrsFor(1));
    const key = `${prefix}/subnets/${lease.subnet.replace('/', '-')}`;

    // Cut off while etcd keeps running: the key really expires.
    proxy.cut();
    await waitFor('key expiry', async () => (await suite.admin.get(key).string()) === null, 10_000);
    expect(lines.some((l) => /cannot renew subnet lease/.test(l.msg))).toBe(true);
    proxy.restore();
    await waitFor('re-acquired', () => lines.some((l) => /re-acquired the same subnet/.test(l.msg)), 15_000);
    const back = JSON.parse((await suite.admin.get(key).string())!);
    expect(back.PublicIP).toBe('198.51.100.1');
    expect(back.BackendData.VtepMAC).toBe(attrsFor(1).backendData.VtepMAC);

    // Cut off again, and this time another node claims the subnet after it expires.
    proxy.cut();
    await waitFor('key expiry', async () => (await suite.admin.get(key).string()) === null, 10_000);
    await suite.admin.put(key).value(rawValue('198.51.100.77', '0a:00:00:00:00:77'));
    proxy.restore();
    await waitFor('lease lost', () => lost.length > 0, 15_000);
    expect(lost[0]).toMatch(/now belongs to 198\.51\.100\.77/);
    expect(JSON.parse((await suite.admin.get(key).string())!).PublicIP).toBe('198.51.100.77');
  });
});
