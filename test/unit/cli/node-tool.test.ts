// The pieces around the checks: flag parsing for status/doctor, how a
// command is run inside another netns, the pure state views (route lookup,
// route → neighbour → FDB join), terminal tables, and the binary's usage
// errors.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseNodeToolArgs, type RawNodeToolArgs } from '../../../src/cli/checks/options.js';
import { NODE_TOOL_DEFAULTS } from '../../helpers/node-tool.js';
import { paintFor, table, visibleLength } from '../../../src/cli/checks/format.js';
import { kernelPeers, netnsCommand, routeFor, subnetOf, type NodeState } from '../../../src/node/state.js';
import { formatDoctor, summarize, type DoctorReport } from '../../../src/cli/doctor.js';

const BIN = fileURLToPath(new URL('../../../bin/tsflannel', import.meta.url));

const defaults = NODE_TOOL_DEFAULTS;

describe('status/doctor flags', () => {
  it('without a lease source flag, reads the kernel only', () => {
    const o = parseNodeToolArgs(defaults, {});
    expect(o.source).toEqual({ kind: 'none' });
    expect(o.timeoutMs).toBe(3000);
    expect(o.netns).toBeUndefined();
  });

  it('splits and trims --etcd-endpoints', () => {
    const o = parseNodeToolArgs({ ...defaults, 'etcd-endpoints': ' http://a:2379, https://b:2379/ ,' }, {});
    expect(o.source).toEqual({ kind: 'etcd', endpoints: ['http://a:2379', 'https://b:2379/'], prefix: '/coreos.com/network' });
  });

  it('kube mode takes the node name from the flag, else NODE_NAME', () => {
    const fromEnv = parseNodeToolArgs({ ...defaults, 'kube-subnet-mgr': true }, { NODE_NAME: 'worker-3' });
    expect(fromEnv.source).toMatchObject({ kind: 'kube', nodeName: 'worker-3', netConfigPath: '/etc/kube-flannel/net-conf.json' });
    const fromFlag = parseNodeToolArgs({ ...defaults, 'kube-subnet-mgr': true, 'node-name': 'n9', 'kubeconfig-file': '/k' }, { NODE_NAME: 'x' });
    expect(fromFlag.source).toMatchObject({ kind: 'kube', nodeName: 'n9', kubeconfig: '/k' });
  });

  it.each([
    [{ 'etcd-endpoints': 'http://a:2379', 'kube-subnet-mgr': true }, 'not both'],
    [{ 'etcd-endpoints': 'a:2379' }, 'is not an http(s)://host:port URL'],
    [{ netns: 'node1' }, '--netns must be a path'],
    [{ 'public-ip': '10.0.0.300' }, 'is not an IPv4 address'],
    [{ timeout: 0 }, '--timeout must be positive'],
  ])('refuses %j', (extra, message) => {
    expect(() => parseNodeToolArgs({ ...defaults, ...extra } as RawNodeToolArgs, {})).toThrow(message);
  });

  it('the binary reports usage errors with exit 2 and names the command', () => {
    const res = spawnSync(BIN, ['doctor', '--netns', 'relative'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
    expect(res.status).toBe(2);
    expect(res.stderr).toContain('tsflannel doctor: --netns must be a path');
    const unknown = spawnSync(BIN, ['status', '--no-such-flag'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
    expect(unknown.status).toBe(2);
    const notNs = spawnSync(BIN, ['status', '--netns', '/etc/hostname'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
    expect(notNs.status).toBe(1);
    expect(notNs.stderr).toContain('/etc/hostname is not a network namespace');
    const help = spawnSync(BIN, ['status', '--help'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
    expect(help.status).toBe(0);
    for (const flag of ['--netns', '--subnet-file', '--data-dir', '--network', '--etcd-endpoints', '--json']) expect(help.stdout).toContain(flag);
  });
});

describe('node state helpers', () => {
  it('runs a command inside a named netns with ip netns exec, inside any other netns path with nsenter', () => {
    expect(netnsCommand(undefined, ['iptables', '-S'])).toEqual(['iptables', '-S']);
    expect(netnsCommand('/var/run/netns/node1', ['iptables'])).toEqual(['ip', 'netns', 'exec', 'node1', 'iptables']);
    expect(netnsCommand('/run/netns/node1', ['ping'])).toEqual(['ip', 'netns', 'exec', 'node1', 'ping']);
    expect(netnsCommand('/proc/42/ns/net', ['ping'])).toEqual(['nsenter', '--net=/proc/42/ns/net', 'ping']);
  });

  it('subnetOf gives the network form of a gateway CIDR', () => {
    expect(subnetOf('10.244.1.1/24')).toBe('10.244.1.0/24');
    expect(subnetOf('10.244.130.77/17')).toBe('10.244.128.0/17');
    expect(subnetOf('192.168.1.1/32')).toBe('192.168.1.1/32');
  });

  const r = (dst: string, dev: string, metric = 0, gw?: string) => ({ dst, dev, linkIndex: 0, onlink: false, metric, protocol: 4, scope: 0, ...(gw ? { gw } : {}) });
  const state = (routes: NodeState['routes'], extra: Partial<NodeState> = {}) => ({ routes, ...extra }) as NodeState;

  it('routeFor picks the longest prefix, then the lowest metric, like the kernel', () => {
    const s = state([r('default', 'eth0', 0, '192.168.1.1'), r('192.168.2.0/24', 'eth1', 100), r('192.168.2.0/24', 'eth2', 50), r('192.168.0.0/16', 'eth3')]);
    expect(routeFor(s, '192.168.2.9')!.dev).toBe('eth2');
    expect(routeFor(s, '192.168.7.1')!.dev).toBe('eth3');
    expect(routeFor(s, '8.8.8.8')!.dev).toBe('eth0');
    expect(routeFor(state([]), '8.8.8.8')).toBeUndefined();
  });

  it('kernelPeers joins route → neighbour → FDB on the VXLAN device only', () => {
    const s = state([r('10.244.2.0/24', 'flannel.1', 0, '10.244.2.0'), r('10.244.3.0/24', 'flannel.1', 0, '10.244.3.0'), r('10.9.0.0/16', 'eth0', 0, '192.168.1.1')], {
      vxlan: { name: 'flannel.1' } as NodeState['vxlan'],
      neighbours: [{ ip: '10.244.2.0', mac: '0a:00:00:00:00:02', permanent: true, state: 0x80 }],
      fdb: [{ mac: '0a:00:00:00:00:02', dst: '192.168.1.11', permanent: true }],
    });
    expect(kernelPeers(s)).toEqual([
      { subnet: '10.244.2.0/24', gateway: '10.244.2.0', mac: '0a:00:00:00:00:02', publicIP: '192.168.1.11', route: true, neigh: true, fdb: true },
      { subnet: '10.244.3.0/24', gateway: '10.244.3.0', route: true, neigh: false, fdb: false },
    ]);
  });
});

describe('terminal output', () => {
  it('colours only a TTY without NO_COLOR', () => {
    expect(paintFor({ isTTY: true }, {}).green('x')).toBe('\x1b[32mx\x1b[0m');
    expect(paintFor({ isTTY: false }, {}).green('x')).toBe('x');
    expect(paintFor({ isTTY: true }, { NO_COLOR: '1' }).red('x')).toBe('x');
  });

  it('aligns columns by visible width, colour codes and all', () => {
    const p = paintFor({ isTTY: true }, {});
    const lines = table(['A', 'BB'], [[p.green('ok'), 'x'], ['longer', 'y']]);
    expect(lines.map((l) => l.replace(/\x1b\[[0-9;]*m/g, ''))).toEqual(['  A       BB', '  ok      x', '  longer  y']);
    expect(visibleLength(p.red('✘ 1.2'))).toBe(5);
  });

  it('doctor prints PASS/WARN/FAIL/SKIP, fixes and details for the non-passing, and a summary', () => {
    const checks: DoctorReport['checks'] = [
      { id: 'subnet-file', status: 'pass', message: 'fine' },
      { id: 'rp-filter', status: 'warn', message: 'strict', fix: 'loosen it', details: ['all=1'] },
      { id: 'mtu', status: 'fail', message: 'too big', fix: 'shrink it' },
      { id: 'lease', status: 'skip', message: 'no source' },
    ];
    const summary = summarize(checks);
    expect(summary).toEqual({ pass: 1, warn: 1, fail: 1, skip: 1 });
    const text = formatDoctor({ ok: false, summary, netns: null, source: { kind: 'none', origin: 'none' }, checks }, paintFor({ isTTY: false }));
    const lines = text.split('\n');
    expect(lines).toContain('PASS  subnet-file         fine');
    expect(lines).toContain('WARN  rp-filter           strict');
    expect(lines).toContain('                          fix: loosen it');
    expect(lines).toContain('                          - all=1');
    expect(lines).toContain('FAIL  mtu                 too big');
    expect(lines).toContain('SKIP  lease               no source');
    expect(lines).toContain('1 passed, 1 warning, 1 failed, 1 skipped');
  });
});
