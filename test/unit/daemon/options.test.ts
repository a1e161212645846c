import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { defaultCniWorkers, envName, FLAGS, HelpShown, OptionsError, parseAgentOptions, VersionShown } from '../../../src/daemon/options.js';
import { VERSION } from '../../../src/version.js';

describe('tsflanneld options', () => {
  it('has flannel defaults', () => {
    const o = parseAgentOptions([], { NODE_NAME: 'n1' });
    expect(o).toMatchObject({
      iface: [], ifaceRegex: [], ipMasq: false, kubeSubnetMgr: false, etcdEndpoints: ['http://127.0.0.1:2379'],
      etcdPrefix: '/coreos.com/network', subnetFile: '/run/flannel/subnet.env', nodeName: 'n1',
      healthzIP: '127.0.0.1', healthzPort: 0,
      // flannel's names and defaults
      kubeAnnotationPrefix: 'flannel.alpha.coreos.com',
      setNodeNetworkUnavailable: true,
      subnetLeaseRenewMarginMinutes: 60,
      ipMasqFullyRandomDisable: false,
      iptablesForwardRules: true,
      ipBlackholeRoute: false,
      etcd: {},
      logLevel: 'info',
      logFormat: 'json',
    });
    expect(o.ifaceCanReach).toBeUndefined();
    expect(o.metricsAddr).toBeUndefined();
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

  it('reads every flag from FLANNELD_<FLAG_IN_UPPER_SNAKE>, dashes as underscores, booleans and numbers typed', () => {
    const o = parseAgentOptions([], {
      FLANNELD_IFACE_CAN_REACH: '192.168.1.1',
      FLANNELD_IFACE: 'eth1,eth2',
      FLANNELD_IP_MASQ: 'true',
      FLANNELD_IPTABLES_FORWARD_RULES: 'false',
      FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE: 'true',
      FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '30',
      FLANNELD_KUBE_ANNOTATION_PREFIX: 'example.com',
      FLANNELD_SET_NODE_NETWORK_UNAVAILABLE: 'false',
      FLANNELD_ETCD_ENDPOINTS: 'https://e1:2379,https://e2:2379',
      FLANNELD_ETCD_CAFILE: '/etc/ca.pem',
      FLANNELD_ETCD_USERNAME: 'flannel',
      FLANNELD_ETCD_PASSWORD: 's3cret',
      FLANNELD_HEALTHZ_PORT: '8081',
      FLANNELD_METRICS_ADDR: '10.0.0.7:9465',
      FLANNELD_IP_BLACKHOLE_ROUTE: 'true',
      FLANNELD_LOG_FORMAT: 'text',
      NODE_NAME: 'n1',
    });
    expect(o).toMatchObject({
      ifaceCanReach: '192.168.1.1',
      iface: ['eth1', 'eth2'],
      ipMasq: true,
      iptablesForwardRules: false,
      ipMasqFullyRandomDisable: true,
      subnetLeaseRenewMarginMinutes: 30,
      kubeAnnotationPrefix: 'example.com',
      setNodeNetworkUnavailable: false,
      etcdEndpoints: ['https://e1:2379', 'https://e2:2379'],
      etcd: { caFile: '/etc/ca.pem', username: 'flannel', password: 's3cret' },
      healthzPort: 8081,
      metricsAddr: { host: '10.0.0.7', port: 9465 },
      ipBlackholeRoute: true,
      logFormat: 'text',
    });
  });

  it('lets a command-line flag win over its env var', () => {
    const o = parseAgentOptions(['--ip-masq=false', '--iface', 'eth9', '--iptables-forward-rules'], {
      FLANNELD_IP_MASQ: 'true',
      FLANNELD_IFACE: 'eth1',
      FLANNELD_IPTABLES_FORWARD_RULES: 'false',
    });
    expect(o.ipMasq).toBe(false);
    expect(o.iface).toEqual(['eth9']);
    expect(o.iptablesForwardRules).toBe(true);
  });

  it('names each flag\'s env var the way flanneld does', () => {
    expect(envName('iface-can-reach')).toBe('FLANNELD_IFACE_CAN_REACH');
    expect(envName('ip-masq-fully-random-disable')).toBe('FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE');
    // every flag maps to a distinct, valid variable name
    const names = Object.keys(FLAGS).map(envName);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) expect(n).toMatch(/^FLANNELD_[A-Z0-9_]+$/);
  });

  it('accepts flannel\'s spellings: --iptables-resync for --resync-period, -v for --log-level (klog numbers too)', () => {
    expect(parseAgentOptions(['--iptables-resync', '5'], {}).resyncSeconds).toBe(5);
    expect(parseAgentOptions([], { FLANNELD_IPTABLES_RESYNC: '7' }).resyncSeconds).toBe(7);
    expect(parseAgentOptions(['-v', 'debug'], {}).logLevel).toBe('debug');
    expect(parseAgentOptions(['-v=0'], {}).logLevel).toBe('info');
    expect(parseAgentOptions(['--v=2'], {}).logLevel).toBe('debug');
    expect(parseAgentOptions(['-v', '6'], {}).logLevel).toBe('trace');
    expect(parseAgentOptions([], { FLANNELD_LOG_LEVEL: '4' }).logLevel).toBe('trace');
  });

  it('takes --public-ipv6 (or FLANNELD_PUBLIC_IPV6, as flanneld) and an IPv6 --iface-can-reach', () => {
    expect(parseAgentOptions(['--public-ipv6', '2001:db8::7'], {}).publicIPv6).toBe('2001:db8::7');
    expect(parseAgentOptions([], { FLANNELD_PUBLIC_IPV6: '2001:db8::8' }).publicIPv6).toBe('2001:db8::8');
    expect(parseAgentOptions(['--public-ipv6', '2001:db8::9'], { FLANNELD_PUBLIC_IPV6: '2001:db8::8' }).publicIPv6).toBe('2001:db8::9');
    expect(parseAgentOptions([], {}).publicIPv6).toBeUndefined();
    expect(parseAgentOptions(['--iface-can-reach', 'fd00:50::1'], {}).ifaceCanReach).toBe('fd00:50::1');
    expect(parseAgentOptions(['--iface', 'fd00:50::2', '--iface', 'eth1'], {}).iface).toEqual(['fd00:50::2', 'eth1']);
  });

  it('parses --metrics-addr host:port, [v6]:port and :port', () => {
    expect(parseAgentOptions(['--metrics-addr', '192.168.1.5:9465'], {}).metricsAddr).toEqual({ host: '192.168.1.5', port: 9465 });
    expect(parseAgentOptions(['--metrics-addr', '[::1]:9465'], {}).metricsAddr).toEqual({ host: '::1', port: 9465 });
    expect(parseAgentOptions(['--metrics-addr', ':9465'], {}).metricsAddr).toEqual({ host: '0.0.0.0', port: 9465 });
  });

  it.each([
    [['--healthz-port', '70000'], /--healthz-port/],
    [['--resync-period', '0'], /--resync-period/],
    [['--iface-regex', '(['], /--iface-regex/],
    [['--no-such-flag'], /Unknown argument/],
    [['--log-level', 'loud'], /log-level/],
    [['--subnet-lease-renew-margin', '0'], /--subnet-lease-renew-margin/],
    [['--subnet-lease-renew-margin', '1440'], /--subnet-lease-renew-margin/],
    [['--iface-can-reach', 'gateway'], /--iface-can-reach/],
    [['--public-ipv6', '10.0.0.1'], /--public-ipv6 must be an IPv6 address, got "10.0.0.1"/],
    [['--public-ipv6', 'fd00::1/64'], /--public-ipv6 must be an IPv6 address/],
    [['--metrics-addr', '9465'], /--metrics-addr/],
    [['--log-format', 'xml'], /--log-format/],
    [['--etcd-certfile', '/c.pem'], /--etcd-certfile and --etcd-keyfile/],
    [['--etcd-password', 'x'], /--etcd-password needs --etcd-username/],
  ])('rejects %j naming the flag', (argv, message) => {
    expect(() => parseAgentOptions(argv, {})).toThrow(OptionsError);
    expect(() => parseAgentOptions(argv, {})).toThrow(message);
  });

  it('keeps peers 30 s after a store loss by default and cleans up only when asked', () => {
    expect(parseAgentOptions([], {})).toMatchObject({ storeLossGraceSeconds: 30, cleanup: false });
    expect(parseAgentOptions(['--store-loss-grace', '5', '--cleanup'], {})).toMatchObject({ storeLossGraceSeconds: 5, cleanup: true });
    expect(() => parseAgentOptions(['--store-loss-grace', '-1'], {})).toThrow(/--store-loss-grace/);
  });

  it('presumes a Node watch dead after 75 s without an event or bookmark by default; 0 turns that off, a negative value is refused', () => {
    expect(parseAgentOptions([], {})).toMatchObject({ kubeWatchIdleTimeoutSeconds: 75 });
    expect(parseAgentOptions(['--kube-watch-idle-timeout', '0'], {})).toMatchObject({ kubeWatchIdleTimeoutSeconds: 0 });
    expect(parseAgentOptions([], { FLANNELD_KUBE_WATCH_IDLE_TIMEOUT: '120' })).toMatchObject({ kubeWatchIdleTimeoutSeconds: 120 });
    expect(() => parseAgentOptions(['--kube-watch-idle-timeout', '-1'], {})).toThrow(/--kube-watch-idle-timeout/);
  });

  it('rejects a bad value from the environment too, naming the flag', () => {
    expect(() => parseAgentOptions([], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '2000' })).toThrow(/--subnet-lease-renew-margin/);
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

  it('answers --version with the package version', () => {
    expect(() => parseAgentOptions(['--version'], {})).toThrow(VersionShown);
    try {
      parseAgentOptions(['--version'], {});
    } catch (err) {
      expect((err as VersionShown).text).toBe(`tsflanneld ${VERSION}`);
    }
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(VERSION).toBe(pkg.version);
  });
});

describe('--cni-workers default', () => {
  it('is one worker per CPU, at least 2 (one netlink call waiting in the kernel never stops every pod) and at most 4', () => {
    expect([1, 2, 3, 4, 16].map((cpus) => defaultCniWorkers(cpus))).toEqual([2, 2, 3, 4, 4]);
    expect(parseAgentOptions([], { NODE_NAME: 'n1' }).cniWorkers).toBe(defaultCniWorkers(availableParallelism()));
    expect(parseAgentOptions(['--cni-workers', '7'], { NODE_NAME: 'n1' }).cniWorkers).toBe(7);
  });
});
