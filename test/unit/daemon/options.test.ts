import { describe, expect, it } from 'vitest';
import { HelpShown, OptionsError, parseAgentOptions } from '../../../src/daemon/options.js';

describe('tsflanneld options', () => {
  it('has flannel defaults', () => {
    const o = parseAgentOptions([], { NODE_NAME: 'n1' });
    expect(o).toMatchObject({
      iface: [], ifaceRegex: [], ipMasq: false, kubeSubnetMgr: false, etcdEndpoints: ['http://127.0.0.1:2379'],
      etcdPrefix: '/coreos.com/network', subnetFile: '/run/flannel/subnet.env', nodeName: 'n1',
      healthzIP: '127.0.0.1', healthzPort: 0,
    });
  });

  it('takes repeatable --iface, comma-separated etcd endpoints and --kube-subnet-mgr', () => {
    const o = parseAgentOptions(
      ['--iface', 'eth1', '--iface', '10.0.0.5', '--etcd-endpoints', 'http://a:2379, http://b:2379', '--kube-subnet-mgr', '--ip-masq', '--node-name', 'x'],
      {},
    );
    expect(o.iface).toEqual(['eth1', '10.0.0.5']);
    expect(o.etcdEndpoints).toEqual(['http://a:2379', 'http://b:2379']);
    expect(o.kubeSubnetMgr).toBe(true);
    expect(o.ipMasq).toBe(true);
    expect(o.nodeName).toBe('x');
  });

  it.each([
    [['--healthz-port', '70000'], /--healthz-port/],
    [['--resync-period', '0'], /--resync-period/],
    [['--iface-regex', '(['], /--iface-regex/],
    [['--no-such-flag'], /Unknown argument/],
    [['--log-level', 'loud'], /log-level/],
  ])('rejects %j naming the flag', (argv, message) => {
    expect(() => parseAgentOptions(argv, {})).toThrow(OptionsError);
    expect(() => parseAgentOptions(argv, {})).toThrow(message);
  });

  it('keeps peers 30 s after a store loss by default and cleans up only when asked', () => {
    expect(parseAgentOptions([], {})).toMatchObject({ storeLossGraceSeconds: 30, cleanup: false });
    expect(parseAgentOptions(['--store-loss-grace', '5', '--cleanup'], {})).toMatchObject({ storeLossGraceSeconds: 5, cleanup: true });
    expect(() => parseAgentOptions(['--store-loss-grace', '-1'], {})).toThrow(/--store-loss-grace/);
  });

  it('signals --help so the agent does not start', () => {
    const write = process.stdout.write;
    process.stdout.write = (() => true) as typeof process.stdout.write;
    try {
      expect(() => parseAgentOptions(['--help'], {})).toThrow(HelpShown);
    } finally {
      process.stdout.write = write;
    }
  });
});
