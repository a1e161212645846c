// The etcd subnet manager when its connection to etcd dies without a word:
// the etcd host lost power, or a NAT or load balancer in between forgot the
// flow. No FIN, no RST: only gRPC keepalive pings can tell such a connection
// from a quiet one, and the lease watch (a stream that only ever reads)
// would otherwise wait on it until TCP gives up, if ever.
import { describe, expect, it } from 'vitest';
import type { Lease, LeaseAttrs } from '../../src/daemon/types.js';
import { requireOrSkip } from '../helpers/require.js';
import { ETCD_BIN, haveEtcd, startTcpProxy } from '../helpers/etcd.js';
import { useEtcdSubnetSuite } from '../helpers/etcd-suite.js';
import { pollFor as waitFor } from '../helpers/eventually.js';

const attrs: LeaseAttrs = { publicIP: '198.51.100.1', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:01' } };
const rawValue = (ip: string, mac: string) =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });

describe.skipIf(requireOrSkip('etcd silent connection loss', { [`etcd (${ETCD_BIN})`]: haveEtcd }))('etcd subnet manager on a connection that dies silently', () => {
  const suite = useEtcdSubnetSuite('tsf-silent');

  it('notices a silently dead connection within keepalive time + timeout: the watch sees a new lease and renewal goes on', async () => {
    const prefix = await suite.network({ Network: '10.48.0.0/16' });
    const proxy = await startTcpProxy(suite.etcd.clientPort);
    suite.closeAfterEach(proxy);
    // etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
    const m = suite.manager({ prefix, endpoints: [proxy.endpoint], leaseTtlSeconds: 60, keepalive: { timeMs: 6000, timeoutMs: 3000 } });
    // Our own subnet is fixed (subnet.env's), apart from the one written by hand below (a random one was 1 in 250).
    const own = await m.acquireLease(attrs, undefined, { subnet: '10.48.1.0/24' });
    const seen: Lease[][] = [];
    const abort = new AbortController();
    const watching = m.watchLeases((l) => seen.push(l), abort.signal);
    await waitFor('first list', () => seen.length > 0);
    const before = proxy.accepted;

    proxy.stall();
    const stalledAt = Date.now();
    await suite.admin.put(`${prefix}/subnets/10.48.200.0-24`).value(rawValue('198.51.100.2', '0a:00:00:00:00:02'));
    await waitFor('the lease added after the stall', () => seen.at(-1)?.some((l) => l.subnet === '10.48.200.0/24') === true, 30_000);
    const noticedMs = Date.now() - stalledAt;
    // It came over a new connection, within one keepalive round and its timeout (plus re-list backoff and load).
    expect(proxy.accepted).toBeGreaterThan(before);
    expect(noticedMs).toBeLessThan(25_000);
    expect(seen.at(-1)!.map((l) => l.subnet)).toEqual([own.subnet, '10.48.200.0/24']);

    // Renewal goes on over the new connection: 30 s after the stall the key's
    // etcd lease has more than 30 s left (without a renewal since, it would have less).
    const key = `${prefix}/subnets/${own.subnet.replace('/', '-')}`;
    await new Promise((r) => setTimeout(r, Math.max(0, stalledAt + 30_000 - Date.now())));
    const id = (await suite.admin.get(key).exec()).kvs[0]?.lease;
    expect(id, 'the key is still there').toBeDefined();
    const left = Number((await suite.admin.leaseClient.leaseTimeToLive({ ID: id! })).TTL);
    expect(left).toBeGreaterThan(30);
    abort.abort();
    await watching;
  }, 60_000);
});
