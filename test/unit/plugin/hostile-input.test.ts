// The pure checks behind issue 11's hostile-input fixes: names the kernel
// would expand, echoed input capped, paths into kernel file systems, subnet
// sanity and the reference's CNI_ARGS rule.
import { describe, expect, it } from 'vitest';
import { assertKnownCniArgs, parseCniArgs, parseCommand, validateIfname } from '../../../src/cni/env.js';
import { netConfFromObject } from '../../../src/cni/config.js';
import { clip } from '../../../src/cni/validate.js';
import { parsePluginConfig } from '../../../src/plugin/config.js';
import { checkRangesInSubnet, nodeSubnet } from '../../../src/plugin/subnet.js';
import { cniErrorOf } from '../../helpers/cni-error.js';

const conf = (extra: Record<string, unknown>) =>
  netConfFromObject({ cniVersion: '1.1.0', name: 'n', type: 'tsflannel', dataDir: '/x', ...extra }, 'ADD');
const env = (network: string, subnet: string) => ({ mtu: 1450, ipMasq: true, ipv4: { network, subnet } });

describe('names with "%"', () => {
  it('refuses "%" in CNI_IFNAME (4) and in bridge (7): the kernel would pick ethN / brN itself', () => {
    expect(cniErrorOf(() => validateIfname('eth%d')).code).toBe(4);
    expect(cniErrorOf(() => parsePluginConfig(conf({ bridge: 'br%d' }))).code).toBe(7);
  });
});

describe('echoed input', () => {
  it('clip cuts at 256 UTF-8 bytes on a character boundary and marks the cut', () => {
    expect(clip('a'.repeat(256))).toBe('a'.repeat(256));
    expect(clip('a'.repeat(300))).toBe(`${'a'.repeat(256)}…`);
    expect(clip('é'.repeat(200))).toBe(`${'é'.repeat(128)}…`);
  });

  it('IPAM names and ranges are echoed short, and no error JSON carries a msg over 2 KB', async () => {
    const { HostLocalIpam } = await import('../../../src/ipam/index.js');
    const { CniError } = await import('../../../src/cni/errors.js');
    const huge = 'x'.repeat(300_000);
    const ranges = cniErrorOf(() => new HostLocalIpam({ dataDir: '/tmp', network: 'n', rangeSets: [[{ subnet: huge }]] }));
    expect(ranges.code).toBe(7);
    expect(ranges.msg.length).toBeLessThan(200);
    expect(cniErrorOf(() => new HostLocalIpam({ dataDir: '/tmp', network: `../${huge}` })).msg.length).toBeLessThan(200);
    const json = new CniError(5, `failed: ${huge}`, huge).toJSON('1.1.0');
    expect(json.msg.length).toBeLessThan(2100);
    expect(json.details!.length).toBeLessThan(2100);
  });

  it('a 1 MB bridge value gives a message of a few hundred bytes', () => {
    const { code, msg } = cniErrorOf(() => parsePluginConfig(conf({ bridge: 'b'.repeat(1 << 20) })));
    expect(code).toBe(7);
    expect(msg.length).toBeLessThan(400);
  });
});

describe('paths into kernel file systems', () => {
  it('refuses dataDir, ipam.dataDir, logFile and subnetFile under /proc or /sys with code 7 naming the key', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ dataDir: '/proc/x' }, 'dataDir'],
      [{ ipam: { dataDir: '/sys' } }, 'dataDir'],
      [{ logFile: '/proc/self/fd/1' }, 'logFile'],
      [{ subnetFile: '/sys/kernel/x' }, 'subnetFile'],
      [{ dataDir: '/tmp/../proc/x' }, 'dataDir'],
    ];
    for (const [extra, key] of cases) {
      const { code, msg } = cniErrorOf(() => parsePluginConfig(conf(extra)));
      expect(code).toBe(7);
      expect(msg).toContain(`"${key}"`);
    }
    expect(parsePluginConfig(conf({ dataDir: '/procfs/x' })).dataDir).toBe('/procfs/x');
  });
});

describe('dns', () => {
  it('refuses a nameserver that is not an IP address', () => {
    expect(cniErrorOf(() => parsePluginConfig(conf({ dns: { nameservers: ['10.0.0.10', 'dns.example'] } }))).msg).toContain('dns.nameservers[1]');
    expect(parsePluginConfig(conf({ dns: { nameservers: ['10.0.0.10', 'fd00::a'] } })).dns?.nameservers).toHaveLength(2);
  });
});

describe('node subnet', () => {
  it('keeps the gateway flanneld writes', () => {
    expect(nodeSubnet(env('10.244.0.0/16', '10.244.5.1/24'), 'f')).toEqual({
      mtu: 1450,
      families: [{ family: 4, clusterNetwork: '10.244.0.0/16', network: '10.244.5.0/24', gateway: '10.244.5.1', gatewayCidr: '10.244.5.1/24' }],
    });
  });

  it('gives a subnet written as its network address the first host as gateway, as flannel does', () => {
    expect(nodeSubnet(env('10.244.0.0/16', '10.244.5.0/24'), 'f').families[0]!.gatewayCidr).toBe('10.244.5.1/24');
  });

  it('refuses a subnet outside the cluster network, in special blocks, too small, or named by its broadcast address', () => {
    const bad: [string, string, string][] = [
      ['10.244.0.0/16', '10.245.5.1/24', 'not inside FLANNEL_NETWORK'],
      ['127.0.0.0/8', '127.0.5.1/24', 'loopback'],
      ['169.254.0.0/16', '169.254.5.1/24', 'link-local'],
      ['224.0.0.0/4', '224.0.5.1/24', 'multicast'],
      ['0.0.0.0/0', '10.1.0.1/24', 'FLANNEL_NETWORK'],
      ['10.244.0.0/16', '10.244.5.1/31', 'too small'],
      ['10.244.0.0/16', '10.244.5.255/24', 'broadcast'],
    ];
    for (const [network, subnet, words] of bad) {
      const { code, msg } = cniErrorOf(() => nodeSubnet(env(network, subnet), '/run/flannel/subnet.env'));
      expect(code).toBe(7);
      expect(msg).toContain(words);
    }
  });

  it('refuses explicit ranges outside the node subnet', () => {
    const s = nodeSubnet(env('10.244.0.0/16', '10.244.5.1/24'), 'f');
    expect(cniErrorOf(() => checkRangesInSubnet([[{ subnet: '10.244.6.0/24' }]], s)).msg).toContain('ipam.ranges[0][0].subnet');
    expect(() => checkRangesInSubnet([[{ subnet: '10.244.5.0/25' }]], s)).not.toThrow();
  });
});

describe('CNI_COMMAND and CNI_ARGS', () => {
  it('answers an empty or unknown CNI_COMMAND with code 4', () => {
    expect(cniErrorOf(() => parseCommand({ CNI_COMMAND: '' })).code).toBe(4);
    expect(cniErrorOf(() => parseCommand({ CNI_COMMAND: 'add' })).code).toBe(4);
  });

  it('refuses unknown CNI_ARGS keys in the reference wording unless IgnoreUnknown is set', () => {
    const { code, msg } = cniErrorOf(() => assertKnownCniArgs(parseCniArgs('FOO=1;BAR=2;K8S_POD_NAME=p'), ['K8S_POD_NAME']));
    expect(code).toBe(4);
    expect(msg).toBe('ARGS: unknown args ["FOO" "BAR"]');
    expect(() => assertKnownCniArgs(parseCniArgs('IgnoreUnknown=1;FOO=1'), [])).not.toThrow();
  });
});
