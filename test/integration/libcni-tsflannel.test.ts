// tsflannel under libcni (Debian's, through tsf-cnitool) chained with the
// reference portmap, plus what real runtimes send: CNI_ARGS in any order,
// both portMappings spellings, and the loopback plugin in parallel. The same
// assertions run with the CNI bin dir laid out as `tsflannel install` lays
// it out (the forwarder as tsflannel, the standalone beside it) with the
// node's agent serving and with it stopped, and with the standalone plugin
// alone as tsflannel.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addNetns, cleanupAll, inNs, ipJson, isRoot, nsPath } from '../helpers/netns.js';
import { buildCnitool, runCnitool, type CnitoolOptions } from '../helpers/cnitool.js';
import { callPlugin, PLUGIN_BIN } from '../helpers/plugin.js';
import { CNI_REF_DIR, haveRefPlugins } from '../helpers/reference.js';
import { requireOrSkip } from '../helpers/require.js';
import { forwarderBuilt, installForwarder, startCniAgent, STANDALONE, VIA_AGENT, VIA_FALLBACK, type CniPath, type RunningAgent } from '../helpers/cni-agent.js';

const REF = CNI_REF_DIR;

const paths: CniPath[] = [STANDALONE, VIA_AGENT, VIA_FALLBACK];

describe.skipIf(requireOrSkip('libcni chain', { root: isRoot, [`reference portmap and loopback in ${REF}`]: haveRefPlugins('portmap', 'loopback'), 'the forwarder (scripts/build-forward.sh)': forwarderBuilt })).each(paths)('tsflannel through libcni, chained with portmap: $name', (path) => {
  let agent: RunningAgent | undefined;
  let agentSocket = '';
  let node = '';
  let pod = '';
  let dir = '';
  let binDir = '';
  let netconfDir = '';
  let cacheDir = '';
  let dataDir = '';
  let subnetFile = '';
  const netName = `tsflib${process.pid}`;
  const portMappings = [{ hostPort: 18081, containerPort: 8080, protocol: 'tcp' }];
  const opts = (extra: Partial<CnitoolOptions> = {}): CnitoolOptions => ({
    netconfDir, netName, netnsPath: nsPath(pod), cniPath: [binDir, REF], cacheDir, nsExec: node, containerId: 'libcni-ctr', ...extra,
  });
  const leases = () => readdirSync(join(dataDir, netName)).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
  const nat = () => inNs(node, 'iptables', ['-w', '-t', 'nat', '-S']);

  beforeAll(async () => {
    buildCnitool();
    node = addNetns('lnode');
    pod = addNetns('lpod');
    dir = mkdtempSync(join(tmpdir(), 'tsf-libcni-'));
    binDir = join(dir, 'bin');
    netconfDir = join(dir, 'net.d');
    cacheDir = join(dir, 'cache');
    dataDir = join(dir, 'ipam');
    subnetFile = join(dir, 'subnet.env');
    mkdirSync(netconfDir);
    agentSocket = join(dir, 'run', 'cni.sock');
    if (path === STANDALONE) {
      mkdirSync(binDir);
      symlinkSync(PLUGIN_BIN, join(binDir, 'tsflannel'));
    } else {
      installForwarder(binDir);
    }
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    writeFileSync(join(netconfDir, '10-tsflannel.conflist'), JSON.stringify({
      cniVersion: '1.0.0',
      name: netName,
      plugins: [
        { type: 'tsflannel', subnetFile, dataDir, agentSocket },
        { type: 'portmap', capabilities: { portMappings: true }, snat: true },
      ],
    }));
    if (path.agent) agent = await startCniAgent({ socket: agentSocket, nodeNs: node });
  }, 60_000);
  afterAll(async () => {
    await agent?.stop();
    cleanupAll();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('add returns the pod IP, caches the result and installs the hostPort DNAT', async () => {
    const out = await runCnitool('add', opts({ capArgs: { portMappings } }));
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(out.stderr.includes('running standalone'), out.stderr).toBe(path === VIA_FALLBACK);
    const result = out.json as { ips: { address: string; gateway: string }[]; interfaces: { name: string; sandbox?: string }[] };
    expect(result.ips[0]).toEqual({ address: '10.244.1.2/24', gateway: '10.244.1.1', interface: 2 });
    expect(result.interfaces[2]).toMatchObject({ name: 'eth0', sandbox: nsPath(pod) });
    expect(existsSync(join(cacheDir, 'results', `${netName}-libcni-ctr-eth0`))).toBe(true);
    expect(nat()).toMatch(/--dport 18081 .*DNAT --to-destination 10\.244\.1\.2:8080/);
    expect(leases()).toEqual(['10.244.1.2']);
  });

  it('the hostPort reaches a server in the pod', async () => {
    const server = spawn('ip', ['netns', 'exec', pod, process.execPath, '-e',
      "require('net').createServer(s=>s.end('hello from pod')).listen(8080,'0.0.0.0',()=>console.log('up'))"]);
    try {
      await new Promise<void>((resolve, reject) => {
        server.stdout.once('data', () => resolve());
        server.once('exit', (code) => reject(new Error(`server exited ${code}`)));
      });
      // From the node itself: portmap's OUTPUT rule DNATs local destinations.
      const reply = inNs(node, process.execPath, ['-e',
        "const s=require('net').connect(18081,'10.244.1.1');let d='';s.on('data',b=>d+=b);s.on('end',()=>console.log(d));s.on('error',e=>{console.log('ERR '+e.message)})"]);
      expect(reply.trim()).toBe('hello from pod');
    } finally {
      server.kill();
    }
  });

  it('check passes through libcni with the cached result', async () => {
    // Without CAP_ARGS: Debian's portmap 1.1.1 CHECK looks for its IPv4
    // chain in ip6tables (containernetworking/plugins#819).
    const out = await runCnitool('check', opts());
    expect(out.code, out.stdout + out.stderr).toBe(0);
  });

  it('del removes veth, lease, DNAT and cache; a second del succeeds', async () => {
    const out = await runCnitool('del', opts({ capArgs: { portMappings } }));
    expect(out.code, out.stdout + out.stderr).toBe(0);
    expect(leases()).toEqual([]);
    expect(nat()).not.toContain('18081');
    expect(ipJson<unknown[]>(node, ['link', 'show', 'type', 'veth'])).toEqual([]);
    expect(existsSync(join(cacheDir, 'results', `${netName}-libcni-ctr-eth0`))).toBe(false);
    const again = await runCnitool('del', opts({ capArgs: { portMappings } }));
    expect(again.code, again.stdout + again.stderr).toBe(0);
  });

  it('accepts what kubelet runtimes send: CNI_ARGS in any order, both portMappings spellings, loopback in parallel', async () => {
    const p = addNetns('lpod2');
    const conf = (runtimeConfig: object) => ({ cniVersion: '1.0.0', name: netName, type: 'tsflannel', subnetFile, dataDir, agentSocket, runtimeConfig });
    const bin = join(binDir, 'tsflannel');
    const args = 'K8S_POD_UID=5b0f-11;IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_INFRA_CONTAINER_ID=infra1;K8S_POD_NAME=web-0';
    const [mine, loop] = await Promise.all([
      callPlugin({
        nodeNs: node, command: 'ADD', containerId: 'infra1', netns: nsPath(p), ifname: 'eth0', args, path: REF, bin,
        stdin: conf({ portMappings: [{ hostPort: 8443, containerPort: 443, protocol: 'tcp' }] }),
      }),
      callPlugin({
        nodeNs: node, command: 'ADD', containerId: 'infra1', netns: nsPath(p), ifname: 'lo', args, path: REF, bin: join(REF, 'loopback'),
        stdin: { cniVersion: '1.0.0', name: 'cni-loopback', type: 'loopback' },
      }),
    ]);
    expect(mine.code, mine.stdout + mine.stderr).toBe(0);
    expect(loop.code, loop.stdout + loop.stderr).toBe(0);
    expect(inNs(p, 'ip', ['-o', 'link', 'show', 'lo'])).toMatch(/UP/);
    expect(inNs(p, 'ping', ['-c1', '-W2', '10.244.1.1'])).toContain('1 received');
    const upper = await callPlugin({
      nodeNs: node, command: 'DEL', containerId: 'infra1', netns: nsPath(p), ifname: 'eth0', args, path: REF, bin,
      stdin: conf({ portMappings: [{ HostPort: 8443, ContainerPort: 443, Protocol: 'TCP', HostIP: '' }] }),
    });
    expect(upper.code, upper.stdout + upper.stderr).toBe(0);
    expect(leases()).toEqual([]);
  });
});
