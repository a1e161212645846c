// The etcd subnet manager against a three-member etcd cluster, one member of
// which is cut off from the other two while the agent still reaches it. That
// member has no leader and no new writes: a lease watch left on it would see
// nothing while the rest of the cluster goes on. flanneld asks for its watch
// with WithRequireLeader, so the member ends it; so must we.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Etcd3 } from 'etcd3';
import pino from 'pino';
import { EtcdSubnetManager } from '../../src/daemon/subnet/etcd.js';
import type { Lease } from '../../src/daemon/types.js';
import { requireOrSkip } from '../helpers/require.js';
import { isRoot } from '../helpers/netns.js';
import { ETCD_BIN, haveEtcd } from '../helpers/etcd.js';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd-cluster.js';
import { pollFor as waitFor } from '../helpers/eventually.js';

const rawValue = (ip: string, mac: string) =>
  JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });

describe.skipIf(requireOrSkip('etcd cluster partition', { root: isRoot, [`etcd (${ETCD_BIN})`]: haveEtcd }))('etcd subnet manager and a partitioned etcd member', () => {
  let cluster: EtcdCluster;
  let admin: Etcd3;
  const managers: EtcdSubnetManager[] = [];

  beforeAll(async () => {
    cluster = await startEtcdCluster(3);
    admin = new Etcd3({ hosts: [cluster.members[1]!.endpoint, cluster.members[2]!.endpoint] });
  }, 60_000);
  afterAll(async () => {
    await Promise.all(managers.map((m) => m.close()));
    admin?.close();
    await cluster?.stop();
  });

  it('a watch on a member cut off from its peers ends, and the lease set follows the rest of the cluster', async () => {
    const [m0, m1, m2] = cluster.members as [EtcdCluster['members'][0], EtcdCluster['members'][0], EtcdCluster['members'][0]];
    const prefix = '/tsf-partition/network';
    await admin.put(`${prefix}/config`).value(JSON.stringify({ Network: '10.49.0.0/16' }));
    // Only e0 takes connections while the manager starts, so its calls and its watch go there.
    m1.proxy.cut();
    m2.proxy.cut();
    const manager = new EtcdSubnetManager({
      endpoints: [m0.endpoint, m1.endpoint, m2.endpoint],
      prefix,
      leaseTtlSeconds: 60,
      logger: pino({ level: 'silent' }),
    });
    managers.push(manager);
    // Our own subnet is fixed (subnet.env's), apart from the one written by hand below (a random one was 1 in 250).
    const own = await manager.acquireLease({ publicIP: '198.51.100.1', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:01' } }, undefined, { subnet: '10.49.1.0/24' });
    const seen: Lease[][] = [];
    const abort = new AbortController();
    const watching = manager.watchLeases((l) => seen.push(l), abort.signal);
    await waitFor('first list', () => seen.length > 0, 10_000);
    m1.proxy.restore();
    m2.proxy.restore();

    m0.isolate();
    const isolatedAt = Date.now();
    // e1 and e2 keep a quorum (and elect a leader if e0 was it): this write succeeds.
    await admin.put(`${prefix}/subnets/10.49.200.0-24`).value(rawValue('198.51.100.2', '0a:00:00:00:00:02'));
    await waitFor('the lease written on the majority side', () => seen.at(-1)?.some((l) => l.subnet === '10.49.200.0/24') === true, 30_000);
    expect(Date.now() - isolatedAt).toBeLessThan(30_000);
    expect(seen.at(-1)!.map((l) => l.subnet).sort()).toEqual([own.subnet, '10.49.200.0/24'].sort());
    m0.rejoin();
    abort.abort();
    await watching;
  }, 90_000);
});
