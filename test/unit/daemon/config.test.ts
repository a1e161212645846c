import { describe, expect, it } from 'vitest';
import { ConfigError, parseNetworkConfig } from '../../../src/daemon/config.js';

function errorOf(conf: unknown): string {
  const text = typeof conf === 'string' ? conf : JSON.stringify(conf);
  try {
    parseNetworkConfig(text);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error(`expected a ConfigError for ${text}`);
}

describe('parseNetworkConfig defaults', () => {
  it('fills in flannel defaults for the shipped ConfigMap', () => {
    const conf = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableNFTables": false, "Backend": {"Type": "vxlan"}}');
    expect(conf).toEqual({
      network: '10.244.0.0/16',
      subnetLen: 24,
      subnetMin: '10.244.1.0',
      subnetMax: '10.244.255.0',
      enableIPv4: true,
      enableIPv6: false,
      enableNFTables: false,
      backend: { type: 'vxlan', vni: 1, port: 8472, directRouting: false },
    });
  });

  it('reads EnableNFTables (any case, default false) and rejects a non-boolean', () => {
    expect(parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableNFTables": true}').enableNFTables).toBe(true);
    expect(parseNetworkConfig('{"Network": "10.244.0.0/16", "enablenftables": true}').enableNFTables).toBe(true);
    expect(parseNetworkConfig('{"Network": "10.244.0.0/16"}').enableNFTables).toBe(false);
    expect(() => parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableNFTables": "yes"}')).toThrow(/"EnableNFTables" must be true or false/);
  });

  it('defaults the backend to vxlan when Backend is absent (not udp as flannel code does)', () => {
    expect(parseNetworkConfig('{"Network": "10.244.0.0/16"}').backend).toEqual({ type: 'vxlan', vni: 1, port: 8472, directRouting: false });
    expect(parseNetworkConfig('{"Network": "10.244.0.0/16", "Backend": {}}').backend.type).toBe('vxlan');
  });

  it('derives SubnetLen from the network prefix as flannel does', () => {
    const cases: [string, number, string, string][] = [
      ['10.0.0.0/8', 24, '10.0.1.0', '10.255.255.0'],
      ['10.244.0.0/22', 24, '10.244.1.0', '10.244.3.0'],
      ['10.244.0.0/23', 25, '10.244.0.128', '10.244.1.128'],
      ['10.244.0.0/24', 26, '10.244.0.64', '10.244.0.192'],
      ['10.244.0.0/28', 30, '10.244.0.4', '10.244.0.12'],
    ];
    for (const [network, len, min, max] of cases) {
      const conf = parseNetworkConfig(JSON.stringify({ Network: network }));
      expect([conf.subnetLen, conf.subnetMin, conf.subnetMax], network).toEqual([len, min, max]);
    }
  });

  it('derives SubnetMin/SubnetMax from an explicit SubnetLen', () => {
    const conf = parseNetworkConfig('{"Network": "10.10.0.0/16", "SubnetLen": 20}');
    expect([conf.subnetMin, conf.subnetMax]).toEqual(['10.10.16.0', '10.10.240.0']);
  });

  it('keeps only the network part of a Network with host bits (Go ParseCIDR)', () => {
    expect(parseNetworkConfig('{"Network": "10.244.7.9/16"}').network).toBe('10.244.0.0/16');
  });

  it('accepts explicit bounds and backend options, keys in any case', () => {
    const conf = parseNetworkConfig(
      JSON.stringify({
        network: '10.5.0.0/16',
        subnetlen: 24,
        SubnetMin: '10.5.10.0',
        SUBNETMAX: '10.5.20.0',
        Backend: { type: 'vxlan', vni: 4096, port: 4789, mtu: 1400, DirectRouting: true, GBP: false },
      }),
    );
    expect(conf).toMatchObject({
      network: '10.5.0.0/16',
      subnetLen: 24,
      subnetMin: '10.5.10.0',
      subnetMax: '10.5.20.0',
      backend: { type: 'vxlan', vni: 4096, port: 4789, mtu: 1400, directRouting: true },
    });
  });

  it('treats Port 0 and MTU 0 as "automatic", as flannel does', () => {
    const conf = parseNetworkConfig('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Port": 0, "MTU": 0}}');
    expect(conf.backend).toEqual({ type: 'vxlan', vni: 1, port: 8472, directRouting: false });
  });

  it('parses host-gw', () => {
    expect(parseNetworkConfig('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}').backend).toEqual({ type: 'host-gw' });
  });

  it('parses dual stack and IPv6-only', () => {
    const dual = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "FD00:10:244::1/56"}');
    expect([dual.enableIPv4, dual.enableIPv6, dual.ipv6Network]).toEqual([true, true, 'fd00:10:244::/56']);
    const v6only = parseNetworkConfig('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/48"}');
    expect(v6only).toMatchObject({ enableIPv4: false, enableIPv6: true, ipv6Network: 'fd00::/48', network: '' });
    // IPv6Network without EnableIPv6 is checked but not used.
    expect(parseNetworkConfig('{"Network": "10.244.0.0/16", "IPv6Network": "fd00::/48"}').ipv6Network).toBeUndefined();
  });

  it("fills in flannel's IPv6 defaults: /64 nodes, skipping the first subnet, up to the last", () => {
    const dual = parseNetworkConfig('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56"}');
    expect(dual).toEqual({
      network: '10.244.0.0/16',
      subnetLen: 24,
      subnetMin: '10.244.1.0',
      subnetMax: '10.244.255.0',
      enableIPv4: true,
      enableIPv6: true,
      ipv6Network: 'fd00:10:244::/56',
      ipv6SubnetLen: 64,
      ipv6SubnetMin: 'fd00:10:244:1::',
      ipv6SubnetMax: 'fd00:10:244:ff::',
      enableNFTables: false,
      backend: { type: 'vxlan', vni: 1, port: 8472, directRouting: false },
    });
  });

  it('gives an IPv6Network smaller than /62 four subnets, as flannel does (prefix + 2)', () => {
    const c = parseNetworkConfig('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/120"}');
    expect([c.ipv6SubnetLen, c.ipv6SubnetMin, c.ipv6SubnetMax]).toEqual([122, 'fd00::40', 'fd00::c0']);
    const smallest = parseNetworkConfig('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/124"}');
    expect(smallest.ipv6SubnetLen).toBe(126);
    const at62 = parseNetworkConfig('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/62"}');
    expect([at62.ipv6SubnetLen, at62.ipv6SubnetMin, at62.ipv6SubnetMax]).toEqual([64, 'fd00:0:0:1::', 'fd00:0:0:3::']);
  });

  it('takes explicit IPv6SubnetLen / IPv6SubnetMin / IPv6SubnetMax, keys in any case', () => {
    const c = parseNetworkConfig(
      JSON.stringify({ EnableIPv4: false, enableipv6: true, ipv6network: 'fd00:10::/48', IPV6SUBNETLEN: 80, IPv6SubnetMin: 'fd00:10:0:5::', ipv6subnetmax: 'fd00:10:0:9::' }),
    );
    expect(c).toMatchObject({ ipv6Network: 'fd00:10::/48', ipv6SubnetLen: 80, ipv6SubnetMin: 'fd00:10:0:5::', ipv6SubnetMax: 'fd00:10:0:9::' });
  });

  it('makes an IPv6-only config carry no IPv4 network, even when Network is written', () => {
    const c = parseNetworkConfig('{"EnableIPv4": false, "EnableIPv6": true, "Network": "10.244.0.0/16", "IPv6Network": "fd00::/48"}');
    expect(c).toMatchObject({ network: '', subnetLen: 0, subnetMin: '', subnetMax: '', ipv6Network: 'fd00::/48', ipv6SubnetLen: 64 });
  });
});

describe('parseNetworkConfig errors name their field', () => {
  const cases: [string, unknown, RegExp][] = [
    ['not JSON', '{"Network": ', /not valid JSON/],
    ['not an object', '[1]', /must be a JSON object/],
    ['missing Network', {}, /"Network" is required/],
    ['Network not a string', { Network: 10 }, /"Network" must be a string/],
    ['Network not a CIDR', { Network: '10.244.0.0' }, /"Network" must be an IPv4 CIDR/],
    ['Network IPv6', { Network: 'fd00::/48' }, /"Network" must be an IPv4 CIDR/],
    ['Network too small', { Network: '10.244.0.0/29' }, /"Network" is too small/],
    ['SubnetLen above 30', { Network: '10.244.0.0/16', SubnetLen: 31 }, /"SubnetLen" must be at most 30/],
    ['SubnetLen not a number', { Network: '10.244.0.0/16', SubnetLen: '24' }, /"SubnetLen" must be an integer/],
    ['SubnetLen fractional', { Network: '10.244.0.0/16', SubnetLen: 24.5 }, /"SubnetLen" must be an integer/],
    ['SubnetLen negative', { Network: '10.244.0.0/16', SubnetLen: -1 }, /"SubnetLen" must be an integer/],
    ['SubnetLen below the prefix', { Network: '10.244.0.0/16', SubnetLen: 8 }, /"SubnetLen" must be at least 18/],
    ['SubnetLen leaving < 4 subnets', { Network: '10.244.0.0/16', SubnetLen: 17 }, /"SubnetLen" must be at least 18/],
    ['SubnetMin outside', { Network: '10.244.0.0/16', SubnetMin: '10.245.1.0' }, /"SubnetMin" 10.245.1.0 is outside Network/],
    ['SubnetMax outside', { Network: '10.244.0.0/16', SubnetMax: '10.0.0.0' }, /"SubnetMax" 10.0.0.0 is outside Network/],
    ['SubnetMin unaligned', { Network: '10.244.0.0/16', SubnetMin: '10.244.1.5' }, /"SubnetMin" .* not the start of a \/24/],
    ['SubnetMax unaligned', { Network: '10.244.0.0/16', SubnetLen: 20, SubnetMax: '10.244.8.0' }, /"SubnetMax" .* not the start of a \/20/],
    ['SubnetMin not an IP', { Network: '10.244.0.0/16', SubnetMin: 'ten' }, /"SubnetMin" must be an IPv4 address/],
    ['SubnetMin above SubnetMax', { Network: '10.244.0.0/16', SubnetMin: '10.244.9.0', SubnetMax: '10.244.3.0' }, /"SubnetMin" 10.244.9.0 is above SubnetMax/],
    ['EnableIPv4 not bool', { Network: '10.244.0.0/16', EnableIPv4: 'yes' }, /"EnableIPv4" must be true or false/],
    ['no family', { Network: '10.244.0.0/16', EnableIPv4: false }, /"EnableIPv4" is false and so is EnableIPv6/],
    ['IPv6Network missing', { Network: '10.244.0.0/16', EnableIPv6: true }, /"IPv6Network" is required/],
    ['IPv6Network v4', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: '10.0.0.0/8' }, /"IPv6Network" must be an IPv6 CIDR/],
    ['IPv6Network too small', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/125' }, /"IPv6Network" is too small/],
    ['IPv6SubnetLen leaving < 4 subnets', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/64', IPv6SubnetLen: 64 }, /"IPv6SubnetLen" must be at least 66 so that IPv6Network fd00::\/64 holds four or more subnets, got 64/],
    ['IPv6SubnetLen above 126', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', IPv6SubnetLen: 127 }, /"IPv6SubnetLen" must be at most 126, got 127/],
    ['IPv6SubnetLen above 128', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', IPv6SubnetLen: 129 }, /"IPv6SubnetLen" must be an integer from 0 to 128/],
    ['IPv6SubnetLen not a number', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', IPv6SubnetLen: '64' }, /"IPv6SubnetLen" must be an integer/],
    ['IPv6SubnetMin outside', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', IPv6SubnetMin: 'fd01::' }, /"IPv6SubnetMin" fd01:: is outside IPv6Network fd00::\/56/],
    ['IPv6SubnetMax unaligned', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', IPv6SubnetMax: 'fd00:0:0:7::1' }, /"IPv6SubnetMax" fd00:0:0:7::1 is not the start of a \/64 subnet \(IPv6SubnetLen\)/],
    ['IPv6SubnetMin IPv4', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', IPv6SubnetMin: '10.244.1.0' }, /"IPv6SubnetMin" must be an IPv6 address/],
    ['IPv6SubnetMin above IPv6SubnetMax', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', IPv6SubnetMin: 'fd00:0:0:9::', IPv6SubnetMax: 'fd00:0:0:3::' }, /"IPv6SubnetMin" fd00:0:0:9:: is above IPv6SubnetMax fd00:0:0:3::/],
    ['IPv6Network not a string', { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 56 }, /"IPv6Network" must be a string/],
    ['IPv6Network garbage while disabled', { Network: '10.244.0.0/16', IPv6Network: 'fd00::/129' }, /"IPv6Network" must be an IPv6 CIDR/],
    ['IPv6-only without IPv6Network', { EnableIPv4: false, EnableIPv6: true }, /"IPv6Network" is required when EnableIPv6 is true/],
    ['EnableIPv6 not bool', { Network: '10.244.0.0/16', EnableIPv6: 'true' }, /"EnableIPv6" must be true or false/],
    ['Backend not object', { Network: '10.244.0.0/16', Backend: 'vxlan' }, /"Backend" must be an object/],
    ['unknown backend', { Network: '10.244.0.0/16', Backend: { Type: 'ipsec' } }, /"Backend.Type" "ipsec" is not supported \(supported: vxlan, host-gw, wireguard\)/],
    ['udp backend', { Network: '10.244.0.0/16', Backend: { Type: 'udp' } }, /"Backend.Type" "udp" is not supported/],
    ['Type not a string', { Network: '10.244.0.0/16', Backend: { Type: 1 } }, /"Backend.Type" must be a string/],
    ['VNI 0', { Network: '10.244.0.0/16', Backend: { VNI: 0 } }, /"Backend.VNI" must be an integer from 1 to 16777215/],
    ['VNI too big', { Network: '10.244.0.0/16', Backend: { VNI: 2 ** 24 } }, /"Backend.VNI" must be an integer from 1/],
    ['Port too big', { Network: '10.244.0.0/16', Backend: { Port: 70000 } }, /"Backend.Port" must be an integer from 0 to 65535/],
    ['MTU too small', { Network: '10.244.0.0/16', Backend: { MTU: 60 } }, /"Backend.MTU" must be at least 68/],
    ['DirectRouting not bool', { Network: '10.244.0.0/16', Backend: { DirectRouting: 1 } }, /"Backend.DirectRouting" must be true or false/],
    ['GBP on', { Network: '10.244.0.0/16', Backend: { GBP: true } }, /"Backend.GBP" is not supported/],
    ['Learning on', { Network: '10.244.0.0/16', Backend: { Learning: true } }, /"Backend.Learning" is not supported/],
  ];
  for (const [name, conf, want] of cases) {
    it(name, () => {
      const msg = errorOf(conf);
      expect(msg).toMatch(/^net-conf\.json: /);
      expect(msg).toMatch(want);
    });
  }
});
