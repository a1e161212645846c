// The plugin binary against the inputs of a hostile-input probe (issue 11):
// same-attachment races, paths from the config that are FIFOs, directories,
// devices or kernel file systems, names the kernel would expand, and
// refusals that must carry their spec code. Every call runs the real
// bin/tsflannel inside a node netns; the kernel and the lease store are
// checked afterwards, and every hostile call must answer within 5 s.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { requireOrSkip } from '../helpers/require.js';
import { expectedHostVeth, spawnPlugin, type SpawnResult } from '../soak/soak.js';

/** What any call from these inputs may take at most. */
const MAX_CALL_MS = 5000;
const LEASE = /^\d+\.\d+\.\d+\.\d+$/;

interface CniJson {
  code?: number;
  msg?: string;
  ips?: { address: string; interface?: number }[];
  interfaces?: { name: string; mac: string; sandbox?: string }[];
}

function parsed(r: SpawnResult): CniJson | undefined {
  try {
    return r.stdout.trim() ? (JSON.parse(r.stdout) as CniJson) : undefined;
  } catch {
    return undefined;
  }
}

describe.skipIf(requireOrSkip('plugin against hostile input', { root: isRoot }))('plugin against hostile input', () => {
  let node = '';
  let dir = '';
  let subnetFile = '';
  let dataDir = '';
  const net = `tsfh${process.pid}`;
  const conf = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({ cniVersion: '1.1.0', name: net, type: 'tsflannel', subnetFile, dataDir, ...extra });

  interface Call {
    command: string;
    id?: string;
    pod?: string;
    ifname?: string;
    stdin?: string;
    env?: Record<string, string>;
    /** drop CNI_COMMAND from the environment */
    noCommand?: boolean;
  }
  const run = async (c: Call): Promise<SpawnResult & { json: CniJson | undefined }> => {
    const env: Record<string, string> = { CNI_PATH: '/opt/cni/bin' };
    if (!c.noCommand) env.CNI_COMMAND = c.command;
    if (c.id !== undefined) env.CNI_CONTAINERID = c.id;
    if (c.pod !== undefined) env.CNI_NETNS = nsPath(c.pod);
    if (c.id !== undefined) env.CNI_IFNAME = c.ifname ?? 'eth0';
    Object.assign(env, c.env);
    const r = await spawnPlugin({ nodeNs: node, env, stdin: c.stdin ?? conf(), timeoutMs: 30_000 });
    return { ...r, json: parsed(r) };
  };
  /** A hostile call: it must answer, and within MAX_CALL_MS. */
  const hostile = async (c: Call) => {
    const r = await run(c);
    expect(r.timedOut, `${c.command} hung: ${r.stderr}`).toBe(false);
    expect(r.ms, `${c.command} took ${Math.round(r.ms)} ms`).toBeLessThan(MAX_CALL_MS);
    return r;
  };
  const leases = (network = net) => {
    const d = join(dataDir, network);
    return existsSync(d) ? readdirSync(d).filter((f) => LEASE.test(f)) : [];
  };
  const leaseOf = (ip: string) => readFileSync(join(dataDir, net, ip), 'utf8');
  const nodeLinks = () => ipJson<{ ifname: string; link_type: string }[]>(node, ['link', 'show']).map((l) => l.ifname);
  const podLinks = (pod: string) => ipJson<{ ifname: string }[]>(pod, ['link', 'show']).map((l) => l.ifname);
  const podAddrs = (pod: string, ifname = 'eth0') =>
    ipJson<{ addr_info: { family: string; local: string; prefixlen: number }[] }[]>(pod, ['addr', 'show', 'dev', ifname])
      .flatMap((l) => l.addr_info)
      .filter((a) => a.family === 'inet')
      .map((a) => `${a.local}/${a.prefixlen}`);
  let podSeq = 0;
  const newPod = () => addNetns(`hp${podSeq++}`);

  beforeAll(() => {
    node = addNetns('hnode');
    dir = mkdtempSync(join(tmpdir(), 'tsf-hostile-'));
    subnetFile = join(dir, 'subnet.env');
    dataDir = join(dir, 'networks');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  });
  afterAll(() => {
    cleanupAll();
    rmSync(dir, { recursive: true, force: true });
  });

  /** N identical ADDs at once: one veth, one lease, N identical results (or clean code 11). */
  const identicalAdds = async (n: number) => {
    const pod = newPod();
    const id = `same-${n}`;
    const before = leases().length;
    const outs = await Promise.all(Array.from({ length: n }, () => run({ command: 'ADD', id, pod })));
    const ok = outs.filter((o) => o.code === 0);
    for (const o of outs) if (o.code !== 0) expect(o.json?.code, o.stdout).toBe(11);
    expect(ok.length).toBeGreaterThan(0);
    for (const o of ok) expect(o.json).toEqual(ok[0]!.json);
    const ip = ok[0]!.json!.ips![0]!.address;
    // Exactly one new lease, held by this attachment, for the address the pod carries.
    expect(leases().length).toBe(before + 1);
    expect(leaseOf(ip.split('/')[0]!)).toBe(`${id}\r\neth0`);
    expect(podAddrs(pod)).toEqual([ip]);
    const veths = nodeLinks().filter((l) => l.startsWith('veth'));
    expect(veths.filter((l) => l === expectedHostVeth(id, 'eth0'))).toHaveLength(1);
    expect(ok[0]!.json!.interfaces![1]!.name).toBe(expectedHostVeth(id, 'eth0'));
    // The next pod gets another address: the winner's lease was not lost.
    const other = newPod();
    const next = await run({ command: 'ADD', id: `after-${n}`, pod: other });
    expect(next.code, next.stdout).toBe(0);
    expect(next.json!.ips![0]!.address).not.toBe(ip);
    for (const [cid, p] of [[id, pod], [`after-${n}`, other]] as const) {
      expect((await run({ command: 'DEL', id: cid, pod: p })).code).toBe(0);
    }
    return outs;
  };

  it('5 concurrent identical ADDs end with one veth, one lease and identical results', async () => {
    await identicalAdds(5);
  }, 120_000);

  it('20 concurrent identical ADDs end with one veth, one lease and identical results', async () => {
    const outs = await identicalAdds(20);
    // Each waits for the one before it; none may come near a hang.
    const slowest = Math.max(...outs.map((o) => o.ms));
    console.log(`20 identical ADDs: slowest call ${Math.round(slowest)} ms`);
    for (const o of outs) expect(o.ms).toBeLessThan(30_000);
  }, 180_000);

  it('ADD racing DEL of the same attachment ends either attached with its lease or with nothing left', async () => {
    const outcomes = new Set<string>();
    for (let trial = 0; trial < 6; trial++) {
      const pod = newPod();
      const id = `race-${trial}`;
      const [add, del] = await Promise.all([
        run({ command: 'ADD', id, pod }),
        // Half the trials give ADD a head start so both orders happen.
        new Promise<void>((r) => setTimeout(r, trial % 2 === 0 ? 0 : 150)).then(() => run({ command: 'DEL', id, pod })),
      ]);
      expect(del.code, del.stdout).toBe(0);
      expect([0, 11]).toContain(add.code === 0 ? 0 : add.json?.code);
      const mine = leases().filter((ip) => leaseOf(ip).startsWith(`${id}\r\n`));
      const veth = nodeLinks().includes(expectedHostVeth(id, 'eth0'));
      const podIf = podLinks(pod).includes('eth0');
      if (mine.length === 0) {
        expect({ veth, podIf }).toEqual({ veth: false, podIf: false });
        outcomes.add('gone');
      } else {
        expect(mine).toHaveLength(1);
        expect({ veth, podIf }).toEqual({ veth: true, podIf: true });
        expect(podAddrs(pod)[0]!.split('/')[0]).toBe(mine[0]);
        outcomes.add('attached');
        expect((await run({ command: 'DEL', id, pod })).code).toBe(0);
      }
      // No lock file outlives its attachment.
      expect(readdirSync(join(dataDir, net, 'attachments'))).toEqual([]);
    }
    expect(outcomes.size).toBeGreaterThan(0);
  }, 180_000);

  it('a failing retried ADD (bad ipam.routes gateway) leaves the working attachment as it was', async () => {
    const pod = newPod();
    const first = await run({ command: 'ADD', id: 'retry', pod });
    expect(first.code, first.stdout).toBe(0);
    const bad = await hostile({
      command: 'ADD',
      id: 'retry',
      pod,
      stdin: conf({ ipam: { routes: [{ dst: '10.99.0.0/16', gw: '192.0.2.77' }] } }),
    });
    expect(bad.code).toBe(1);
    const ip = first.json!.ips![0]!.address;
    expect(leaseOf(ip.split('/')[0]!)).toBe('retry\r\neth0');
    expect(nodeLinks()).toContain(expectedHostVeth('retry', 'eth0'));
    expect(podAddrs(pod)).toEqual([ip]);
    // The same retry with the original config returns the same result.
    const again = await run({ command: 'ADD', id: 'retry', pod });
    expect(again.json).toEqual(first.json);
    const check = await run({ command: 'CHECK', id: 'retry', pod, stdin: conf({ prevResult: first.json }) });
    expect(check.code, check.stdout).toBe(0);
    expect((await run({ command: 'DEL', id: 'retry', pod })).code).toBe(0);
  }, 60_000);

  it('DEL of a never-added container ID given another pod\'s netns leaves that pod attached', async () => {
    const pod = newPod();
    const add = await run({ command: 'ADD', id: 'victim', pod });
    expect(add.code, add.stdout).toBe(0);
    const del = await hostile({ command: 'DEL', id: 'stranger', pod });
    expect(del.code, del.stdout).toBe(0);
    expect(podLinks(pod)).toContain('eth0');
    expect(nodeLinks()).toContain(expectedHostVeth('victim', 'eth0'));
    expect(leaseOf(add.json!.ips![0]!.address.split('/')[0]!)).toBe('victim\r\neth0');
    expect((await run({ command: 'DEL', id: 'victim', pod })).code).toBe(0);
    expect(podLinks(pod)).not.toContain('eth0');
  }, 60_000);

  it('refuses dataDir and logFile in /proc or /sys (also through a symlink) with code 7 naming the key', async () => {
    const pod = newPod();
    const link = join(dir, 'to-proc');
    symlinkSync('/proc/self', link);
    const cases: [Record<string, unknown>, string][] = [
      [{ dataDir: '/proc/tsf-data' }, 'dataDir'],
      [{ ipam: { dataDir: '/sys/fs/tsf' } }, 'dataDir'],
      [{ dataDir: join(link, 'tsf') }, 'dataDir'],
      [{ logFile: '/proc/self/tsf.log' }, 'logFile'],
      [{ logFile: '/sys/kernel/tsf.log' }, 'logFile'],
    ];
    for (const [extra, key] of cases) {
      for (const command of ['ADD', 'DEL']) {
        const r = await hostile({ command, id: 'kfs', pod, stdin: conf(extra) });
        expect(r.json?.code, `${command} ${JSON.stringify(extra)}: ${r.stdout}`).toBe(7);
        expect(r.json?.msg).toContain(`"${key}"`);
      }
    }
    expect(podLinks(pod)).not.toContain('eth0');
  }, 120_000);

  it('never blocks on a FIFO as lock file, logFile or subnetFile', async () => {
    const pod = newPod();
    const fifoNet = `${net}f`;
    mkdirSync(join(dataDir, fifoNet), { recursive: true });
    execFileSync('mkfifo', [join(dataDir, fifoNet, 'lock')]);
    const lock = await hostile({ command: 'ADD', id: 'fifo', pod, stdin: JSON.stringify({ ...JSON.parse(conf()), name: fifoNet }) });
    expect(lock.json?.code, lock.stdout).toBe(5);
    expect(lock.json?.msg).toContain(`rm ${join(dataDir, fifoNet, 'lock')}`);
    expect(podLinks(pod)).not.toContain('eth0');

    const fifoSubnet = join(dir, 'subnet.fifo');
    execFileSync('mkfifo', [fifoSubnet]);
    const sub = await hostile({ command: 'ADD', id: 'fifo', pod, stdin: conf({ subnetFile: fifoSubnet }) });
    expect(sub.json?.code, sub.stdout).toBe(7);

    const fifoLog = join(dir, 'log.fifo');
    execFileSync('mkfifo', [fifoLog]);
    const add = await hostile({ command: 'ADD', id: 'fifo', pod, stdin: conf({ logFile: fifoLog, logLevel: 'info' }) });
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.json?.ips).toHaveLength(1);
    expect(add.stderr).toContain('logFile');
    const del = await hostile({ command: 'DEL', id: 'fifo', pod, stdin: conf({ logFile: fifoLog, logLevel: 'info' }) });
    expect(del.code).toBe(0);
    expect(leases().filter((ip) => leaseOf(ip).startsWith('fifo\r\n'))).toEqual([]);
  }, 60_000);

  it('a logFile that cannot be opened never changes the outcome: one stderr line, result, exit 0, DEL cleans up', async () => {
    const pod = newPod();
    const plain = join(dir, 'plain-file');
    writeFileSync(plain, 'x');
    mkdirSync(join(dir, 'log-dir'), { recursive: true });
    for (const logFile of [join(dir, 'log-dir'), '/dev/full', join(plain, 'sub.log')]) {
      const cfg = conf({ logFile, logLevel: 'info' });
      const add = await hostile({ command: 'ADD', id: 'badlog', pod, stdin: cfg });
      expect(add.code, `${logFile}: ${add.stdout}${add.stderr}`).toBe(0);
      expect(add.json?.ips).toHaveLength(1);
      const notes = add.stderr.split('\n').filter((l) => l.includes('logFile'));
      expect(notes, add.stderr).toHaveLength(1);
      expect(add.stderr).not.toMatch(/\n\s+at /);
      expect(add.stderr).not.toContain('sonic-boom');
      const del = await hostile({ command: 'DEL', id: 'badlog', pod, stdin: cfg });
      expect(del.code, del.stdout).toBe(0);
      expect(nodeLinks()).not.toContain(expectedHostVeth('badlog', 'eth0'));
      expect(leases().filter((ip) => leaseOf(ip).startsWith('badlog\r\n'))).toEqual([]);
    }
  }, 120_000);

  it('refuses "%" in bridge (7) and CNI_IFNAME (4) before creating anything', async () => {
    const pod = newPod();
    const before = nodeLinks();
    const br = await hostile({ command: 'ADD', id: 'pct', pod, stdin: conf({ bridge: 'br%d' }) });
    expect(br.json?.code, br.stdout).toBe(7);
    const ifn = await hostile({ command: 'ADD', id: 'pct', pod, ifname: 'eth%d' });
    expect(ifn.json?.code, ifn.stdout).toBe(4);
    expect(nodeLinks()).toEqual(before);
    expect(podLinks(pod)).toEqual(['lo']);
  }, 60_000);

  it('caps echoed input: a 512 KB bridge name and a 64 KB subnet path give short messages', async () => {
    const pod = newPod();
    const huge = await hostile({ command: 'ADD', id: 'big', pod, stdin: conf({ bridge: 'b'.repeat(512 * 1024) }) });
    expect(huge.json?.code).toBe(7);
    expect(huge.stdout.length).toBeLessThan(600);
    expect(huge.json?.msg).toContain('…');
    const long = await hostile({ command: 'ADD', id: 'big', pod, stdin: conf({ subnetFile: `/${'p'.repeat(65536)}` }) });
    expect(long.json?.code).toBeGreaterThan(0);
    expect(long.stdout.length).toBeLessThan(1200);
  }, 60_000);

  it('refuses insane subnets and ranges with code 7 naming the key', async () => {
    const pod = newPod();
    const file = join(dir, 'bad-subnet.env');
    const subnetCase = async (network: string, subnet: string, key: string) => {
      writeFileSync(file, `FLANNEL_NETWORK=${network}\nFLANNEL_SUBNET=${subnet}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n`);
      const r = await hostile({ command: 'ADD', id: 'sane', pod, stdin: conf({ subnetFile: file }) });
      expect(r.json?.code, `${subnet}: ${r.stdout}`).toBe(7);
      expect(r.json?.msg).toContain(key);
    };
    await subnetCase('10.244.0.0/16', '10.245.3.1/24', 'FLANNEL_SUBNET');
    await subnetCase('127.0.0.0/8', '127.0.5.1/24', 'loopback');
    await subnetCase('224.0.0.0/4', '224.1.1.1/24', 'multicast');
    await subnetCase('169.254.0.0/16', '169.254.3.1/24', 'link-local');
    await subnetCase('10.244.0.0/16', '10.244.5.255/24', 'broadcast');
    const ranges = await hostile({
      command: 'ADD',
      id: 'sane',
      pod,
      stdin: conf({ ipam: { ranges: [[{ subnet: '10.250.0.0/24' }]] } }),
    });
    expect(ranges.json?.code, ranges.stdout).toBe(7);
    expect(ranges.json?.msg).toContain('ipam.ranges[0][0].subnet');
    const dns = await hostile({ command: 'ADD', id: 'sane', pod, stdin: conf({ dns: { nameservers: ['not-an-ip'] } }) });
    expect(dns.json?.code, dns.stdout).toBe(7);
    expect(dns.json?.msg).toContain('dns.nameservers[0]');
    expect(podLinks(pod)).toEqual(['lo']);
  }, 60_000);

  it('FLANNEL_SUBNET written as the network address gives the bridge .1, as flannel does', async () => {
    const pod = newPod();
    const file = join(dir, 'netaddr.env');
    writeFileSync(file, 'FLANNEL_NETWORK=10.246.0.0/16\nFLANNEL_SUBNET=10.246.5.0/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    const cfg = conf({ subnetFile: file, bridge: 'cni9', name: `${net}n` });
    const add = await run({ command: 'ADD', id: 'netaddr', pod, stdin: JSON.stringify({ ...JSON.parse(cfg), name: `${net}n` }) });
    expect(add.code, add.stdout).toBe(0);
    expect(inNs(node, 'ip', ['-4', '-o', 'addr', 'show', 'cni9'])).toContain('inet 10.246.5.1/24');
    expect(add.json?.ips?.[0]).toMatchObject({ address: '10.246.5.2/24', gateway: '10.246.5.1' });
    expect((await run({ command: 'DEL', id: 'netaddr', pod, stdin: JSON.stringify({ ...JSON.parse(cfg), name: `${net}n` }) })).code).toBe(0);
  }, 60_000);

  it('gives spec codes: ifname lo or taken in the pod 4, bridge naming a non-bridge 7, stale bridge address 7', async () => {
    const pod = newPod();
    const lo = await hostile({ command: 'ADD', id: 'codes', pod, ifname: 'lo' });
    expect(lo.json?.code, lo.stdout).toBe(4);
    inNs(pod, 'ip', ['link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p']);
    const taken = await hostile({ command: 'ADD', id: 'codes', pod, ifname: 'eth1' });
    expect(taken.json?.code, taken.stdout).toBe(4);
    expect(podLinks(pod)).toContain('eth1');
    expect(leases().filter((ip) => leaseOf(ip).startsWith('codes\r\n'))).toEqual([]);

    inNs(node, 'ip', ['link', 'add', 'notabr0', 'type', 'veth', 'peer', 'name', 'notabr0p']);
    const nonBridge = await hostile({ command: 'ADD', id: 'codes', pod, stdin: conf({ bridge: 'notabr0' }) });
    expect(nonBridge.json?.code, nonBridge.stdout).toBe(7);
    expect(nonBridge.json?.msg).toContain('not a bridge');

    inNs(node, 'ip', ['link', 'add', 'stalebr0', 'type', 'bridge']);
    inNs(node, 'ip', ['addr', 'add', '10.200.0.1/24', 'dev', 'stalebr0']);
    const stale = await hostile({ command: 'ADD', id: 'codes', pod, stdin: conf({ bridge: 'stalebr0' }) });
    expect(stale.json?.code, stale.stdout).toBe(7);
    expect(stale.json?.msg).toContain('forceAddress');
    expect(podLinks(pod)).not.toContain('eth0');
  }, 60_000);

  it('answers an empty, unknown or missing CNI_COMMAND of a runtime-style call with the spec error JSON, code 4', async () => {
    const pod = newPod();
    for (const env of [{ CNI_COMMAND: '' }, { CNI_COMMAND: 'ATTACH' }]) {
      const r = await hostile({ command: '', noCommand: true, id: 'cmd', pod, env });
      expect(r.code).toBe(1);
      expect(r.json?.code, r.stdout).toBe(4);
    }
    const unset = await hostile({ command: '', noCommand: true, id: 'cmd', pod });
    expect(unset.json?.code, unset.stdout + unset.stderr).toBe(4);
    expect(unset.json?.msg).toContain('CNI_COMMAND');
  }, 60_000);

  it('a lock path that is a directory gives code 5 saying what to remove', async () => {
    const pod = newPod();
    const lockNet = `${net}d`;
    mkdirSync(join(dataDir, lockNet, 'lock'), { recursive: true });
    const cfg = JSON.stringify({ ...JSON.parse(conf()), name: lockNet });
    for (const command of ['ADD', 'DEL']) {
      const r = await hostile({ command, id: 'lockdir', pod, stdin: cfg });
      expect(r.json?.code, r.stdout).toBe(5);
      expect(r.json?.msg).toContain(`rmdir ${join(dataDir, lockNet, 'lock')}`);
    }
  }, 60_000);

  it('refuses unknown CNI_ARGS keys unless IgnoreUnknown=1, as the reference does', async () => {
    const pod = newPod();
    const refused = await hostile({ command: 'ADD', id: 'args', pod, env: { CNI_ARGS: 'FOO=1;K8S_POD_NAME=p' } });
    expect(refused.json?.code, refused.stdout).toBe(4);
    expect(refused.json?.msg).toBe('ARGS: unknown args ["FOO"]');
    expect(podLinks(pod)).toEqual(['lo']);
    const allowed = await run({ command: 'ADD', id: 'args', pod, env: { CNI_ARGS: 'IgnoreUnknown=1;FOO=1;K8S_POD_NAME=p' } });
    expect(allowed.code, allowed.stdout).toBe(0);
    expect((await run({ command: 'DEL', id: 'args', pod, env: { CNI_ARGS: 'IgnoreUnknown=1;FOO=1' } })).code).toBe(0);
  }, 60_000);

  it('writes one stderr line per error, with no stack trace below log level debug', async () => {
    const pod = newPod();
    const outside = { ipam: { ranges: [[{ subnet: '10.250.0.0/24' }]] } };
    const r = await hostile({ command: 'ADD', id: 'stack', pod, stdin: conf(outside) });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    expect(r.stderr).not.toMatch(/\bat .*\.js:\d+/);
    const debug = await hostile({ command: 'ADD', id: 'stack', pod, stdin: conf({ ...outside, logLevel: 'debug' }) });
    expect(debug.stderr).toMatch(/"stack":".*\.js:\d+/);
  }, 60_000);

  it('sets arp_notify=1 on the pod interface, as the reference bridge plugin does', async () => {
    const pod = newPod();
    const add = await run({ command: 'ADD', id: 'arp', pod });
    expect(add.code, add.stdout).toBe(0);
    // /proc/sys/net shows the reader's netns, and cat runs inside the pod's.
    expect(inNs(pod, 'cat', ['/proc/sys/net/ipv4/conf/eth0/arp_notify']).trim()).toBe('1');
    expect((await run({ command: 'DEL', id: 'arp', pod })).code).toBe(0);
  }, 60_000);

  it('CHECK refuses a prevResult whose ips[].interface points at no interface or at the host veth (7)', async () => {
    const pod = newPod();
    const add = await run({ command: 'ADD', id: 'chk', pod });
    expect(add.code, add.stdout).toBe(0);
    const prev = add.json!;
    for (const index of [7, 0, 1]) {
      const broken = { ...prev, ips: prev.ips!.map((ip) => ({ ...ip, interface: index })) };
      const r = await hostile({ command: 'CHECK', id: 'chk', pod, stdin: conf({ prevResult: broken }) });
      expect(r.json?.code, `index ${index}: ${r.stdout}`).toBe(7);
    }
    const good = await run({ command: 'CHECK', id: 'chk', pod, stdin: conf({ prevResult: prev }) });
    expect(good.code, good.stdout).toBe(0);
    expect((await run({ command: 'DEL', id: 'chk', pod })).code).toBe(0);
  }, 60_000);

  it('maps a kernel EPERM (no CAP_NET_ADMIN) to code 5 instead of 999', async () => {
    const pod = newPod();
    // The plugin runs without CAP_NET_ADMIN, as in a container that lacks it.
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'eperm',
      CNI_NETNS: nsPath(pod),
      CNI_IFNAME: 'eth0',
      CNI_PATH: '/opt/cni/bin',
    };
    const denied = await spawnPlugin({
      nodeNs: node,
      env,
      stdin: conf({ bridge: 'cnieperm' }),
      wrapper: ['setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin'],
      timeoutMs: 30_000,
    });
    expect(denied.ms).toBeLessThan(MAX_CALL_MS);
    const json = parsed(denied);
    expect(json?.code, denied.stdout).toBe(5);
    expect(json?.msg).toContain('permission denied');
    expect(nodeLinks()).not.toContain('cnieperm');
  }, 60_000);

  it('GC drops the attachment lock files of attachments it collects, DEL drops its own', async () => {
    const pod = newPod();
    const gcNet = `${net}g`;
    const cfg = (extra: Record<string, unknown> = {}) => JSON.stringify({ ...JSON.parse(conf()), name: gcNet, ...extra });
    const locks = () => readdirSync(join(dataDir, gcNet, 'attachments'));
    expect((await run({ command: 'ADD', id: 'gc-a', pod, stdin: cfg() })).code).toBe(0);
    const podB = newPod();
    expect((await run({ command: 'ADD', id: 'gc-b', pod: podB, stdin: cfg() })).code).toBe(0);
    expect(locks()).toHaveLength(2);
    const gc = await run({ command: 'GC', stdin: cfg({ 'cni.dev/valid-attachments': [{ containerID: 'gc-b', ifname: 'eth0' }] }) });
    expect(gc.code, gc.stdout).toBe(0);
    expect(locks()).toHaveLength(1);
    expect((await run({ command: 'DEL', id: 'gc-b', pod: podB, stdin: cfg() })).code).toBe(0);
    expect(locks()).toEqual([]);
  }, 60_000);

  it('doctor --netns and status --subnet-file refuse a FIFO at once instead of blocking in open()', () => {
    const fifo = join(dir, 'netns.fifo');
    execFileSync('mkfifo', [fifo]);
    const started = Date.now();
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('../../bin/tsflannel', import.meta.url)), 'doctor', '--netns', fifo], {
      encoding: 'utf8',
      timeout: 20_000,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    expect(r.error, 'doctor hung').toBeUndefined();
    expect(Date.now() - started).toBeLessThan(MAX_CALL_MS);
    expect(r.status).not.toBe(0);
    expect(r.stderr + r.stdout).toContain('not a network namespace');
    // The same guard for --subnet-file: reported as unusable, never waited on.
    const started2 = Date.now();
    const s = spawnSync(process.execPath, [fileURLToPath(new URL('../../bin/tsflannel', import.meta.url)), 'status', '--subnet-file', fifo, '--json'], {
      encoding: 'utf8',
      timeout: 20_000,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    expect(s.error, 'status hung on a FIFO subnet file').toBeUndefined();
    expect(Date.now() - started2).toBeLessThan(MAX_CALL_MS);
    expect(s.stdout).toContain('not a regular file');
  });
});
