// Requested IPs as the reference host-local honours them: where they come
// from (CNI_ARGS IP=, args.cni.ips, runtimeConfig.ips) and what allocation
// does with them (take exactly that address, or fail with host-local's words).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CniError } from '../../../src/cni/errors.js';
import { HostLocalIpam, requestedIps, type IpamRange } from '../../../src/ipam/index.js';
import { formatIp, parseIp, type Ip } from '../../../src/net/ip.js';

const ip = (text: string): Ip => parseIp(text)!;
const texts = (list: Ip[]) => list.map(formatIp);

describe('requestedIps: the three sources', () => {
  const none = { cniArgs: {}, conf: {}, runtimeConfig: {} };

  it('reads none when nothing asks', () => {
    expect(requestedIps(none)).toEqual([]);
  });

  it('reads CNI_ARGS IP= as one address or a comma list, bare or with a prefix', () => {
    expect(texts(requestedIps({ ...none, cniArgs: { IP: '10.244.1.9' } }))).toEqual(['10.244.1.9']);
    expect(texts(requestedIps({ ...none, cniArgs: { IP: '10.244.1.9/24, fd00:10:244:1::9' } }))).toEqual(['10.244.1.9', 'fd00:10:244:1::9']);
  });

  it('reads args.cni.ips and runtimeConfig.ips, after CNI_ARGS, each address once', () => {
    const got = requestedIps({
      cniArgs: { IP: '10.244.1.9' },
      conf: { args: { cni: { ips: ['fd00:10:244:1:0:0:0:9/64', '10.244.1.9'] } } },
      runtimeConfig: { ips: ['10.244.1.10'] },
    });
    expect(texts(got)).toEqual(['10.244.1.9', 'fd00:10:244:1::9', '10.244.1.10']);
  });

  it('reads ::ffff:a.b.c.d as the IPv4 address, as Go does', () => {
    expect(requestedIps({ ...none, cniArgs: { IP: '::ffff:10.244.1.9' } })).toEqual([ip('10.244.1.9')]);
  });

  it('refuses a malformed address: code 4 from CNI_ARGS, 7 from the config, naming where', () => {
    const e1 = catchCni(() => requestedIps({ ...none, cniArgs: { IP: '10.244.1.300' } }));
    expect([e1.code, e1.message]).toEqual([4, 'CNI_ARGS IP: invalid IP address "10.244.1.300"']);
    const e2 = catchCni(() => requestedIps({ ...none, conf: { args: { cni: { ips: ['10.1.1.1', 7] } } } }));
    expect(e2.code).toBe(7);
    expect(e2.message).toContain('args.cni.ips[1]');
    const e3 = catchCni(() => requestedIps({ ...none, runtimeConfig: { ips: '10.1.1.1' } }));
    expect(e3.code).toBe(7);
    expect(e3.message).toContain('runtimeConfig.ips must be a list');
  });
});

/** The CniError `p` rejects with; resolving is a test failure. */
async function failure(p: Promise<unknown>): Promise<CniError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error('expected a CniError');
}

function catchCni(fn: () => unknown): CniError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error('expected a CniError');
}

describe('HostLocalIpam.allocate with requested IPs', () => {
  let dataDir: string;
  const dual: IpamRange[][] = [[{ subnet: '10.9.0.0/24' }], [{ subnet: 'fd00:9::/64' }]];
  const ipam = (sets: IpamRange[][] = dual) => new HostLocalIpam({ dataDir, network: 'net1', rangeSets: sets });
  const files = async () => (await readdir(path.join(dataDir, 'net1'))).filter((f) => parseIp(f)).sort();

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'tsf-req-'));
  });
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('gives each range set the requested address of its family, and round-robin continues after it', async () => {
    const got = await ipam().allocate('c1', 'eth0', [ip('fd00:9::50'), ip('10.9.0.50')]);
    expect(got.map((a) => a.address)).toEqual(['10.9.0.50/24', 'fd00:9::50/64']);
    expect(await readFile(path.join(dataDir, 'net1', 'last_reserved_ip.1'), 'utf8')).toBe('fd00:9::50');
    const next = await ipam().allocate('c2', 'eth0');
    expect(next.map((a) => a.address)).toEqual(['10.9.0.51/24', 'fd00:9::51/64']);
  });

  it('requests one family and lets the other be picked', async () => {
    const got = await ipam().allocate('c1', 'eth0', [ip('fd00:9::77')]);
    expect(got.map((a) => a.address)).toEqual(['10.9.0.2/24', 'fd00:9::77/64']);
  });

  it('fails for an address another container holds, with host-local\'s words, and takes nothing', async () => {
    await ipam().allocate('c1', 'eth0', [ip('10.9.0.50')]);
    const before = await files();
    const err = await failure(ipam().allocate('c2', 'eth0', [ip('10.9.0.50')]));
    expect(err).toBeInstanceOf(CniError);
    expect(err.message).toBe('failed to allocate for range 0: requested IP address 10.9.0.50 is not available in range set 10.9.0.1-10.9.0.254');
    expect(err.code).toBe(999);
    expect(await files()).toEqual(before);
  });

  it('fails for an address outside every range set, after undoing the sets it had filled', async () => {
    const err = await failure(ipam().allocate('c1', 'eth0', [ip('10.8.0.5')]));
    expect(err.message).toBe('failed to allocate all requested IPs: 10.8.0.5');
    expect(await files()).toEqual([]);
    const out = await failure(ipam([[{ subnet: '10.9.0.0/24', rangeStart: '10.9.0.100' }]])
      .allocate('c1', 'eth0', [ip('10.9.0.5')]));
    expect(out.message).toBe('failed to allocate all requested IPs: 10.9.0.5');
  });

  it('fails for the gateway, the network address and the IPv4 broadcast', async () => {
    const gw = await failure(ipam().allocate('c1', 'eth0', [ip('fd00:9::1')]));
    expect(gw.message).toBe("failed to allocate for range 1: requested ip fd00:9::1 is subnet's gateway");
    const sets: IpamRange[][] = [[{ subnet: '10.9.0.0/24', rangeStart: '10.9.0.0', rangeEnd: '10.9.0.255' }]];
    for (const bad of ['10.9.0.0', '10.9.0.255']) {
      const err = await failure(ipam(sets).allocate('c1', 'eth0', [ip(bad)]));
      expect(err.message).toContain(`requested IP address ${bad} is not available`);
    }
    expect(await files()).toEqual([]);
  });

  it('fails for two requested addresses in one range set (the second is left over)', async () => {
    const err = await failure(ipam().allocate('c1', 'eth0', [ip('10.9.0.7'), ip('10.9.0.8')]));
    expect(err.message).toBe('failed to allocate all requested IPs: 10.9.0.8');
    expect(await files()).toEqual([]);
  });

  it('returns the lease a retried call already holds when it is the requested one, and refuses another', async () => {
    const first = await ipam().allocate('c1', 'eth0', [ip('10.9.0.50')]);
    const again = await ipam().allocate('c1', 'eth0', [ip('10.9.0.50')]);
    expect(again.map((a) => [a.address, a.created])).toEqual(first.map((a) => [a.address, false]));
    const other = await failure(ipam().allocate('c1', 'eth0', [ip('10.9.0.60')]));
    expect(other.message).toContain('requested IP address 10.9.0.60 conflicts with 10.9.0.50');
    expect(await files()).toEqual(['10.9.0.50', 'fd00:9::2']);
  });

  it('release(only) removes just the named leases of the attachment (an undo keeps what it found)', async () => {
    await ipam([[{ subnet: '10.9.0.0/24' }]]).allocate('c1', 'eth0');
    const [, v6] = await ipam().allocate('c1', 'eth0');
    expect(v6!.created).toBe(true);
    expect(await ipam().release('c1', 'eth0', ['fd00:9::2'])).toEqual(['fd00:9::2']);
    expect(await files()).toEqual(['10.9.0.2']);
    expect(await ipam().release('c1', 'eth0', ['10.9.0.99'])).toEqual([]);
    expect(await files()).toEqual(['10.9.0.2']);
  });
});
