import { describe, expect, it } from 'vitest';
import { CniError } from '../../../src/cni/errors.js';
import { formatResult, parsePrevResult, type Result } from '../../../src/cni/result.js';
import { SUPPORTED_VERSIONS } from '../../../src/cni/versions.js';

const full: Result = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'cni0', mac: '0a:58:0a:f4:01:01', mtu: 1450 },
    { name: 'veth1234', mac: '12:b2:cc:7f:17:f0' },
    { name: 'eth0', mac: '82:0d:51:b8:83:9d', sandbox: '/var/run/netns/p1', mtu: 1450, socketPath: '/run/x.sock', pciID: '0000:00:1f.6' },
  ],
  ips: [
    { address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 2 },
    { address: 'fd00:1::5/64', gateway: 'fd00:1::1', interface: 2 },
  ],
  routes: [
    { dst: '10.244.0.0/16', gw: '10.244.1.1', mtu: 1400, advmss: 1360, priority: 10, table: 0, scope: 0 },
    { dst: '0.0.0.0/0', gw: '10.244.1.1' },
  ],
  dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
};

describe('formatResult', () => {
  it('1.1.0 keeps every field, including table/scope 0', () => {
    const out = formatResult(full, '1.1.0');
    expect(out).toEqual({
      cniVersion: '1.1.0',
      interfaces: full.interfaces,
      ips: full.ips,
      routes: full.routes,
      dns: full.dns,
    });
  });

  it('1.0.0 drops the 1.1 interface and route fields', () => {
    const out = formatResult(full, '1.0.0');
    expect(out.cniVersion).toBe('1.0.0');
    expect(out.interfaces).toEqual([
      { name: 'cni0', mac: '0a:58:0a:f4:01:01' },
      { name: 'veth1234', mac: '12:b2:cc:7f:17:f0' },
      { name: 'eth0', mac: '82:0d:51:b8:83:9d', sandbox: '/var/run/netns/p1' },
    ]);
    expect(out.routes).toEqual([
      { dst: '10.244.0.0/16', gw: '10.244.1.1' },
      { dst: '0.0.0.0/0', gw: '10.244.1.1' },
    ]);
    expect(out.ips).toEqual(full.ips);
  });

  it.each(['0.3.0', '0.3.1', '0.4.0'] as const)('%s tags ips with their family', (v) => {
    const out = formatResult(full, v);
    expect(out.cniVersion).toBe(v);
    expect(out.ips).toEqual([
      { version: '4', address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 2 },
      { version: '6', address: 'fd00:1::5/64', gateway: 'fd00:1::1', interface: 2 },
    ]);
    expect((out.interfaces as object[])[2]).toEqual({ name: 'eth0', mac: '82:0d:51:b8:83:9d', sandbox: '/var/run/netns/p1' });
    expect((out.routes as object[])[0]).toEqual({ dst: '10.244.0.0/16', gw: '10.244.1.1' });
  });

  it('1.x never carries ips[].version', () => {
    for (const v of ['1.0.0', '1.1.0'] as const) {
      for (const ip of formatResult(full, v).ips as Record<string, unknown>[]) expect(ip).not.toHaveProperty('version');
    }
  });

  it('omits empty and undefined fields, keeps interface index 0', () => {
    const out = formatResult(
      {
        cniVersion: '1.1.0',
        interfaces: [{ name: 'eth0', mac: '', sandbox: undefined, mtu: 0 }],
        ips: [{ address: '10.0.0.2/24', interface: 0 }],
        routes: [],
        dns: { nameservers: [], search: undefined },
      },
      '1.1.0',
    );
    expect(out).toEqual({ cniVersion: '1.1.0', interfaces: [{ name: 'eth0' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] });
    expect(formatResult({ cniVersion: '1.1.0' }, '0.3.1')).toEqual({ cniVersion: '0.3.1' });
  });

  it('sets cniVersion to the requested version whatever the input says', () => {
    expect(formatResult({ ...full, cniVersion: '0.3.1' }, '1.1.0').cniVersion).toBe('1.1.0');
  });

  it('survives JSON round-trips in every version', () => {
    for (const v of SUPPORTED_VERSIONS) {
      const wire = formatResult(full, v);
      expect(JSON.parse(JSON.stringify(wire))).toEqual(wire);
    }
  });

  it('refuses a handler result libcni would reject, with code 999', () => {
    const bad = [
      { ...full, ips: [{ address: '10.244.1.5' }] },
      { ...full, ips: [{ address: '10.244.1.5/24', gateway: 'nope' }] },
      { ...full, routes: [{ dst: 'default' }] },
      { ...full, interfaces: [{ name: '' }] },
      { ...full, ips: [{ address: '10.244.1.5/24', interface: -1 }] },
    ] as Result[];
    for (const r of bad) {
      const err = (() => {
        try {
          formatResult(r, '1.1.0');
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(CniError);
      expect((err as CniError).code).toBe(999);
    }
  });
});

describe('parsePrevResult', () => {
  it('reads a 0.3.1 result into the internal shape (version field dropped)', () => {
    const raw = {
      cniVersion: '0.3.1',
      interfaces: [{ name: 'cni0', mac: 'aa:bb:cc:dd:ee:ff' }, { name: 'eth0', sandbox: '/run/netns/x' }],
      ips: [{ version: '4', address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 1 }],
      routes: [{ dst: '0.0.0.0/0' }],
      dns: {},
    };
    expect(parsePrevResult(raw, '0.3.1')).toEqual({
      cniVersion: '0.3.1',
      interfaces: [{ name: 'cni0', mac: 'aa:bb:cc:dd:ee:ff' }, { name: 'eth0', sandbox: '/run/netns/x' }],
      ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 1 }],
      routes: [{ dst: '0.0.0.0/0' }],
    });
  });

  it('round-trips every version through formatResult', () => {
    for (const v of SUPPORTED_VERSIONS) {
      const wire = JSON.parse(JSON.stringify(formatResult(full, v))) as unknown;
      const back = parsePrevResult(wire, v);
      expect(formatResult(back, v)).toEqual(formatResult(full, v));
      expect(back.cniVersion).toBe(v);
    }
    // 1.1.0 loses nothing.
    expect(parsePrevResult(JSON.parse(JSON.stringify(formatResult(full, '1.1.0'))), '1.1.0')).toEqual(full);
  });

  it('accepts a result in another supported version than the config and takes the config version', () => {
    const back = parsePrevResult(formatResult(full, '1.1.0'), '0.4.0');
    expect(back.cniVersion).toBe('0.4.0');
    expect(back.routes?.[0]?.mtu).toBe(1400);
  });

  it('fills a missing cniVersion with the config version and ignores unknown keys', () => {
    expect(parsePrevResult({ ips: [{ address: '10.0.0.2/8' }], extra: 1 }, '1.0.0')).toEqual({
      cniVersion: '1.0.0',
      ips: [{ address: '10.0.0.2/8' }],
    });
    expect(parsePrevResult({}, '1.1.0')).toEqual({ cniVersion: '1.1.0' });
  });

  it.each([
    ['a list', [], /prevResult: expected an object/],
    ['a string', 'x', /prevResult: expected an object/],
    ['an unsupported version', { cniVersion: '0.2.0', ip4: {} }, /prevResult\.cniVersion "0\.2\.0"/],
    ['a numeric version', { cniVersion: 1 }, /prevResult\.cniVersion/],
    ['ips not a list', { ips: {} }, /prevResult\.ips: expected a list/],
    ['an ips entry not an object', { ips: ['10.0.0.1/8'] }, /prevResult\.ips\[0\]: expected an object/],
    ['an address without prefix', { ips: [{ address: '10.0.0.1' }] }, /prevResult\.ips\[0\]\.address: expected an IP address in CIDR form, got "10\.0\.0\.1"/],
    ['a missing address', { ips: [{ gateway: '10.0.0.1' }] }, /prevResult\.ips\[0\]\.address is missing/],
    ['a bad gateway', { ips: [{ address: '10.0.0.2/8', gateway: '10.0.0.300' }] }, /ips\[0\]\.gateway/],
    ['a fractional interface index', { ips: [{ address: '10.0.0.2/8', interface: 1.5 }] }, /ips\[0\]\.interface/],
    ['a bad route dst', { routes: [{ dst: '10.0.0.0/40' }] }, /routes\[0\]\.dst/],
    ['a bad route gw', { routes: [{ dst: '0.0.0.0/0', gw: 7 }] }, /routes\[0\]\.gw: expected a string/],
    ['an interface without name', { interfaces: [{ mac: 'aa:bb:cc:dd:ee:ff' }] }, /interfaces\[0\]\.name is missing/],
    ['a negative mtu', { interfaces: [{ name: 'x', mtu: -1 }] }, /interfaces\[0\]\.mtu/],
    ['a bad scope', { routes: [{ dst: '0.0.0.0/0', scope: 256 }] }, /routes\[0\]\.scope/],
    ['dns not an object', { dns: [] }, /prevResult\.dns: expected an object/],
    ['nameservers not strings', { dns: { nameservers: [1] } }, /dns\.nameservers: expected a list of strings/],
  ])('rejects %s with code 7 naming the field', (_n, raw, msg) => {
    let err: unknown;
    try {
      parsePrevResult(raw, '1.1.0');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).code).toBe(7);
    expect((err as CniError).message).toMatch(msg);
  });
});
