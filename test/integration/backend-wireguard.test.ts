// The wireguard backend against the real kernel, in one node namespace with
// no etcd: the device is created (kernel WireGuard, else wireguard-go), a
// stranger by its name is replaced, the routes that would carry pod traffic
// around WireGuard are removed while the node's own subnet stays, and peers
// follow the leases. The device gets a unique name so its UAPI socket never
// meets another test's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WireguardBackend } from '../../src/daemon/backend/wireguard.js';
import { publicKeyOf } from '../../src/daemon/backend/wireguard-keys.js';
import { parseDump } from '../../src/daemon/backend/wireguard-peers.js';
import { parseNetworkConfig } from '../../src/daemon/config.js';
import type { ExternalInterface, Lease, WireguardBackendConfig } from '../../src/daemon/types.js';
import { addNetns, cleanupAll, inNs, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';

const runnable = isRoot && existsSync('/usr/bin/wg') && existsSync('/usr/bin/wireguard-go');
const KEY = (n: number) => Buffer.alloc(32, n).toString('base64');

function ip(ns: string, args: string[]): void {
  execFileSync('ip', ['-n', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
}

const lease = (n: number, key = KEY(n)): Lease => ({
  subnet: `10.244.${n}.0/24`,
  publicIP: `192.168.77.${n}`,
  backendType: 'wireguard',
  backendData: { PublicKey: key },
  nodeName: `node${n}`,
});

describe.skipIf(requireOrSkip('backend-wireguard', { 'root, wg and wireguard-go (or kernel WireGuard)': runnable }))('wireguard backend in a real node namespace', () => {
  const dev = `wg${randomBytes(3).toString('hex')}`;
  let ns = '';
  let dir = '';
  let backend: WireguardBackend;
  const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":25}}').backend as WireguardBackendConfig;
  const ext: ExternalInterface = { name: 'eth0', index: 0, mtu: 1500, ip: '192.168.77.1', cidr: '192.168.77.1/24', publicIP: '192.168.77.1' };
  const dump = () => parseDump(inNs(ns, 'wg', ['show', dev, 'dump']));
  const routes = () => inNs(ns, 'ip', ['-4', 'route', 'show']).split('\n').map((l) => l.trim()).filter(Boolean).sort();

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tsf-wg-it-'));
    ns = addNetns('wgit');
    ip(ns, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1']);
    ip(ns, ['addr', 'add', '192.168.77.1/24', 'dev', 'eth0']);
    for (const l of ['eth0', 'eth1']) ip(ns, ['link', 'set', l, 'up']);
    ip(ns, ['link', 'add', 'cni0', 'type', 'bridge']);
    ip(ns, ['addr', 'add', '10.244.1.1/24', 'dev', 'cni0']);
    ip(ns, ['link', 'set', 'cni0', 'up']);
    // What a previous backend left: a host-gw route and a flannel.1 route into the cluster network.
    ip(ns, ['route', 'add', '10.244.5.0/24', 'via', '192.168.77.5']);
    ip(ns, ['link', 'add', 'flannel.1', 'type', 'veth', 'peer', 'name', 'fl1peer']);
    for (const l of ['flannel.1', 'fl1peer']) ip(ns, ['link', 'set', l, 'up']);
    ip(ns, ['route', 'add', '10.244.6.0/24', 'dev', 'flannel.1']);
    // A stranger holding the device's name.
    ip(ns, ['link', 'add', dev, 'type', 'bridge']);
    backend = new WireguardBackend({ config, network: '10.244.0.0/16', netns: nsPath(ns), keyFile: join(dir, 'wgkey'), deviceName: dev });
  });

  afterAll(() => {
    // wireguard-go lives in the namespace and would keep it alive.
    const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
    for (const pid of pids.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGTERM');
      } catch {
        // gone
      }
    }
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  it('replaces the stranger by the device name with WireGuard and publishes the key file\'s public key', async () => {
    const data = await backend.prepare(ext);
    const keyFile = join(dir, 'wgkey');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(data).toEqual({ PublicKey: publicKeyOf(readFileSync(keyFile, 'utf8')) });
    const link = inNs(ns, 'ip', ['-d', 'link', 'show', dev]);
    expect(link).not.toContain('bridge');
    expect(link).toMatch(backend.impl === 'kernel' ? /wireguard/ : /tun type tun/);
    const d = dump();
    expect(d.publicKey).toBe(data.PublicKey);
    expect(d.listenPort).toBe(51820);
  });

  it('configure: <subnet>.0/32, MTU 1440, the cluster route, and no route around WireGuard; the own subnet stays', async () => {
    const { mtu } = await backend.configure(lease(1, KEY(1)));
    expect(mtu).toBe(1440);
    expect(inNs(ns, 'ip', ['-4', 'addr', 'show', dev])).toContain('inet 10.244.1.0/32');
    expect(inNs(ns, 'ip', ['link', 'show', dev])).toContain('mtu 1440');
    const r = routes();
    expect(r).toContain(`10.244.0.0/16 dev ${dev} scope link`);
    expect(r).toContain('10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1');
    expect(r.filter((l) => l.startsWith('10.244.5.') || l.startsWith('10.244.6.'))).toEqual([]);
  });

  it('reconcile: one peer per remote lease with keepalive, refuses a lease without a key, and drops a peer whose lease went', () => {
    const first = backend.reconcile([lease(2), lease(3), { ...lease(4), backendData: {} }]);
    expect(first).toMatchObject({ added: 2, removed: 0 });
    expect(first.errors).toEqual(['lease 10.244.4.0/24 (node4): has no PublicKey in its backend data']);
    const peers = dump().peers.map((p) => [p.publicKey, p.endpoint, p.allowedIPs.join(), p.persistentKeepalive]).sort();
    expect(peers).toEqual([
      [KEY(2), '192.168.77.2:51820', '10.244.2.0/24', 25],
      [KEY(3), '192.168.77.3:51820', '10.244.3.0/24', 25],
    ]);
    expect(backend.reconcile([lease(2), lease(3)])).toMatchObject({ added: 0, updated: 0, removed: 0, errors: [] });
    expect(backend.reconcile([lease(3, KEY(33))])).toMatchObject({ added: 1, removed: 2 });
    expect(dump().peers.map((p) => p.publicKey)).toEqual([KEY(33)]);
  });
});

describe.skipIf(requireOrSkip('backend-wireguard', { 'root, wg and wireguard-go (or kernel WireGuard)': runnable }))('wireguard backend without any WireGuard', () => {
  it('fails at prepare naming both: no kernel WireGuard and no userspace program (WG_QUICK_USERSPACE_IMPLEMENTATION)', async () => {
    const ns = addNetns('wgnone');
    const probe = spawnSync('ip', ['-n', ns, 'link', 'add', 'probe0', 'type', 'wireguard']);
    if (probe.status === 0) return; // this kernel has WireGuard: nothing to fall back from
    const dir = mkdtempSync(join(tmpdir(), 'tsf-wg-none-'));
    const saved = process.env.WG_QUICK_USERSPACE_IMPLEMENTATION;
    process.env.WG_QUICK_USERSPACE_IMPLEMENTATION = '/nonexistent/wireguard-go';
    try {
      const config = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"wireguard"}}').backend as WireguardBackendConfig;
      const backend = new WireguardBackend({ config, network: '10.244.0.0/16', netns: nsPath(ns), keyFile: join(dir, 'wgkey'), deviceName: `wg${randomBytes(3).toString('hex')}` });
      const ext: ExternalInterface = { name: 'lo', index: 1, mtu: 1500, ip: '192.168.9.1', cidr: '192.168.9.1/24', publicIP: '192.168.9.1' };
      await expect(backend.prepare(ext)).rejects.toThrow(
        'this kernel has no WireGuard, and its userspace implementation did not start: /nonexistent/wireguard-go is not installed (check WG_QUICK_USERSPACE_IMPLEMENTATION)',
      );
    } finally {
      if (saved === undefined) delete process.env.WG_QUICK_USERSPACE_IMPLEMENTATION;
      else process.env.WG_QUICK_USERSPACE_IMPLEMENTATION = saved;
      rmSync(dir, { recursive: true, force: true });
      cleanupAll();
    }
  });
});
