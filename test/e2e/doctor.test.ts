// `tsflannel doctor` against a real three-node cluster (two nodes on one L2
// segment, one behind a router; real etcd, agents and pods). A healthy node
// passes every check; then each test breaks exactly one thing inside a node
// namespace, asserts that doctor names that check (by id, in --json) while
// every other check still passes, and repairs it. Doctor runs as the real
// binary inside the node namespace, as an operator would run it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Cluster, PLUGIN_BIN } from '../../src/demo/cluster.js';
import { ETCD_BIN, haveEtcd } from '../helpers/etcd.js';
import { isRoot } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { CHECK_IDS, type CheckId, type CheckResult, type CheckStatus } from '../../src/cli/checks/types.js';
import type { DoctorReport } from '../../src/cli/doctor.js';
import { eventually } from '../helpers/eventually.js';

const needs = { root: isRoot, [`etcd (${ETCD_BIN})`]: haveEtcd };

type Expected = Partial<Record<CheckId, CheckStatus>>;

describe.skipIf(requireOrSkip('doctor', needs))('tsflannel doctor on a three-node cluster', () => {
  // Made in beforeAll: the constructor creates a temp dir, which a filtered
  // run (no test of this block selected, so no afterAll) would leave behind.
  let cluster: Cluster;
  const subnets = new Map<string, string>(); // node → 10.244.X.0/24

  const ns = (node: string) => cluster.node(node).ns;
  const sh = (node: string, cmd: string, args: string[]) =>
    execFileSync('ip', ['netns', 'exec', ns(node), cmd, ...args], { encoding: 'utf8' });
  const ipIn = (node: string, args: string[]) => sh(node, 'ip', args);
  const gatewayNet = (node: string) => subnets.get(node)!.split('/')[0]!;
  const gatewayCidr = (node: string) => `${gatewayNet(node).replace(/\.0$/, '.1')}/24`;
  const dataDir = (node: string) => join(cluster.nodeDir(node), 'networks');

  // Async on purpose: the root end of the etcd bridge lives in this process,
  // so a blocking spawn would stall doctor's own etcd requests.
  function doctor(node: string, extra: string[] = ['--etcd-endpoints', 'http://127.0.0.1:2379']): Promise<{ code: number; report: DoctorReport }> {
    const args = ['netns', 'exec', ns(node), PLUGIN_BIN, 'doctor', '--json', '--subnet-file', cluster.subnetFile(node), '--data-dir', dataDir(node),
      '--cni-socket', cluster.cniSocket(node), ...extra];
    return runJson('ip', args);
  }

  function runJson(file: string, args: string[]): Promise<{ code: number; report: DoctorReport }> {
    return new Promise((resolve, reject) => {
      execFile(file, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        if (!stdout.trim().startsWith('{')) return reject(new Error(`doctor printed no JSON (exit ${code}): ${stdout}${stderr}`));
        resolve({ code, report: JSON.parse(stdout) as DoctorReport });
      });
    });
  }

  const byId = (report: DoctorReport) => new Map<CheckId, CheckResult>(report.checks.map((c) => [c.id, c]));

  /** n1's agent is stopped: its CNI socket does not answer, pod calls fall back (a warning). */
  let agentDown = false;

  /** `expected` checks have exactly that status; every other check passes. */
  function expectOnly(report: DoctorReport, wanted: Expected): void {
    const expected: Expected = agentDown ? { 'cni-socket': 'warn', ...wanted } : wanted;
    const got = Object.fromEntries(report.checks.map((c) => [c.id, c.status]));
    // This cluster runs vxlan: the wireguard checks skip.
    const want = Object.fromEntries(report.checks.map((c) => [c.id, expected[c.id] ?? (c.id.startsWith('wireguard-') ? 'skip' : 'pass')]));
    expect(got, JSON.stringify(report.checks.filter((c) => c.status !== 'pass'), null, 1)).toEqual(want);
    expect(report.ok).toBe(!Object.values(expected).includes('fail'));
  }


  /** every check passes on a healthy VXLAN node but the two wireguard ones, which skip */
  const VXLAN_PASS = CHECK_IDS.length - 2;
  const healthy = async (node: string) => (await doctor(node)).report.summary.pass === VXLAN_PASS;

  beforeAll(async () => {
    cluster = new Cluster({
      prefix: `tsfdoc${randomBytes(2).toString('hex')}`,
      nodes: [
        { name: 'n1', segment: 'a' },
        { name: 'n2', segment: 'a' },
        { name: 'n3', segment: 'b' },
      ],
      resyncSeconds: 2,
    });
    await cluster.start();
    for (const node of ['n1', 'n2', 'n3']) {
      await cluster.addPod(node, 'p1');
      const env = readFileSync(cluster.subnetFile(node), 'utf8');
      subnets.set(node, /FLANNEL_SUBNET=(\S+)/.exec(env)![1]!.replace(/\.1\/24$/, '.0/24'));
    }
    await cluster.addPod('n1', 'p2');
    let last = '';
    await eventually('every node programs every other node', 20_000, async () => {
      for (const n of ['n1', 'n2', 'n3']) {
        const { report } = await doctor(n);
        last = `${n}: ${JSON.stringify(report.checks.filter((c) => c.status !== 'pass'))}`;
        if (report.summary.pass !== VXLAN_PASS) return false;
      }
      return true;
    }).catch((err: Error) => {
      throw new Error(`${err.message}; last: ${last}`);
    });
  }, 90_000);
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);

  it('passes every check on a healthy node, exit 0', async () => {
    for (const node of ['n1', 'n3']) {
      const { code, report } = await doctor(node);
      expectOnly(report, {});
      expect(code).toBe(0);
      expect(report.summary).toEqual({ pass: VXLAN_PASS, warn: 0, fail: 0, skip: 2 });
    }
    const n1 = byId((await doctor('n1')).report);
    expect(n1.get('vtep-reachability')!.message).toMatch(/^2 remote VTEPs answered through flannel\.1/);
    expect(n1.get('lease')!.message).toContain(`${subnets.get('n1')} held for ${cluster.node('n1').ip}`);
  });

  it('without a lease source, checks the kernel against itself and says so (from outside, with --netns)', async () => {
    const node = 'n2';
    const { code, report } = await runJson(PLUGIN_BIN, [
      'doctor', '--json', '--netns', cluster.node(node).nsPath, '--subnet-file', cluster.subnetFile(node), '--data-dir', dataDir(node),
      '--cni-socket', cluster.cniSocket(node),
    ]);
    expectOnly(report, { lease: 'skip' });
    expect(code).toBe(0);
    const checks = byId(report);
    expect(checks.get('peer-entries')!.message).toContain('no lease source');
    expect(checks.get('lease')!.message).toContain('kernel state');
  });

  it('subnet-file: a FLANNEL_NETWORK that is not the cluster network', async () => {
    const file = cluster.subnetFile('n1');
    const original = readFileSync(file, 'utf8');
    try {
      writeFileSync(file, original.replace('FLANNEL_NETWORK=10.244.0.0/16', 'FLANNEL_NETWORK=10.245.0.0/16'));
      const { code, report } = await doctor('n1');
      expectOnly(report, { 'subnet-file': 'fail' });
      expect(code).toBe(1);
      expect(byId(report).get('subnet-file')!.message).toContain('FLANNEL_NETWORK 10.245.0.0/16 is not the cluster network 10.244.0.0/16');
    } finally {
      writeFileSync(file, original);
    }
    expectOnly((await doctor('n1')).report, {});
  });

  it('bridge-address: cni0 carries an address other than FLANNEL_SUBNET', async () => {
    const gw = gatewayCidr('n1');
    ipIn('n1', ['addr', 'del', gw, 'dev', 'cni0']);
    ipIn('n1', ['addr', 'add', '10.244.250.1/24', 'dev', 'cni0']);
    try {
      const { report } = await doctor('n1');
      // No pod holds an address of 10.244.250.0/24: the next ADD moves the gateway by itself.
      expectOnly(report, { 'bridge-address': 'warn' });
      const check = byId(report).get('bridge-address')!;
      expect(check.message).toContain(`"cni0" already has an IP address different from ${gw}: 10.244.250.1/24`);
      expect(check.message).toContain(`the next pod ADD moves cni0 to ${gw}`);
    } finally {
      ipIn('n1', ['addr', 'del', '10.244.250.1/24', 'dev', 'cni0']);
      ipIn('n1', ['addr', 'add', gw, 'dev', 'cni0']);
    }
    expectOnly((await doctor('n1')).report, {});
  });

  it('ip-forward: net.ipv4.ip_forward=0', async () => {
    sh('n1', 'sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
    try {
      const { report } = await doctor('n1');
      expectOnly(report, { 'ip-forward': 'fail' });
      expect(byId(report).get('ip-forward')!.fix).toContain('net.ipv4.ip_forward=1');
    } finally {
      sh('n1', 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    }
  });

  it('rp-filter: strict mode on flannel.1 is a warning with the loose-mode fix', async () => {
    sh('n1', 'sysctl', ['-qw', 'net/ipv4/conf/flannel.1/rp_filter=1']);
    try {
      const { code, report } = await doctor('n1');
      expectOnly(report, { 'rp-filter': 'warn' });
      expect(code).toBe(0); // a warning alone does not fail the node
      const check = byId(report).get('rp-filter')!;
      expect(check.message).toContain('strict reverse-path filtering on flannel.1');
      expect(check.fix).toContain('net.ipv4.conf.flannel.1.rp_filter=2');
    } finally {
      sh('n1', 'sysctl', ['-qw', 'net/ipv4/conf/flannel.1/rp_filter=0']);
    }
  });

  it('ipam-leaks: a lease file whose container has no veth', async () => {
    const file = join(dataDir('n1'), 'cbr0', gatewayNet('n1').replace(/\.0$/, '.200'));
    writeFileSync(file, 'ghost-container\r\neth0');
    try {
      const { report } = await doctor('n1');
      expectOnly(report, { 'ipam-leaks': 'warn' });
      const check = byId(report).get('ipam-leaks')!;
      expect(check.message).toContain(gatewayNet('n1').replace(/\.0$/, '.200'));
      expect(check.details!.join('\n')).toContain('ghost-container');
    } finally {
      rmSync(file);
    }
  });

  it('vtep-reachability: UDP 8472 dropped by a peer names that peer and the hint', async () => {
    const rule = ['INPUT', '-p', 'udp', '--dport', '8472', '-j', 'DROP'];
    sh('n2', 'iptables', ['-w', '5', '-I', ...rule]);
    try {
      const { report } = await doctor('n1');
      expectOnly(report, { 'vtep-reachability': 'fail' });
      const check = byId(report).get('vtep-reachability')!;
      expect(check.message).toContain(`(${cluster.node('n2').ip})`);
      expect(check.message).not.toContain(`(${cluster.node('n3').ip})`);
      expect(check.fix).toBe('UDP 8472 blocked between nodes, or VXLAN checksum offload: ethtool -K flannel.1 tx-checksum-ip-generic off');
    } finally {
      sh('n2', 'iptables', ['-w', '5', '-D', ...rule]);
    }
    expectOnly((await doctor('n1')).report, {});
  });

  it('underlay-interface: the default route leaves through another interface, so a routed peer is unreachable', async () => {
    ipIn('n1', ['link', 'add', 'tsfx0', 'type', 'veth', 'peer', 'name', 'tsfx1']);
    try {
      ipIn('n1', ['addr', 'add', '10.99.0.1/24', 'dev', 'tsfx0']);
      ipIn('n1', ['link', 'set', 'tsfx0', 'up']);
      ipIn('n1', ['link', 'set', 'tsfx1', 'up']);
      ipIn('n1', ['route', 'replace', 'default', 'via', '10.99.0.2', 'dev', 'tsfx0']);
      const { report } = await doctor('n1');
      // n3 sits behind the router, so its tunnel now leaves through tsfx0:
      // the echo through flannel.1 fails as a consequence, and only for n3.
      expectOnly(report, { 'underlay-interface': 'fail', 'vtep-reachability': 'fail' });
      const check = byId(report).get('underlay-interface')!;
      expect(check.details).toEqual([`${cluster.node('n3').ip} (${subnets.get('n3')!.replace('/', '-')}): routed via tsfx0, not eth0`]);
      expect(check.fix).toContain('--iface');
      expect(byId(report).get('vtep-reachability')!.message).toContain(cluster.node('n3').ip);
      expect(byId(report).get('vtep-reachability')!.message).not.toContain(cluster.node('n2').ip);
    } finally {
      ipIn('n1', ['route', 'replace', 'default', 'via', '192.168.77.1', 'dev', 'eth0']);
      ipIn('n1', ['link', 'del', 'tsfx0']);
    }
    expectOnly((await doctor('n1')).report, {});
  });

  describe('with n1\'s agent stopped (it would repair these within its resync period)', () => {
    beforeAll(async () => {
      await cluster.stopAgent('n1', 'SIGKILL');
      agentDown = true;
    });
    afterAll(async () => {
      await cluster.startAgent('n1');
      agentDown = false;
    });

    it('vxlan-device: learning switched on', async () => {
      ipIn('n1', ['link', 'set', 'flannel.1', 'type', 'vxlan', 'learning']);
      try {
        const { report } = await doctor('n1');
        expectOnly(report, { 'vxlan-device': 'fail' });
        const check = byId(report).get('vxlan-device')!;
        expect(check.message).toContain('learning is on');
        expect(check.fix).toBe('ip link set flannel.1 type vxlan nolearning');
      } finally {
        ipIn('n1', ['link', 'set', 'flannel.1', 'type', 'vxlan', 'nolearning']);
      }
      expectOnly((await doctor('n1')).report, {});
    });

    it('mtu: flannel.1 above the underlay MTU − 50 (the underlay shrank under it)', async () => {
      // The kernel refuses a VXLAN MTU above its lower device's minus 50, but
      // lowering the underlay later leaves flannel.1 as it was.
      ipIn('n1', ['link', 'set', 'eth0', 'mtu', '1400']);
      try {
        const { report } = await doctor('n1');
        expectOnly(report, { mtu: 'fail' });
        const check = byId(report).get('mtu')!;
        expect(check.message).toBe("flannel.1 MTU 1450 is above eth0's 1400 − 50 = 1350: full-size packets are lost after encapsulation");
        expect(check.fix).toContain('ip link set flannel.1 mtu 1350');
      } finally {
        ipIn('n1', ['link', 'set', 'eth0', 'mtu', '1500']);
      }
      expectOnly((await doctor('n1')).report, {});
    });

    it('peer-entries: the FDB entry for one node deleted', async () => {
      const n2ip = cluster.node('n2').ip;
      const fdb = execFileSync('bridge', ['-n', ns('n1'), 'fdb', 'show', 'dev', 'flannel.1'], { encoding: 'utf8' });
      const mac = new RegExp(`^([0-9a-f:]{17}) dst ${n2ip.replace(/\./g, '\\.')} `, 'm').exec(fdb)![1]!;
      execFileSync('bridge', ['-n', ns('n1'), 'fdb', 'del', mac, 'dev', 'flannel.1', 'dst', n2ip]);
      try {
        const { report } = await doctor('n1');
        // n2 is not pinged (its entries are known to be incomplete); n3 still is.
        expectOnly(report, { 'peer-entries': 'fail' });
        const check = byId(report).get('peer-entries')!;
        expect(check.message).toContain('1 remote node not fully programmed');
        expect(check.details!.join('\n')).toContain(`FDB entry ${mac} dst ${n2ip} missing`);
        expect(check.fix).toContain(`bridge fdb append ${mac} dev flannel.1 dst ${n2ip} self permanent`);
        expect(byId(report).get('vtep-reachability')!.message).toMatch(/^1 remote VTEP answered/);
      } finally {
        execFileSync('bridge', ['-n', ns('n1'), 'fdb', 'append', mac, 'dev', 'flannel.1', 'dst', n2ip, 'self', 'permanent']);
      }
      expectOnly((await doctor('n1')).report, {});
    });

    it('stale-entries: route, neighbour and FDB entry for a node that does not exist', async () => {
      const gone = '10.244.251.0';
      expect([...subnets.values()]).not.toContain(`${gone}/24`);
      const mac = '0a:00:00:00:fb:01';
      ipIn('n1', ['neigh', 'add', gone, 'lladdr', mac, 'dev', 'flannel.1', 'nud', 'permanent']);
      execFileSync('bridge', ['-n', ns('n1'), 'fdb', 'append', mac, 'dev', 'flannel.1', 'dst', '192.168.77.99', 'self', 'permanent']);
      ipIn('n1', ['route', 'add', `${gone}/24`, 'via', gone, 'dev', 'flannel.1', 'onlink']);
      try {
        const { report } = await doctor('n1');
        expectOnly(report, { 'stale-entries': 'warn' });
        const check = byId(report).get('stale-entries')!;
        expect(check.message).toBe('3 entries that no lease asks for (nodes that left?)');
        expect(check.details).toEqual([
          `route ${gone}/24 via ${gone} dev flannel.1 onlink`,
          `neighbour ${gone} lladdr ${mac} permanent`,
          `FDB ${mac} dst 192.168.77.99`,
        ]);
      } finally {
        ipIn('n1', ['route', 'del', `${gone}/24`, 'dev', 'flannel.1']);
        ipIn('n1', ['neigh', 'del', gone, 'dev', 'flannel.1']);
        execFileSync('bridge', ['-n', ns('n1'), 'fdb', 'del', mac, 'dev', 'flannel.1', 'dst', '192.168.77.99']);
      }
      expectOnly((await doctor('n1')).report, {});
    });

    it('forward-policy: FORWARD policy DROP and the FLANNEL-FWD jump gone', async () => {
      const saved = sh('n1', 'iptables-save', ['-t', 'filter']);
      sh('n1', 'iptables', ['-w', '5', '-P', 'FORWARD', 'DROP']);
      sh('n1', 'iptables', ['-w', '5', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']);
      try {
        const { report } = await doctor('n1');
        expectOnly(report, { 'forward-policy': 'fail' });
        const check = byId(report).get('forward-policy')!;
        expect(check.message).toContain('FORWARD policy DROP and nothing accepts the pod network 10.244.0.0/16');
        expect(check.details).toEqual(['missing: -t filter -A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD']);
      } finally {
        execFileSync('ip', ['netns', 'exec', ns('n1'), 'iptables-restore'], { input: saved });
      }
      expectOnly((await doctor('n1')).report, {});
    });

    it('masquerade: one of flannel\'s MASQUERADE rules deleted', async () => {
      const saved = sh('n1', 'iptables-save', ['-t', 'nat']);
      const fifth = sh('n1', 'iptables', ['-w', '5', '-t', 'nat', '-S', 'FLANNEL-POSTRTG']).split('\n').filter((l) => l.startsWith('-A'))[4]!;
      expect(fifth).toContain('-j MASQUERADE');
      sh('n1', 'iptables', ['-w', '5', '-t', 'nat', '-D', 'FLANNEL-POSTRTG', '5']);
      try {
        const { report } = await doctor('n1');
        expectOnly(report, { masquerade: 'fail' });
        const check = byId(report).get('masquerade')!;
        expect(check.message).toContain('1 of flannel\'s masquerade rules are missing');
        expect(check.details).toEqual([`missing: -t nat ${fifth}`]);
      } finally {
        execFileSync('ip', ['netns', 'exec', ns('n1'), 'iptables-restore'], { input: saved });
      }
      expectOnly((await doctor('n1')).report, {});
    });
  });

  it('after its agent restarts, n1 is healthy again', async () => {
    await eventually('n1 healthy after the agent restart', 15_000, () => healthy('n1'));
  });

  it('lease: this node\'s etcd key deleted (the others then drop their routes to it)', async () => {
    const key = `/coreos.com/network/subnets/${subnets.get('n1')!.replace('/', '-')}`;
    await cluster.stopAgent('n1', 'SIGKILL');
    agentDown = true;
    const value = (await cluster.etcdctl(['get', key, '--print-value-only'])).trim();
    expect(value).toContain(cluster.node('n1').ip);
    await cluster.etcdctl(['del', key]);
    try {
      await eventually('n2 and n3 drop their route to n1', 10_000, () =>
        ['n2', 'n3'].every((n) => ipIn(n, ['route', 'show', subnets.get('n1')!]).trim() === ''),
      );
      const { report } = await doctor('n1');
      // Peers no longer route back to a node without a lease, so the echo fails too.
      expectOnly(report, { lease: 'fail', 'vtep-reachability': 'fail' });
      const checks = byId(report);
      expect(checks.get('lease')!.message).toContain(`no lease in etcd`);
      expect(checks.get('lease')!.message).toContain(`public IP ${cluster.node('n1').ip}`);
      expect(checks.get('vtep-reachability')!.message).toContain('This node holds no lease');
    } finally {
      const grant = await cluster.etcdctl(['lease', 'grant', '86400']);
      const id = /lease ([0-9a-f]+) granted/.exec(grant)![1]!;
      await cluster.etcdctl(['put', `--lease=${id}`, key, value]);
      await cluster.startAgent('n1');
      agentDown = false;
    }
    await eventually('n1 healthy with its lease back', 20_000, () => healthy('n1'));
    expect(readFileSync(cluster.subnetFile('n1'), 'utf8')).toContain(`FLANNEL_SUBNET=${gatewayCidr('n1')}`);
  });
});

// `npm run demo` is the same cluster for people: it must pass on its own,
// tear everything down, stay up with --keep until Ctrl-C, and --cleanup
// must remove what a killed demo left.
describe.skipIf(requireOrSkip('demo', needs))('the demo program', () => {
  const DEMO = fileURLToPath(new URL('../../build/demo/main.js', import.meta.url));

  interface DemoRun {
    child: ChildProcess;
    output: () => string;
    exited: Promise<number | null>;
  }

  function startDemo(args: string[]): DemoRun {
    const child = spawn(process.execPath, [DEMO, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    return { child, output: () => out, exited };
  }

  async function waitForOutput(run: DemoRun, text: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!run.output().includes(text)) {
      if (Date.now() > deadline || run.child.exitCode !== null) throw new Error(`demo never printed "${text}":\n${run.output()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  const prefixOf = (output: string) => /cluster (tsfdemo[0-9a-f]{4}):/.exec(output)![1]!;
  const namespaces = (prefix: string) =>
    execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(`${prefix}-`));
  const tempDirs = (prefix: string) => readdirSync(tmpdir()).filter((d) => d.startsWith(`${prefix}-`));
  const processesOf = (prefix: string) =>
    readdirSync('/proc').filter((p) => {
      if (!/^\d+$/.test(p)) return false;
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${tmpdir()}/${prefix}-`);
      } catch {
        return false;
      }
    });

  it('builds the dual-stack cluster, prints both families\' kernel state and all-green ping matrices, exits 0 and leaves nothing behind', async () => {
    const run = startDemo([]);
    const code = await run.exited;
    const out = run.output();
    expect(code, out).toBe(0);
    expect(out.match(/^30\/30 pod pairs answered/gm)).toHaveLength(2); // IPv4 and IPv6
    expect(out).toContain('Pod-to-pod ping matrix, IPv6 (flannel-v6.1):');
    expect(out.match(/^ {2}route6 {5}fd00:10:244:[0-9a-f]*::\/64 via fd00:10:244:[0-9a-f]*:: dev flannel-v6\.1 onlink$/gm)).toHaveLength(6);
    expect(out.match(/^ {2}fdb6 {7}[0-9a-f:]{17} dev flannel-v6\.1 dst fd00:7[78]::\d+ self permanent$/gm)).toHaveLength(6);
    expect(out).toContain('demo passed');
    expect(out.match(/^ {2}route {6}10\.244\.\d+\.0\/24 via 10\.244\.\d+\.0 dev flannel\.1 onlink$/gm)).toHaveLength(6);
    expect(out.match(/^ {2}neigh {6}10\.244\.\d+\.0 lladdr [0-9a-f:]{17} dev flannel\.1 PERMANENT$/gm)).toHaveLength(6);
    expect(out.match(/^ {2}fdb {8}[0-9a-f:]{17} dev flannel\.1 dst 192\.168\.7[78]\.\d+ self permanent$/gm)).toHaveLength(6);
    // one per node and family: the outside host sees the node's IPv4 and IPv6 underlay address
    expect(out.match(/^ {2}ok node\d\/pod1 .* = node\d's address \(masqueraded\)$/gm)).toHaveLength(6);
    expect(out.match(/^ {2}ok node\d\/pod1 fd00:10:244:[0-9a-f]*::\d+ → fd00:18::2: .*come from fd00:7[78]::\d+ = /gm)).toHaveLength(3);
    expect(out).not.toMatch(/\x1b\[/); // not a TTY: no colour codes
    const prefix = prefixOf(out);
    expect(namespaces(prefix)).toEqual([]);
    expect(tempDirs(prefix)).toEqual([]);
    expect(processesOf(prefix)).toEqual([]);
  }, 90_000);

  it('--keep --ipv4-only stays up (IPv4 only) with the commands to explore, and Ctrl-C tears it down', async () => {
    const run = startDemo(['--keep', '--ipv4-only']);
    try {
      await waitForOutput(run, 'Ctrl-C tears it all down');
      const prefix = prefixOf(run.output());
      expect(run.output()).toContain('Pod-to-pod ping matrix:\n');
      expect(run.output()).not.toContain('flannel-v6');
      expect(namespaces(prefix)).toContain(`${prefix}-node1`);
      expect(run.output()).toContain(`ip netns exec ${prefix}-node1 ${PLUGIN_BIN} doctor`);
      run.child.kill('SIGINT');
      expect(await run.exited).toBe(0);
      expect(namespaces(prefix)).toEqual([]);
      expect(tempDirs(prefix)).toEqual([]);
      expect(processesOf(prefix)).toEqual([]);
    } finally {
      run.child.kill('SIGKILL');
    }
  }, 90_000);

  it('--cleanup PREFIX removes what a killed demo left behind', async () => {
    const run = startDemo(['--keep']);
    await waitForOutput(run, 'Ctrl-C tears it all down');
    const prefix = prefixOf(run.output());
    run.child.kill('SIGKILL');
    await run.exited;
    expect(namespaces(prefix).length).toBeGreaterThan(0);
    expect(processesOf(prefix).length).toBeGreaterThan(0); // etcd and the agents outlive a SIGKILL
    const res = spawnSync(process.execPath, [DEMO, '--cleanup', prefix], { encoding: 'utf8' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/^removed \d+ namespace\(s\), \d+ process\(es\), 1 temp dir\(s\) of tsfdemo/);
    expect(namespaces(prefix)).toEqual([]);
    expect(tempDirs(prefix)).toEqual([]);
    await eventuallyGone(() => processesOf(prefix));
    expect(spawnSync(process.execPath, [DEMO, '--cleanup', '../etc'], { encoding: 'utf8' }).status).toBe(2);
  }, 90_000);

  async function eventuallyGone(list: () => string[]): Promise<void> {
    for (let i = 0; i < 20 && list().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(list()).toEqual([]);
  }
});
