// The pod MAC a runtime asks for, the three ways the reference bridge plugin
// reads it (runtimeConfig.mac, the `mac` capability; args.cni.mac; CNI_ARGS
// MAC=), with the reference's precedence: the real tsflannel binary on a node
// netns, the pod's interface read back with `ip -n <pod> link`, and the same
// requests given to Debian's reference bridge for comparison. The last suite
// goes the way a runtime does: libcni (tsf-cnitool) with a conflist declaring
// the capability, through the forwarder to an agent serving the CNI socket.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { addNetns, cleanupAll, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { callPlugin, isLeaseFile, type CniCall } from '../helpers/plugin.js';
import { CNI_REF_DIR, haveRefPlugins, refPlugin } from '../helpers/reference.js';
import { requireOrSkip } from '../helpers/require.js';
import { buildCnitool, runCnitool, type CnitoolOptions } from '../helpers/cnitool.js';
import { forwarderBuilt, installForwarder, startCniAgent, type RunningAgent } from '../helpers/cni-agent.js';

const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

/** The MAC of `ifname` in a netns, as the kernel reports it. */
function macIn(ns: string, ifname = 'eth0'): string {
  return ipJson<{ address: string }[]>(ns, ['link', 'show', 'dev', ifname])[0]!.address;
}

function linksIn(ns: string): string[] {
  return ipJson<{ ifname: string }[]>(ns, ['link', 'show']).map((l) => l.ifname);
}

describe.skipIf(requireOrSkip('pod MAC', { root: isRoot }))('tsflannel gives the pod the MAC the runtime asks for', () => {
  let node = '';
  let dir = '';
  let subnetFile = '';
  let dataDir = '';
  const netName = `tsfmac${process.pid}`;
  const conf = (extra: Record<string, unknown> = {}) => ({
    cniVersion: '1.1.0', name: netName, type: 'tsflannel', subnetFile, dataDir, agentSocket: '', ...extra,
  });
  const call = (c: Omit<CniCall, 'nodeNs'>) => callPlugin({ nodeNs: node, ...c });
  const add = (id: string, pod: string, stdin: object, args?: string) =>
    call({ command: 'ADD', containerId: id, netns: nsPath(pod), ifname: 'eth0', stdin, ...(args === undefined ? {} : { args }) });
  const del = (id: string, pod: string) => call({ command: 'DEL', containerId: id, netns: nsPath(pod), ifname: 'eth0', stdin: conf() });
  const leases = () => readdirSync(join(dataDir, netName)).filter(isLeaseFile);

  beforeAll(() => {
    node = addNetns('macnode');
    dir = mkdtempSync(join(tmpdir(), 'tsf-mac-'));
    subnetFile = join(dir, 'subnet.env');
    dataDir = join(dir, 'networks');
    writeFileSync(subnetFile, SUBNET_ENV);
  });
  afterAll(() => {
    cleanupAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ADD gives eth0 the runtimeConfig.mac, reports it as the interface mac in the result, and CHECK passes', async () => {
    const pod = addNetns('macrc');
    const added = await add('mac-rc', pod, conf({ runtimeConfig: { mac: 'C2:11:22:33:44:55' } }));
    expect(added.code, added.stdout + added.stderr).toBe(0);
    expect(macIn(pod)).toBe('c2:11:22:33:44:55');
    const ifaces = added.json?.interfaces as { name: string; mac: string; sandbox?: string }[];
    expect(ifaces[2]).toEqual({ name: 'eth0', mac: 'c2:11:22:33:44:55', sandbox: nsPath(pod) });
    // The pod still reaches its gateway: the address is a working unicast one.
    expect(execFileSync('ip', ['netns', 'exec', pod, 'ping', '-c1', '-W2', '10.244.1.1']).toString()).toContain('1 received');
    const check = await call({ command: 'CHECK', containerId: 'mac-rc', netns: nsPath(pod), ifname: 'eth0', stdin: conf({ runtimeConfig: { mac: 'c2:11:22:33:44:55' }, prevResult: added.json }) });
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect((await del('mac-rc', pod)).code).toBe(0);
  });

  it('CHECK fails naming both MACs when eth0 no longer carries the asked one, even with a prevResult that lists no mac', async () => {
    const pod = addNetns('macchk');
    const asked = conf({ runtimeConfig: { mac: '0a:58:0a:f4:01:63' } });
    const added = await add('mac-chk', pod, asked);
    expect(added.code, added.stdout + added.stderr).toBe(0);
    // A chained plugin may pass the result on without the interface's mac.
    const prevResult = structuredClone(added.json!) as { interfaces: { mac?: string }[] };
    for (const i of prevResult.interfaces) delete i.mac;
    const check = () => call({ command: 'CHECK', containerId: 'mac-chk', netns: nsPath(pod), ifname: 'eth0', stdin: { ...asked, prevResult } });
    expect((await check()).code).toBe(0);
    execFileSync('ip', ['-n', pod, 'link', 'set', 'eth0', 'address', '0a:58:0a:f4:01:64']);
    const out = await check();
    expect(out.code, out.stdout).toBe(1);
    expect(out.json?.msg).toBe('interface eth0 has MAC 0a:58:0a:f4:01:64, but 0a:58:0a:f4:01:63 was asked for');
    expect((await del('mac-chk', pod)).code).toBe(0);
  });

  it('takes runtimeConfig.mac over args.cni.mac over CNI_ARGS MAC=, and CNI_ARGS MAC= without IgnoreUnknown', async () => {
    const cases = [
      { label: 'macall', rc: '0a:00:00:00:00:01', args: '0a:00:00:00:00:02', env: '0a:00:00:00:00:03', want: '0a:00:00:00:00:01' },
      { label: 'macargs', args: '0a:00:00:00:00:12', env: '0a:00:00:00:00:13', want: '0a:00:00:00:00:12' },
      { label: 'macenv', env: '0A-00-00-00-00-23', want: '0a:00:00:00:00:23' },
      // An empty value asks for nothing, as in the reference: the next source wins.
      { label: 'macempty', rc: '', args: '', env: '0a:00:00:00:00:33', want: '0a:00:00:00:00:33' },
    ];
    for (const c of cases) {
      const pod = addNetns(c.label);
      const extra: Record<string, unknown> = {};
      if (c.rc !== undefined) extra.runtimeConfig = { mac: c.rc };
      if (c.args !== undefined) extra.args = { cni: { mac: c.args } };
      const out = await add(c.label, pod, conf(extra), c.env === undefined ? undefined : `MAC=${c.env}`);
      expect(out.code, `${c.label}: ${out.stdout}${out.stderr}`).toBe(0);
      expect(macIn(pod), c.label).toBe(c.want);
      expect((out.json?.interfaces as { mac: string }[])[2]!.mac, c.label).toBe(c.want);
      expect((await del(c.label, pod)).code).toBe(0);
    }
  });

  it('refuses a malformed, multicast or zero MAC before touching anything: code 7 from the config, 4 from CNI_ARGS, naming it; DEL of the same config succeeds', async () => {
    const pod = addNetns('macbad');
    const cases: { stdin: object; args?: string; code: number; msg: string }[] = [
      { stdin: conf({ runtimeConfig: { mac: 'c2:11:22:33:44' } }), code: 7, msg: 'runtimeConfig.mac: invalid MAC address "c2:11:22:33:44"' },
      { stdin: conf({ args: { cni: { mac: '01:00:5e:00:00:01' } } }), code: 7, msg: 'args.cni.mac: 01:00:5e:00:00:01 is a multicast address; a pod interface needs a unicast MAC' },
      { stdin: conf(), args: 'MAC=00:00:00:00:00:00', code: 4, msg: 'CNI_ARGS MAC: 00:00:00:00:00:00 is the all-zero address; a pod interface needs a unicast MAC' },
      { stdin: conf({ runtimeConfig: { mac: 42 } }), code: 7, msg: 'runtimeConfig.mac must be a string, got 42' },
    ];
    for (const c of cases) {
      const out = await add('mac-bad', pod, c.stdin, c.args);
      expect(out.code, out.stdout).toBe(1);
      expect([out.json?.code, out.json?.msg]).toEqual([c.code, c.msg]);
    }
    expect(linksIn(pod)).toEqual(['lo']);
    expect(leases()).toEqual([]);
    // DEL reads no MAC: a bad request never blocks the cleanup.
    for (const c of cases) {
      const out = await call({ command: 'DEL', containerId: 'mac-bad', netns: nsPath(pod), ifname: 'eth0', stdin: c.stdin, ...(c.args ? { args: c.args } : {}) });
      expect(out.code, out.stdout).toBe(0);
    }
  });

  it('a retried ADD asking for the MAC eth0 has returns the attachment; one asking for another fails naming both and leaves the pod as it was', async () => {
    const pod = addNetns('macretry');
    const first = await add('mac-retry', pod, conf({ runtimeConfig: { mac: '0a:00:00:00:00:41' } }));
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const same = await add('mac-retry', pod, conf({ runtimeConfig: { mac: '0a:00:00:00:00:41' } }));
    expect(same.code, same.stdout + same.stderr).toBe(0);
    expect(same.json?.interfaces).toEqual(first.json?.interfaces);
    const other = await add('mac-retry', pod, conf({ runtimeConfig: { mac: '0a:00:00:00:00:42' } }));
    expect(other.code, other.stdout).toBe(1);
    expect(other.json?.msg).toBe('interface eth0 already has MAC 0a:00:00:00:00:41, not the requested 0a:00:00:00:00:42');
    expect(macIn(pod)).toBe('0a:00:00:00:00:41');
    expect(leases()).toHaveLength(1);
    expect((await del('mac-retry', pod)).code).toBe(0);
    expect(leases()).toEqual([]);
  });

  describe.skipIf(requireOrSkip('reference bridge MAC', { [`the reference bridge in ${CNI_REF_DIR}`]: haveRefPlugins('bridge') }))('against the reference bridge', () => {
    it('picks the same MAC as the reference bridge from the same three sources', async () => {
      const sources = [
        { rc: '0a:00:00:00:01:01', args: '0a:00:00:00:01:02', env: '0a:00:00:00:01:03' },
        { args: '0a:00:00:00:02:02', env: '0a:00:00:00:02:03' },
        { env: '0a:00:00:00:03:03' },
      ];
      for (const [i, s] of sources.entries()) {
        const extra: Record<string, unknown> = {};
        if (s.rc) extra.runtimeConfig = { mac: s.rc };
        if (s.args) extra.args = { cni: { mac: s.args } };
        const args = `IgnoreUnknown=1;MAC=${s.env}`;
        const ours = addNetns(`macours${i}`);
        const theirs = addNetns(`macref${i}`);
        const mine = await add(`mac-cmp${i}`, ours, conf(extra), args);
        expect(mine.code, mine.stdout + mine.stderr).toBe(0);
        // L2 only (ipam {}): the reference bridge makes the veth and sets nothing else.
        const ref = await call({
          command: 'ADD', containerId: `mac-ref${i}`, netns: nsPath(theirs), ifname: 'eth0', args, bin: refPlugin('bridge'),
          stdin: { cniVersion: '1.0.0', name: 'macref', type: 'bridge', bridge: 'macref0', ipam: {}, ...extra },
        });
        expect(ref.code, ref.stdout + ref.stderr).toBe(0);
        expect(macIn(ours), `source set ${i}`).toBe(macIn(theirs));
        expect((mine.json?.interfaces as { mac: string }[])[2]!.mac).toBe((ref.json?.interfaces as { mac: string }[])[2]!.mac);
        expect((await del(`mac-cmp${i}`, ours)).code).toBe(0);
      }
    });
  });
});

describe.skipIf(requireOrSkip('pod MAC through libcni', {
  root: isRoot,
  'the forwarder (scripts/build-forward.sh)': forwarderBuilt,
}))('the mac capability through libcni, the forwarder and the agent', () => {
  let agent: RunningAgent | undefined;
  let node = '';
  let pod = '';
  let dir = '';
  let binDir = '';
  let netconfDir = '';
  let cacheDir = '';
  let dataDir = '';
  let subnetFile = '';
  let agentSocket = '';
  const netName = `tsfmaccap${process.pid}`;
  const opts = (extra: Partial<CnitoolOptions> = {}): CnitoolOptions => ({
    netconfDir, netName, netnsPath: nsPath(pod), cniPath: [binDir], cacheDir, nsExec: node, containerId: 'maccap-ctr', ...extra,
  });
  // Debian's libcni speaks up to 1.0.0.
  const writeConflist = (capabilities?: object) => writeFileSync(join(netconfDir, '10-tsflannel.conflist'), JSON.stringify({
    cniVersion: '1.0.0',
    name: netName,
    plugins: [{ type: 'tsflannel', subnetFile, dataDir, agentSocket, ...(capabilities ? { capabilities } : {}) }],
  }));

  beforeAll(async () => {
    buildCnitool();
    node = addNetns('maccapnode');
    pod = addNetns('maccappod');
    dir = mkdtempSync(join(tmpdir(), 'tsf-maccap-'));
    binDir = join(dir, 'bin');
    netconfDir = join(dir, 'net.d');
    cacheDir = join(dir, 'cache');
    dataDir = join(dir, 'ipam');
    subnetFile = join(dir, 'subnet.env');
    agentSocket = join(dir, 'run', 'cni.sock');
    installForwarder(binDir);
    mkdirSync(netconfDir);
    writeFileSync(subnetFile, SUBNET_ENV);
    agent = await startCniAgent({ socket: agentSocket, nodeNs: node });
  }, 60_000);
  afterAll(async () => {
    await agent?.stop();
    cleanupAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('with "capabilities": {"mac": true} the pod gets CAP_ARGS mac, served by the agent, and check passes', async () => {
    writeConflist({ mac: true });
    const out = await runCnitool('add', opts({ capArgs: { mac: '0a:58:0a:f4:01:07' } }));
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(out.stderr).not.toContain('running standalone');
    expect(macIn(pod)).toBe('0a:58:0a:f4:01:07');
    expect((out.json as { interfaces: { mac: string }[] }).interfaces[2]!.mac).toBe('0a:58:0a:f4:01:07');
    const check = await runCnitool('check', opts({ capArgs: { mac: '0a:58:0a:f4:01:07' } }));
    expect(check.code, check.stdout + check.stderr).toBe(0);
    const del = await runCnitool('del', opts({ capArgs: { mac: '0a:58:0a:f4:01:07' } }));
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(linksIn(pod)).toEqual(['lo']);
  });

  it('without the capability declared, libcni passes no mac and the kernel picks one', async () => {
    writeConflist();
    const out = await runCnitool('add', opts({ capArgs: { mac: '0a:58:0a:f4:01:08' } }));
    expect(out.code, out.stdout + out.stderr).toBe(0);
    const mac = macIn(pod);
    expect(mac).not.toBe('0a:58:0a:f4:01:08');
    expect((out.json as { interfaces: { mac: string }[] }).interfaces[2]!.mac).toBe(mac);
    expect((await runCnitool('del', opts())).code).toBe(0);
  });
});
