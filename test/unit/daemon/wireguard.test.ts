import { describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, isWireguardKey, parseNetworkConfig } from '../../../src/daemon/config.js';
import { generatePrivateKey, keyFileFromEnv, loadOrCreateKey, publicKeyOf } from '../../../src/daemon/backend/wireguard-keys.js';
import {
  diffPeers,
  isEmptyDiff,
  parseDump,
  planPeers,
  wgSetArgs,
  type DesiredPeer,
  type DumpPeer,
  type PeerPlanContext,
} from '../../../src/daemon/backend/wireguard-peers.js';
import { parseCidr } from '../../../src/net/ip.js';
import { annotationsFor, formatBackendData, leaseFromNode, parseBackendData } from '../../../src/daemon/subnet/annotations.js';
import { decodeLeaseAttrs, encodeLeaseAttrs } from '../../../src/daemon/subnet/etcd.js';
import type { Lease, WireguardBackendConfig } from '../../../src/daemon/types.js';

const wgConf = (backend: object, extra: object = {}) =>
  parseNetworkConfig(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'wireguard', ...backend }, ...extra }));

// RFC 7748 section 6.1, Alice's key pair, in WireGuard's base64.
const RFC_PRIVATE = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex').toString('base64');
const RFC_PUBLIC = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64');
const KEY = (n: number) => Buffer.alloc(32, n).toString('base64');

describe('net-conf.json Backend.Type wireguard', () => {
  it("fills in flannel's defaults: ListenPort 51820, ListenPortV6 51821, Mode separate, no keepalive, no PSK", () => {
    expect(wgConf({}).backend).toEqual({ type: 'wireguard', listenPort: 51820, listenPortV6: 51821, persistentKeepaliveInterval: 0, mode: 'separate' });
  });

  it("reads flannel's keys, case-insensitively like Go's encoding/json", () => {
    const psk = KEY(7);
    const cfg = wgConf({ PSK: psk, listenport: 6000, ListenPortV6: 6001, MTU: 9000, Mode: 'auto', PersistentKeepaliveInterval: 25 }).backend as WireguardBackendConfig;
    expect(cfg).toEqual({ type: 'wireguard', psk, listenPort: 6000, listenPortV6: 6001, mtu: 9000, mode: 'auto', persistentKeepaliveInterval: 25 });
    expect(wgConf({ Mode: 'ipv4' }).backend).toMatchObject({ mode: 'ipv4' });
    expect(wgConf({ ListenPort: 0 }).backend).toMatchObject({ listenPort: 51820 });
  });

  it('refuses a PSK that is not 32 bytes of base64, an unknown Mode, and IPv6-only set-ups, naming the field', () => {
    expect(() => wgConf({ PSK: 'secret' })).toThrow(/"Backend.PSK" must be a WireGuard key/);
    expect(() => wgConf({ PSK: Buffer.alloc(31).toString('base64') })).toThrow(ConfigError);
    expect(() => wgConf({ Mode: 'both' })).toThrow(/"Backend.Mode" must be one of separate, auto, ipv4, ipv6/);
    expect(() => wgConf({ Mode: 'ipv6' })).toThrow(/"Backend.Mode" "ipv6" .*carries IPv4 only/);
    expect(() => wgConf({}, { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00::/56' })).toThrow(/"EnableIPv4" must be true for the wireguard backend/);
    expect(() => wgConf({ ListenPort: 70000 })).toThrow(/"Backend.ListenPort" must be an integer from 0 to 65535/);
    expect(() => wgConf({ PersistentKeepaliveInterval: -1 })).toThrow(/PersistentKeepaliveInterval/);
  });

  it('accepts exactly the keys wg prints', () => {
    expect(isWireguardKey(RFC_PUBLIC)).toBe(true);
    expect(isWireguardKey(RFC_PUBLIC.slice(1))).toBe(false);
    expect(isWireguardKey(`${RFC_PUBLIC.slice(0, 42)}B=`)).toBe(false); // non-zero padding bits
  });
});

describe('WireGuard keys', () => {
  it('derives the public key of the RFC 7748 test vector', () => {
    expect(publicKeyOf(RFC_PRIVATE)).toBe(RFC_PUBLIC);
  });

  it('generates clamped 32-byte keys, as wg genkey does', () => {
    for (let i = 0; i < 20; i++) {
      const k = Buffer.from(generatePrivateKey(), 'base64');
      expect(k).toHaveLength(32);
      expect(k[0] & 7).toBe(0);
      expect(k[31] & 0xc0).toBe(0x40);
    }
  });

  it('takes the file from WIREGUARD_KEY_FILE, else /run/flannel/wgkey', () => {
    expect(keyFileFromEnv({})).toBe('/run/flannel/wgkey');
    expect(keyFileFromEnv({ WIREGUARD_KEY_FILE: '/etc/wg/key' })).toBe('/etc/wg/key');
  });

  it('creates the key file once (0600) and reads the same key back; tightens a readable file; refuses garbage', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsf-wgkey-'));
    try {
      const file = join(dir, 'sub', 'wgkey');
      const first = loadOrCreateKey(file);
      expect(first.created).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(readFileSync(file, 'utf8')).toBe(first.privateKey);
      const again = loadOrCreateKey(file);
      expect(again).toMatchObject({ created: false, privateKey: first.privateKey, publicKey: first.publicKey, tightened: false });

      writeFileSync(file, `${RFC_PRIVATE}\n`);
      chmodSync(file, 0o644);
      const given = loadOrCreateKey(file);
      expect(given).toMatchObject({ publicKey: RFC_PUBLIC, tightened: true });
      expect(statSync(file).mode & 0o777).toBe(0o600);

      writeFileSync(file, 'not a key');
      expect(() => loadOrCreateKey(file)).toThrow(/does not hold a base64 private key/);
      expect(readFileSync(file, 'utf8')).toBe('not a key');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const cidr = (t: string) => parseCidr(t, 4)!;
const ctx: PeerPlanContext = {
  network: cidr('10.244.0.0/16'),
  ownSubnet: cidr('10.244.1.0/24'),
  ownPublicKey: KEY(1),
  ownIPs: ['192.168.77.1'],
  port: 51820,
};
function lease(n: number, key: string | undefined, extra: Partial<Lease> = {}): Lease {
  return {
    subnet: `10.244.${n}.0/24`,
    publicIP: `192.168.77.${n}`,
    backendType: 'wireguard',
    backendData: key === undefined ? {} : { PublicKey: key },
    nodeName: `node${n}`,
    ...extra,
  };
}

describe('planPeers', () => {
  it('makes one peer per remote lease: its key, public IP and our ListenPort, its subnet', () => {
    const plan = planPeers([lease(1, KEY(1)), lease(2, KEY(2)), lease(3, KEY(3))], ctx);
    expect(plan.peers.map((p) => [p.publicKey, p.endpoint, p.allowedIPs])).toEqual([
      [KEY(2), '192.168.77.2:51820', ['10.244.2.0/24']],
      [KEY(3), '192.168.77.3:51820', ['10.244.3.0/24']],
    ]);
    expect(plan.skipped).toEqual([expect.objectContaining({ reason: 'is our own subnet', error: false })]);
  });

  it('refuses leases it cannot make a safe peer of, and says why', () => {
    const plan = planPeers(
      [
        lease(2, undefined),
        lease(3, 'nope'),
        lease(4, KEY(1)),
        lease(5, KEY(5)),
        lease(6, KEY(5)),
        lease(7, KEY(7), { subnet: '10.244.5.128/25' }),
        lease(8, KEY(8), { subnet: '10.245.8.0/24' }),
        lease(9, KEY(9), { backendType: 'vxlan' }),
        lease(10, KEY(10), { publicIP: '192.168.77.1' }),
        lease(11, KEY(11), { publicIP: '10.244.200.1' }),
      ],
      ctx,
    );
    expect(plan.peers.map((p) => p.lease.nodeName)).toEqual(['node5']);
    expect(plan.skipped.map((s) => [s.lease.nodeName, s.reason, s.error])).toEqual([
      ['node2', 'has no PublicKey in its backend data', true],
      ['node3', 'PublicKey "nope" is not a WireGuard key', true],
      ['node4', 'publishes our own public key (a copied key file?)', true],
      ['node6', 'PublicKey is already used by 10.244.5.0/24 (node5)', true],
      ['node7', 'subnet overlaps 10.244.5.0/24 (node5)', true],
      ['node8', 'subnet lies outside the cluster network 10.244.0.0/16', true],
      ['node9', 'backend type vxlan is not wireguard', false],
      ['node10', 'public IP 192.168.77.1 is our own', true],
      ['node11', 'public IP 10.244.200.1 lies inside the cluster network 10.244.0.0/16, which is routed into the tunnel', true],
    ]);
  });
});

const DUMP = [
  `${KEY(1)}\t${KEY(11)}\t51820\toff`,
  `${KEY(2)}\t(none)\t192.168.77.2:51820\t10.244.2.0/24\t1700000000\t100\t200\toff`,
  `${KEY(3)}\t${KEY(9)}\t(none)\t10.244.9.0/24,10.244.3.0/24\t0\t0\t0\t25`,
  '',
].join('\n');

describe('wg show dump', () => {
  it('parses the interface line and every peer, "(none)" and "off" included', () => {
    const d = parseDump(DUMP);
    expect(d).toMatchObject({ privateKey: KEY(1), publicKey: KEY(11), listenPort: 51820, fwmark: 0 });
    expect(d.peers).toEqual([
      { publicKey: KEY(2), endpoint: '192.168.77.2:51820', allowedIPs: ['10.244.2.0/24'], latestHandshake: 1700000000, rxBytes: 100, txBytes: 200, persistentKeepalive: 0 },
      { publicKey: KEY(3), presharedKey: KEY(9), allowedIPs: ['10.244.3.0/24', '10.244.9.0/24'], latestHandshake: 0, rxBytes: 0, txBytes: 0, persistentKeepalive: 25 },
    ]);
  });

  it('refuses output it does not understand instead of guessing', () => {
    expect(() => parseDump('')).toThrow(/empty/);
    expect(() => parseDump('a\tb')).toThrow(/interface line/);
    expect(() => parseDump(`${KEY(1)}\t${KEY(2)}\t1\toff\nx\ty`)).toThrow(/peer line/);
  });
});

describe('diffPeers and wgSetArgs', () => {
  const want = (n: number): DesiredPeer => ({ lease: lease(n, KEY(n)), publicKey: KEY(n), endpoint: `192.168.77.${n}:51820`, allowedIPs: [`10.244.${n}.0/24`] });
  const have = (n: number, extra: Partial<DumpPeer> = {}): DumpPeer => ({
    publicKey: KEY(n),
    endpoint: `192.168.77.${n}:51820`,
    allowedIPs: [`10.244.${n}.0/24`],
    latestHandshake: 0,
    rxBytes: 0,
    txBytes: 0,
    persistentKeepalive: 0,
    ...extra,
  });

  it('finds nothing to do when the device matches', () => {
    expect(isEmptyDiff(diffPeers([want(2), want(3)], [have(3), have(2)], { persistentKeepalive: 0 }))).toBe(true);
  });

  it('adds missing peers, removes unknown ones, and updates changed endpoint, allowed IPs, PSK or keepalive', () => {
    const d = diffPeers(
      [want(2), want(3), want(4), want(5)],
      [have(3, { endpoint: '10.0.0.1:1' }), have(4, { allowedIPs: ['10.244.4.0/24', '10.244.99.0/24'] }), have(5, { persistentKeepalive: 25 }), have(6)],
      { persistentKeepalive: 0 },
    );
    expect(d.add.map((p) => p.publicKey)).toEqual([KEY(2)]);
    expect(d.update.map((u) => [u.peer.publicKey, u.why])).toEqual([
      [KEY(3), ['endpoint 10.0.0.1:1 != 192.168.77.3:51820']],
      [KEY(4), ['allowed IPs 10.244.4.0/24,10.244.99.0/24 != 10.244.4.0/24']],
      [KEY(5), ['keepalive 25 != 0']],
    ]);
    expect(d.remove).toEqual([KEY(6)]);
    const psk = diffPeers([want(2)], [have(2)], { psk: KEY(9), persistentKeepalive: 0 });
    expect(psk.update[0].why).toEqual(['preshared key differs']);
  });

  it('applies a diff in one wg set: removals, then full peers with allowed IPs, keepalive and the PSK file', () => {
    const d = diffPeers([want(2)], [have(6)], { psk: KEY(9), persistentKeepalive: 25 });
    expect(wgSetArgs('flannel-wg', d, { psk: KEY(9), persistentKeepalive: 25 }, '/tmp/x/psk')).toEqual([
      'set', 'flannel-wg',
      'peer', KEY(6), 'remove',
      'peer', KEY(2), 'endpoint', '192.168.77.2:51820', 'allowed-ips', '10.244.2.0/24', 'persistent-keepalive', '25', 'preshared-key', '/tmp/x/psk',
    ]);
    const noPsk = wgSetArgs('flannel-wg', diffPeers([want(2)], [], { persistentKeepalive: 0 }), { persistentKeepalive: 0 }, '/dev/null');
    expect(noPsk.slice(-4)).toEqual(['persistent-keepalive', 'off', 'preshared-key', '/dev/null']);
  });
});

describe('PublicKey in lease backend data', () => {
  it('round-trips through the Node annotation as flannel writes it', () => {
    const text = formatBackendData({ PublicKey: RFC_PUBLIC });
    expect(text).toBe(`{"PublicKey":"${RFC_PUBLIC}"}`);
    expect(parseBackendData(text)).toEqual({ PublicKey: RFC_PUBLIC });
    expect(parseBackendData('{"PublicKey":5}')).toMatch(/PublicKey is not a string/);
  });

  it('a Node annotated by a wireguard node (flannel or tsflannel) becomes a wireguard lease with its key', () => {
    const attrs = { publicIP: '192.168.77.2', backendType: 'wireguard' as const, backendData: { PublicKey: RFC_PUBLIC } };
    const annotations = annotationsFor(attrs);
    expect(annotations).toMatchObject({
      'flannel.alpha.coreos.com/backend-type': 'wireguard',
      'flannel.alpha.coreos.com/backend-data': `{"PublicKey":"${RFC_PUBLIC}"}`,
    });
    const got = leaseFromNode({ metadata: { name: 'n2', annotations }, spec: { podCIDR: '10.244.2.0/24' } });
    expect(got.lease).toEqual({ ...attrs, subnet: '10.244.2.0/24', nodeName: 'n2' });
  });

  it('round-trips through the etcd lease value', () => {
    const attrs = { publicIP: '192.168.77.2', backendType: 'wireguard' as const, backendData: { PublicKey: RFC_PUBLIC } };
    expect(JSON.parse(encodeLeaseAttrs(attrs))).toMatchObject({ BackendType: 'wireguard', BackendData: { PublicKey: RFC_PUBLIC } });
    expect(decodeLeaseAttrs(encodeLeaseAttrs(attrs))).toEqual(attrs);
  });
});
