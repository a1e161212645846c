// What pods see while tsflanneld and its surroundings fail: agent restarts
// (SIGTERM and SIGKILL) under continuous cross-node pings, hand-deleted
// kernel state that the periodic resync restores, and an etcd outage longer
// than the lease TTL.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Cluster, type Pod } from '../../src/demo/cluster.js';
import { ETCD_BIN, haveEtcd } from '../helpers/etcd.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { startPing, stopPing } from '../helpers/ping.js';
import { eventually, timeUntil } from '../helpers/eventually.js';
import { nexthopRoute } from '../helpers/nexthops.js';

const RESYNC_SECONDS = 2;
const LEASE_TTL_SECONDS = 4;



function run(ns: string, cmd: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8' });
}

function pingOnce(from: Pod, to: Pod): boolean {
  try {
    run(from.ns, 'ping', ['-c1', '-W2', to.ip]);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(requireOrSkip('agent faults', { root: isRoot, [`etcd (${ETCD_BIN})`]: haveEtcd }))('tsflanneld under faults', () => {
  const cluster = new Cluster({
    prefix: `tsfflt${randomBytes(2).toString('hex')}`,
    nodes: [
      { name: 'n1', segment: 'a' },
      { name: 'n2', segment: 'b' },
    ],
    resyncSeconds: RESYNC_SECONDS,
    extraAgentArgs: ['--subnet-lease-ttl', String(LEASE_TTL_SECONDS)],
  });
  let a: Pod;
  let b: Pod;
  let n2net = '';

  beforeAll(async () => {
    await cluster.start();
    a = await cluster.addPod('n1', 'a');
    b = await cluster.addPod('n2', 'b');
    n2net = /FLANNEL_SUBNET=(\S+)\.1\/24/.exec(readFileSync(cluster.subnetFile('n2'), 'utf8'))![1] + '.0';
    // Pods attach in milliseconds through the agents now; the nodes may still
    // be programming their routes to each other.
    await eventually('pod a reaches pod b across the overlay', 15_000, () => pingOnce(a, b));
  }, 90_000);
  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it.each(['SIGTERM', 'SIGKILL'] as const)('loses no pings while both agents restart after %s', async (signal) => {
    const pinger = startPing(a, b);
    await new Promise((r) => setTimeout(r, 1000));
    for (const node of ['n1', 'n2']) {
      const before = run(cluster.node(node).ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']);
      await cluster.stopAgent(node, signal);
      await new Promise((r) => setTimeout(r, 500));
      await cluster.startAgent(node);
      await eventually(`${node} agent reconciled`, 15_000, () => cluster.agentLog(node).includes('wrote subnet file'));
      await new Promise((r) => setTimeout(r, 1000));
      // Valid entries survive the restart untouched.
      expect(run(cluster.node(node).ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1'])).toBe(before);
    }
    const stats = await stopPing(pinger);
    console.log(`[faults] ${signal}: ${stats.sent} pings, ${stats.lost} lost across two agent restarts`);
    expect(stats.sent).toBeGreaterThan(30);
    // The kernel state outlives the agent, so a restart must not cost a single ping.
    expect(stats.lost).toBe(0);
  });

  // The bound is three resync periods, not one: the loss can land just after a
  // resync, and a shared machine delays timers.
  it('restores a hand-deleted route, FDB entry and flannel.1 within three resync periods', async () => {
    const ns = cluster.node('n1').ns;
    execFileSync('ip', ['-n', ns, 'route', 'del', `${n2net}/24`]);
    const routeMs = await timeUntil('route restored', 3 * RESYNC_SECONDS * 1000, () => nexthopRoute(`${n2net}/24`, n2net, 'flannel.1').test(run(ns, 'ip', ['route'])));
    const fdb = run(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']).split('\n').find((l) => l.includes(cluster.node('n2').ip))!;
    const mac = fdb.split(' ')[0];
    execFileSync('bridge', ['-n', ns, 'fdb', 'del', mac, 'dev', 'flannel.1', 'dst', cluster.node('n2').ip]);
    const fdbMs = await timeUntil('fdb restored', 3 * RESYNC_SECONDS * 1000, () => run(ns, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']).includes(`${mac} dst ${cluster.node('n2').ip}`));
    execFileSync('ip', ['-n', ns, 'link', 'del', 'flannel.1']);
    const devMs = await timeUntil('flannel.1 and its peers restored', 3 * RESYNC_SECONDS * 1000, () => {
      try {
        return nexthopRoute(`${n2net}/24`, n2net, 'flannel.1').test(run(ns, 'ip', ['route'])) && pingOnce(a, b);
      } catch {
        return false;
      }
    });
    console.log(`[faults] restored: route ${routeMs} ms, fdb ${fdbMs} ms, flannel.1 ${devMs} ms (resync period ${RESYNC_SECONDS} s)`);
    expect(pingOnce(b, a)).toBe(true);
  });

  it('keeps the overlay through an etcd outage longer than the lease TTL and keeps the subnet', async () => {
    const subnetBefore = readFileSync(cluster.subnetFile('n1'), 'utf8');
    const logBefore = cluster.agentLog('n1').length;
    const pinger = startPing(a, b);
    await cluster.haltEtcd();
    await new Promise((r) => setTimeout(r, (LEASE_TTL_SECONDS + 3) * 1000));
    expect(run(cluster.node('n1').ns, 'ip', ['route'])).toMatch(nexthopRoute(`${n2net}/24`, n2net, 'flannel.1'));
    await cluster.resumeEtcd();
    const n1net = /FLANNEL_SUBNET=(\S+)\.1\/24/.exec(subnetBefore)![1] + '.0';
    let key = '';
    await eventually('n1 re-acquired its subnet in etcd', 30_000, () => {
      try {
        key = execFileSync('etcdctl', ['--endpoints', cluster.etcdEndpoint, 'get', `/coreos.com/network/subnets/${n1net}-24`], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' });
        return key.includes(cluster.node('n1').ip);
      } catch {
        return false;
      }
    });
    const stats = await stopPing(pinger);
    console.log(`[faults] etcd outage of ${LEASE_TTL_SECONDS + 3} s: ${stats.sent} pings, ${stats.lost} lost`);
    expect(stats.lost).toBe(0);
    expect(readFileSync(cluster.subnetFile('n1'), 'utf8')).toBe(subnetBefore);
    // The agent said what happened: renewals failing during the outage, then
    // the lease back (renewed, or re-acquired as the same subnet once it had expired).
    // (etcd keeps a lease's key across its own restart, so the key alone does
    // not prove the agent renewed anything.)
    const said = () => cluster.agentLog('n1').slice(logBefore);
    const failing = said().indexOf('cannot renew subnet lease');
    expect(failing, said().slice(-2000)).toBeGreaterThanOrEqual(0);
    await eventually('n1 logged its lease renewed after the outage', 30_000, () =>
      /etcd reachable again; subnet lease renewed|re-acquired the same subnet/.test(said().slice(failing)),
    );
  });
});
