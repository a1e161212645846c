// Every netlink operation for real, inside private namespaces, checked
// against what iproute2 reports.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as nl from '../../src/netlink/index.js';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

interface IpLink {
  ifname: string;
  mtu: number;
  master?: string;
  operstate: string;
  flags: string[];
  linkinfo?: { info_kind: string; info_data?: Record<string, unknown>; info_slave_data?: Record<string, unknown> };
}

describe.skipIf(requireOrSkip('netlink layer', { root: isRoot }))('netlink layer against the kernel', () => {
  let host = '';
  let pod = '';
  let H: nl.InNetns;
  let P: nl.InNetns;

  beforeAll(() => {
    host = addNetns('nlhost');
    pod = addNetns('nlpod');
    H = { netns: nsPath(host) };
    P = { netns: nsPath(pod) };
  });
  afterAll(() => cleanupAll());

  it('creates a bridge once and adopts it afterwards', () => {
    const br = nl.ensureBridge({ name: 'cni0', mtu: 1450, ...H });
    const again = nl.ensureBridge({ name: 'cni0', mtu: 1450, ...H });
    expect(again.index).toBe(br.index);
    const [link] = ipJson<IpLink[]>(host, ['-d', 'link', 'show', 'cni0']);
    expect(link.linkinfo?.info_kind).toBe('bridge');
    expect(link.mtu).toBe(1450);
    expect(link.flags).toContain('UP');
  });

  it('refuses to treat a non-bridge link as the bridge', () => {
    execFileSync('ip', ['-n', host, 'link', 'add', 'notbr', 'type', 'veth', 'peer', 'name', 'notbr1']);
    expect(() => nl.ensureBridge({ name: 'notbr', ...H })).toThrow(/not a bridge/);
  });

  it('adds addresses idempotently and lists them', () => {
    expect(nl.addrAdd('cni0', '10.244.1.1/24', H)).toBe(true);
    expect(nl.addrAdd('cni0', '10.244.1.1/24', H)).toBe(false);
    expect(nl.addrList({ dev: 'cni0', family: 'inet', ...H }).map((a) => a.cidr)).toEqual(['10.244.1.1/24']);
    expect(inNs(host, 'ip', ['-4', 'addr', 'show', 'cni0'])).toContain('inet 10.244.1.1/24');
  });

  it('creates a veth pair with its peer inside the pod netns, enslaved with hairpin', () => {
    const pair = nl.createVeth({ name: 'vethtest0', peerName: 'eth0', peerNetns: nsPath(pod), mtu: 1450, ...H });
    expect(pair.host.name).toBe('vethtest0');
    expect(pair.peer.name).toBe('eth0');
    const port = nl.linkSet('vethtest0', { master: 'cni0', hairpin: true, up: true }, H);
    expect(port.hairpin).toBe(true);
    nl.setUp('eth0', P);

    const [hostLink] = ipJson<IpLink[]>(host, ['-d', 'link', 'show', 'vethtest0']);
    expect(hostLink.master).toBe('cni0');
    expect(hostLink.linkinfo?.info_slave_data?.hairpin).toBe(true);
    const [podLink] = ipJson<IpLink[]>(pod, ['-d', 'link', 'show', 'eth0']);
    expect(podLink.mtu).toBe(1450);
    expect(podLink.linkinfo?.info_kind).toBe('veth');
    expect(nl.linkByName('eth0', H)).toBeNull();
  });

  it('reports a name clash with EEXIST and leaves nothing behind', () => {
    let caught: unknown;
    try {
      nl.createVeth({ name: 'vethtest1', peerName: 'eth0', peerNetns: nsPath(pod), ...H });
    } catch (err) {
      caught = err;
    }
    expect(nl.isExists(caught)).toBe(true);
    expect(nl.linkByName('vethtest1', H)).toBeNull();
  });

  it('programs pod addresses and routes inside the pod netns', () => {
    nl.addrAdd('eth0', '10.244.1.2/24', P);
    nl.routeReplace({ dst: '10.244.0.0/16', gw: '10.244.1.1', dev: 'eth0', ...P });
    nl.routeReplace({ gw: '10.244.1.1', dev: 'eth0', ...P });
    const out = inNs(pod, 'ip', ['route']);
    expect(out).toContain('default via 10.244.1.1 dev eth0');
    expect(out).toContain('10.244.0.0/16 via 10.244.1.1 dev eth0');
    const listed = nl.routeList({ dev: 'eth0', family: 'inet', ...P });
    expect(listed.find((r) => r.dst === 'default')?.gw).toBe('10.244.1.1');
    expect(nl.routeDelete({ dst: '10.244.0.0/16', gw: '10.244.1.1', dev: 'eth0', ...P })).toBe(true);
    expect(nl.routeDelete({ dst: '10.244.0.0/16', gw: '10.244.1.1', dev: 'eth0', ...P })).toBe(false);
    // The pod reaches its gateway through the veth and the bridge.
    expect(inNs(pod, 'ping', ['-c1', '-W2', '10.244.1.1'])).toContain('1 received');
  });

  describe('VXLAN VTEP', () => {
    const vx = (): nl.VxlanSpec => ({
      name: 'flannel.1', vni: 1, local: '192.168.200.1', dev: 'under0', port: 8472, learning: false, mtu: 1450, ...H,
    });

    it('creates flannel.1 with VNI 1, port 8472, nolearning, and adopts an equal one', () => {
      nl.createVeth({ name: 'under0', peerName: 'under1', peerNetns: nsPath(host), ...H });
      nl.addrAdd('under0', '192.168.200.1/24', H);
      nl.setUp('under0', H);
      const first = nl.ensureVxlan(vx());
      expect(first.recreated).toBe(false);
      const second = nl.ensureVxlan(vx());
      expect(second.recreated).toBe(false);
      expect(second.link.index).toBe(first.link.index);
      const text = inNs(host, 'ip', ['-d', 'link', 'show', 'flannel.1']);
      expect(text).toMatch(/vxlan id 1 local 192\.168\.200\.1 dev under0 .*dstport 8472 nolearning/);
      expect(text).toContain('mtu 1450');
    });

    it('recreates a device whose attributes differ', () => {
      const changed = nl.ensureVxlan({ ...vx(), port: 4789 });
      expect(changed.recreated).toBe(true);
      expect(inNs(host, 'ip', ['-d', 'link', 'show', 'flannel.1'])).toContain('dstport 4789');
      expect(nl.ensureVxlan(vx()).recreated).toBe(true);
    });

    it('programs route, permanent neigh and FDB for a remote node', () => {
      nl.addrAdd('flannel.1', '10.244.1.0/32', H);
      nl.routeReplace({ dst: '10.244.2.0/24', gw: '10.244.2.0', dev: 'flannel.1', onlink: true, ...H });
      nl.neighSet({ dev: 'flannel.1', ip: '10.244.2.0', mac: '6a:00:00:00:00:02', ...H });
      nl.neighSet({ dev: 'flannel.1', ip: '10.244.2.0', mac: '6a:00:00:00:00:02', ...H });
      nl.fdbAppend({ dev: 'flannel.1', mac: '6a:00:00:00:00:02', dst: '192.168.200.2', ...H });
      nl.fdbAppend({ dev: 'flannel.1', mac: '6a:00:00:00:00:02', dst: '192.168.200.2', ...H });

      expect(inNs(host, 'ip', ['route', 'show', '10.244.2.0/24'])).toContain('10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink');
      expect(inNs(host, 'ip', ['neigh', 'show', 'dev', 'flannel.1'])).toContain('10.244.2.0 lladdr 6a:00:00:00:00:02 PERMANENT');
      const fdb = inNs(host, 'bridge', ['fdb', 'show', 'dev', 'flannel.1']);
      expect(fdb.match(/6a:00:00:00:00:02 dst 192\.168\.200\.2 self permanent/g)).toHaveLength(1);

      const neigh = nl.neighList({ dev: 'flannel.1', ...H });
      expect(neigh).toContainEqual(expect.objectContaining({ ip: '10.244.2.0', mac: '6a:00:00:00:00:02', state: nl.NudState.permanent }));
      expect(nl.fdbList('flannel.1', H)).toContainEqual(expect.objectContaining({ ip: '192.168.200.2', mac: '6a:00:00:00:00:02' }));
      const route = nl.routeList({ dev: 'flannel.1', ...H }).find((r) => r.dst === '10.244.2.0/24');
      expect(route).toMatchObject({ gw: '10.244.2.0', onlink: true });
    });

    it('removes route, neigh and FDB, and a second removal is not an error', () => {
      const spec = { dev: 'flannel.1', mac: '6a:00:00:00:00:02', dst: '192.168.200.2', ...H };
      expect(nl.fdbDelete(spec)).toBe(true);
      expect(nl.fdbDelete(spec)).toBe(false);
      expect(nl.neighDelete({ dev: 'flannel.1', ip: '10.244.2.0', ...H })).toBe(true);
      expect(nl.neighDelete({ dev: 'flannel.1', ip: '10.244.2.0', ...H })).toBe(false);
      expect(nl.routeDelete({ dst: '10.244.2.0/24', gw: '10.244.2.0', dev: 'flannel.1', onlink: true, ...H })).toBe(true);
      expect(inNs(host, 'bridge', ['fdb', 'show', 'dev', 'flannel.1'])).not.toContain('6a:00:00:00:00:02');
      expect(inNs(host, 'ip', ['neigh', 'show', 'dev', 'flannel.1'])).not.toContain('10.244.2.0');
      expect(inNs(host, 'ip', ['route'])).not.toContain('10.244.2.0/24');
    });
  });

  it('sets sysctls inside a netns only', () => {
    const before = nl.sysctlGet('net.ipv4.ip_forward');
    nl.sysctlSet('net.ipv4.ip_forward', '1', H);
    expect(nl.sysctlGet('net.ipv4.ip_forward', H)).toBe('1');
    expect(inNs(host, 'cat', ['/proc/sys/net/ipv4/ip_forward']).trim()).toBe('1');
    expect(nl.sysctlGet('net.ipv4.ip_forward')).toBe(before);
    expect(() => nl.sysctlGet('../../etc/passwd')).toThrow(/bad sysctl key/);
    // Slashes keep a dotted interface name in one piece.
    nl.sysctlSet('net/ipv4/conf/flannel.1/rp_filter', '2', H);
    expect(inNs(host, 'cat', ['/proc/sys/net/ipv4/conf/flannel.1/rp_filter']).trim()).toBe('2');
  });

  it('tells a netns from an ordinary file and from namespaces of other types, without entering the shim', () => {
    nl.traceShimCalls(true);
    try {
      expect(nl.isNetns(nsPath(pod))).toBe(true);
      expect(nl.isNetns('/proc/self/ns/net')).toBe(true);
      // nsfs, but not a network namespace.
      expect(nl.isNetns('/proc/self/ns/uts')).toBe(false);
      expect(nl.isNetns('/proc/self/ns/mnt')).toBe(false);
      expect(nl.isNetns('/etc/hostname')).toBe(false);
      expect(nl.traceShimCalls(true)).toEqual([]);
    } finally {
      nl.traceShimCalls(false);
    }
    expect(() => nl.isNetns('/nonexistent/netns')).toThrow(nl.NetlinkError);
  });

  it("starts the Go runtime's threads with 1 ms of timer slack and leaves the loading thread's own slack alone", () => {
    nl.linkList(H); // the shim is loaded (by this thread, the test process's main thread)
    const slack = (tid: string): number | undefined => {
      try {
        return Number(readFileSync(`/proc/${tid}/timerslack_ns`, 'utf8'));
      } catch {
        return undefined; // the thread ended while we looked
      }
    };
    const all = readdirSync('/proc/self/task').map(slack).filter((v) => v !== undefined);
    // The runtime's first thread and sysmon at least; only Go's threads have it.
    expect(all.filter((v) => v === 1_000_000).length).toBeGreaterThanOrEqual(2);
    expect(slack(String(process.pid))).not.toBe(1_000_000);
  });

  it('keeps the errno of kernel errors', () => {
    let caught: unknown;
    try {
      nl.linkSet('nosuchlink', { up: true }, H);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(nl.NetlinkError);
    expect(nl.isNotFound(caught)).toBe(true);
    expect(nl.linkDelete('nosuchlink', H)).toBe(false);
  });

  it('deletes links in a netns', () => {
    expect(nl.linkDelete('vethtest0', H)).toBe(true);
    expect(nl.linkByName('eth0', P)).toBeNull(); // the peer goes with it
    expect(nl.linkDelete('vethtest0', H)).toBe(false);
  });

  it('takes a flock that another process sees, and times out with EAGAIN', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-lock-'));
    const file = join(dir, 'lock');
    writeFileSync(file, '');
    const fd = openSync(file, 'r');
    await nl.flock(fd, 'ex', 1000);
    // flock(1) from util-linux is another process taking the real syscall.
    expect(spawnSync('flock', ['-n', file, 'true']).status).toBe(1);
    nl.funlock(fd);
    closeSync(fd);
    expect(spawnSync('flock', ['-n', file, 'true']).status).toBe(0);
    // While flock(1) holds it, our lock gives up with EAGAIN.
    const holder = spawn('flock', [file, '-c', 'echo locked; sleep 3'], { stdio: ['ignore', 'pipe', 'ignore'] });
    // flock(1) prints only once it holds the lock.
    await new Promise((r) => holder.stdout.once('data', r));
    const fd2 = openSync(file, 'r');
    await expect(nl.flock(fd2, 'ex', 200)).rejects.toMatchObject({ errno: 'EAGAIN' });
    closeSync(fd2);
    holder.kill();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes a free flock through libc without entering the shim, and waits in the shim only for a held one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-lock-'));
    const file = join(dir, 'lock');
    writeFileSync(file, '');
    const fd = openSync(file, 'r');
    const other = openSync(file, 'r');
    try {
      nl.traceShimCalls(true);
      await nl.flock(fd, 'ex', 1000);
      // Another open file of this process is refused at once, exclusive or shared, without a wait.
      expect(nl.tryFlock(other, 'ex')).toBe(false);
      expect(nl.tryFlock(other, 'sh')).toBe(false);
      expect(spawnSync('flock', ['-n', file, 'true']).status).toBe(1);
      nl.funlock(fd);
      expect(nl.tryFlock(other, 'sh')).toBe(true);
      expect(nl.tryFlock(fd, 'sh')).toBe(true); // shared locks coexist
      expect(spawnSync('flock', ['-n', '-s', file, 'true']).status).toBe(0);
      expect(spawnSync('flock', ['-n', file, 'true']).status).toBe(1);
      // None of that needed the Go runtime.
      expect(nl.traceShimCalls(true)).toEqual([]);
      // A held lock is waited for in the shim, which gives up after the timeout.
      await expect(nl.flock(fd, 'ex', 100)).rejects.toMatchObject({ errno: 'EAGAIN' });
      expect(nl.traceShimCalls(false).map((c) => c.op)).toEqual(['flock']);
      // A bad descriptor is an error, not a "held" answer.
      expect(() => nl.tryFlock(987654, 'ex')).toThrow(/EBADF/);
      await expect(nl.flock(987654, 'ex', 100)).rejects.toMatchObject({ errno: 'EBADF' });
    } finally {
      nl.traceShimCalls(false);
      closeSync(fd);
      closeSync(other);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
