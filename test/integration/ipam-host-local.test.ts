// Interoperability with the reference host-local plugin
// (/usr/lib/cni/host-local from Debian's containernetworking-plugins): both
// implementations share one store, see each other's leases, and serialise on
// the same flock.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { constants as fsc, existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { HostLocalIpam, type Allocation, type IpamConfig, type IpamRange } from '../../src/ipam/index.js';
import { flock, funlock } from '../../src/netlink/index.js';
import { refPlugin } from '../helpers/reference.js';
import { requireOrSkip } from '../helpers/require.js';

const REFERENCE = refPlugin('host-local');
const haveReference = existsSync(REFERENCE);

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const SHIM = path.join(REPO, 'native/build/libtsfnl.so');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, stdin = ''): { child: ReturnType<typeof spawn>; done: Promise<Run> } {
  const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
  child.stdin!.end(stdin);
  return { child, done };
}

let dataDir: string;
let bundleDir: string;
let network: string;
let counter = 0;
const SUBNET = '10.77.0.0/24';

function refConfig(): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: network,
    type: 'host-local',
    ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: SUBNET }]] },
  });
}

function ours(extra: Partial<IpamConfig> = {}): HostLocalIpam {
  return new HostLocalIpam({ dataDir, network, rangeSets: [[{ subnet: SUBNET }]], ...extra });
}

/** Runs the reference plugin for one verb. */
function reference(command: 'ADD' | 'DEL' | 'CHECK', containerId: string, ifname = 'eth0') {
  return run(
    REFERENCE,
    [],
    {
      PATH: process.env.PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: '/var/run/netns/tsf-ipam-unused',
      CNI_IFNAME: ifname,
      CNI_PATH: path.dirname(REFERENCE),
    },
    refConfig(),
  );
}

async function referenceAdd(containerId: string): Promise<string> {
  const r = await reference('ADD', containerId).done;
  expect(r.code, r.stdout + r.stderr).toBe(0);
  const result = JSON.parse(r.stdout) as { ips: { address: string }[] };
  return result.ips[0]!.address;
}

async function leaseFiles(): Promise<Map<string, string>> {
  const dir = path.join(dataDir, network);
  const names = (await readdir(dir)).filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n));
  return new Map(await Promise.all(names.map(async (n) => [n, await readFile(path.join(dir, n), 'utf8')] as [string, string])));
}

const CHILD_SCRIPT = `
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
const [bundle, cfg, id, ifname, barrier, how] = process.argv.slice(2);
const { HostLocalIpam } = await import(bundle);
const ipam = new HostLocalIpam(JSON.parse(cfg));
process.stderr.write('ready\\n');
while (!existsSync(barrier)) await sleep(2);
try {
  // 'attachment': as the plugin's ADD runs it (src/plugin/commands.ts): under
  // the attachment's lock, probing candidates instead of listing the store.
  const allocations = how === 'attachment'
    ? await ipam.withAttachment(id, ifname, () => ipam.allocate(id, ifname, [], { attachmentLocked: true }))
    : await ipam.allocate(id, ifname);
  process.stdout.write(JSON.stringify({ ok: true, allocations }));
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, code: err.code, msg: err.message }));
  process.exitCode = 1;
}
`;

describe.skipIf(requireOrSkip('host-local interop', { [REFERENCE]: haveReference }))('host-local store interop with the reference plugin', () => {
  beforeAll(async () => {
    // Child processes need our module as plain JS. A bundle under build/
    // (gitignored) resolves koffi from the repository's node_modules and
    // does not depend on the rest of the tree compiling.
    await mkdir(path.join(REPO, 'build'), { recursive: true });
    bundleDir = await mkdtemp(path.join(REPO, 'build', '.ipam-it-'));
    await build({
      entryPoints: [path.join(REPO, 'src/ipam/index.ts')],
      bundle: true,
      platform: 'node',
      format: 'esm',
      packages: 'external',
      outfile: path.join(bundleDir, 'ipam.mjs'),
      logLevel: 'error',
    });
    await writeFile(path.join(bundleDir, 'child.mjs'), CHILD_SCRIPT);
  });

  afterAll(async () => {
    if (bundleDir) await rm(bundleDir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'tsf-ipam-it-'));
    network = `itnet${++counter}`;
    return async () => {
      await rm(dataDir, { recursive: true, force: true });
    };
  });

  it('sees leases written by the reference and never hands them out again', async () => {
    const refIps = [await referenceAdd('ref-a'), await referenceAdd('ref-b'), await referenceAdd('ref-c')];
    expect(refIps).toEqual(['10.77.0.2/24', '10.77.0.3/24', '10.77.0.4/24']);

    const ipam = ours();
    expect(await ipam.find('ref-b', 'eth0')).toEqual([{ ip: '10.77.0.3', containerId: 'ref-b', ifname: 'eth0' }]);
    expect((await ipam.list()).map((l) => l.containerId).sort()).toEqual(['ref-a', 'ref-b', 'ref-c']);

    // Point round-robin at the end of the range so our next pick wraps onto
    // the reference's leases and has to step over all of them.
    await writeFile(path.join(dataDir, network, 'last_reserved_ip.0'), '10.77.0.254');
    expect((await ipam.allocate('ours-1', 'eth0'))[0]!.address).toBe('10.77.0.5/24');
    // ...and the reference continues after our last_reserved_ip.
    expect(await referenceAdd('ref-d')).toBe('10.77.0.6/24');

    // We release what the reference wrote.
    expect(await ipam.release('ref-a', 'eth0')).toEqual(['10.77.0.2']);
    expect((await leaseFiles()).has('10.77.0.2')).toBe(false);
  });

  it('the reference sees, checks and releases leases written by us', async () => {
    const ipam = ours();
    const [mine] = await ipam.allocate('ours-a', 'eth0');
    expect(mine!.address).toBe('10.77.0.2/24');

    const check = await reference('CHECK', 'ours-a').done;
    expect(check.code, check.stdout).toBe(0);

    await rm(path.join(dataDir, network, 'last_reserved_ip.0'));
    expect(await referenceAdd('ref-a')).toBe('10.77.0.3/24');

    const del = await reference('DEL', 'ours-a').done;
    expect(del.code, del.stdout).toBe(0);
    expect(await ipam.find('ours-a', 'eth0')).toEqual([]);
    expect([...(await leaseFiles()).keys()]).toEqual(['10.77.0.3']);
  });

  it('the reference waits for our lock', async () => {
    const ipam = ours();
    await ipam.list(); // creates dir and lock
    const lock = await open(path.join(dataDir, network, 'lock'), fsc.O_RDONLY);
    await flock(lock.fd, 'ex', 1000);
    let add: ReturnType<typeof reference> | undefined;
    try {
      add = reference('ADD', 'blocked');
      let exited = false;
      void add.done.then(() => (exited = true));
      await new Promise((r) => setTimeout(r, 700));
      expect(exited).toBe(false);
      expect((await leaseFiles()).size).toBe(0);
    } finally {
      funlock(lock.fd);
      await lock.close();
    }
    const r = await add!.done;
    expect(r.code, r.stdout).toBe(0);
    expect([...(await leaseFiles()).entries()]).toEqual([['10.77.0.2', 'blocked\r\neth0']]);
  });

  it('we wait for a lock held by another process, and give up with code 11 after the timeout', async () => {
    const ipam = ours({ lockTimeoutMs: 300 });
    await ipam.list();
    // util-linux flock(1) takes the same flock(2) the reference's go-filemutex does.
    const holder = run('flock', [path.join(dataDir, network, 'lock'), '-c', 'echo locked; sleep 1.5'], { PATH: process.env.PATH });
    await new Promise<void>((resolve) => holder.child.stdout!.on('data', () => resolve()));
    await expect(ipam.allocate('c1', 'eth0')).rejects.toMatchObject({ code: 11 });
    const started = Date.now();
    const [alloc] = await ours({ lockTimeoutMs: 10_000 }).allocate('c1', 'eth0');
    expect(Date.now() - started).toBeGreaterThan(500);
    expect((await holder.done).code).toBe(0);
    expect(alloc!.address).toBe('10.77.0.2/24');
  });

  it.each<[string, IpamRange[][], number]>([
    ['a /29, wrapping onto its own leases', [[{ subnet: '10.77.0.0/29' }]], 14],
    ['a /27 from rangeStart .5: past 8 taken in a row the store is listed', [[{ subnet: '10.77.0.0/27', rangeStart: '10.77.0.5' }]], 48],
    ['rangeStart..rangeEnd inside a /24', [[{ subnet: '10.77.0.0/24', rangeStart: '10.77.0.250', rangeEnd: '10.77.0.254' }]], 14],
    ['two ranges in one set', [[{ subnet: '10.77.0.0/24', rangeStart: '10.77.0.252' }, { subnet: '10.77.1.0/29' }]], 20],
    ['a gateway inside the range', [[{ subnet: '10.77.0.0/28', gateway: '10.77.0.5' }]], 20],
    ['IPv6', [[{ subnet: 'fd77::/125' }]], 14],
    ['dual-stack', [[{ subnet: '10.77.0.0/29' }], [{ subnet: 'fd77::/124' }]], 14],
  ])('the plugin\'s ADD gives the address the reference host-local gives, through DELs, wrap-around and a full range (code 11), each in a store of its own: %s', async (_name, ranges, adds) => {
    const refDir = await mkdtemp(path.join(tmpdir(), 'tsf-ipam-ref-'));
    try {
      const conf = JSON.stringify({ cniVersion: '1.0.0', name: network, type: 'host-local', ipam: { type: 'host-local', dataDir: refDir, ranges } });
      const theirs = async (command: 'ADD' | 'DEL', id: string): Promise<string> => {
        const env = { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: '/var/run/netns/tsf-ipam-unused', CNI_IFNAME: 'eth0', CNI_PATH: path.dirname(REFERENCE) };
        const r = await run(REFERENCE, [], env, conf).done;
        if (r.code !== 0) return /no IP addresses available/.test(r.stdout) ? 'full' : `error ${r.stdout}`;
        return command === 'DEL' ? 'ok' : (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips.map((ip) => ip.address).join(' ');
      };
      const ipam = new HostLocalIpam({ dataDir, network, rangeSets: ranges });
      const locked = { attachmentLocked: true };
      // As src/plugin/commands.ts runs them: under the attachment's lock.
      const mine = async (command: 'ADD' | 'DEL', id: string): Promise<string> => {
        try {
          if (command === 'DEL') {
            await ipam.withAttachment(id, 'eth0', async () => ipam.releaseFound(id, 'eth0', (await ipam.find(id, 'eth0', locked)).map((l) => l.ip)), true);
            return 'ok';
          }
          return (await ipam.withAttachment(id, 'eth0', () => ipam.allocate(id, 'eth0', [], locked))).map((a) => a.address).join(' ');
        } catch (err) {
          return (err as { code?: unknown }).code === 11 ? 'full' : `error ${(err as Error).message}`;
        }
      };
      const ops: ['ADD' | 'DEL', string][] = [];
      for (let i = 0; i < adds; i++) {
        ops.push(['ADD', `p${i}`]);
        if (i % 3 === 2) ops.push(['DEL', `p${i - 1}`]);
      }
      const [ours, reference] = [[] as string[], [] as string[]];
      for (const [command, id] of ops) {
        ours.push(`${command} ${id}: ${await mine(command, id)}`);
        reference.push(`${command} ${id}: ${await theirs(command, id)}`);
      }
      expect(ours).toEqual(reference);
      expect(reference.some((line) => line.endsWith(': full'))).toBe(true);
    } finally {
      await rm(refDir, { recursive: true, force: true });
    }
  });

  it.each([
    ['as the plugin runs them (attachment lock, candidates probed, no listing)', 'attachment'],
    ['without the attachment lock (the store listed)', 'store'],
  ])('20 reference ADDs and 20 of ours racing on one store never share an IP: ours %s', async (_how, how) => {
    const N = 20;
    const barrier = path.join(dataDir, 'go');
    const cfg: IpamConfig = { dataDir, network, rangeSets: [[{ subnet: SUBNET }]] };
    const env = { PATH: process.env.PATH, TSFLANNEL_NETLINK_LIB: SHIM };
    const bundleUrl = pathToFileURL(path.join(bundleDir, 'ipam.mjs')).href;
    const children = Array.from({ length: N }, (_, i) =>
      run(process.execPath, [path.join(bundleDir, 'child.mjs'), bundleUrl, JSON.stringify(cfg), `ours-${i}`, 'eth0', barrier, how], env),
    );
    try {
      // Hold everyone at the barrier so the races really overlap.
      await Promise.all(
        children.map(
          ({ child, done }) =>
            new Promise<void>((resolve, reject) => {
              child.stderr!.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
              void done.then((r) => reject(new Error(`child exited early: ${r.stderr}`)));
            }),
        ),
      );
      await writeFile(barrier, '');
      const refs = Array.from({ length: N }, (_, i) => reference('ADD', `ref-${i}`).done);
      const [ourRuns, refRuns] = await Promise.all([Promise.all(children.map((c) => c.done)), Promise.all(refs)]);

      const got = new Map<string, string>(); // ip -> container id
      for (const [i, r] of ourRuns.entries()) {
        expect(r.code, r.stdout + r.stderr).toBe(0);
        const out = JSON.parse(r.stdout) as { allocations: Allocation[] };
        const ip = out.allocations[0]!.address.split('/')[0]!;
        expect(got.has(ip), `${ip} handed out twice`).toBe(false);
        got.set(ip, `ours-${i}`);
      }
      for (const [i, r] of refRuns.entries()) {
        expect(r.code, r.stdout + r.stderr).toBe(0);
        const ip = (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]!;
        expect(got.has(ip), `${ip} handed out twice`).toBe(false);
        got.set(ip, `ref-${i}`);
      }
      expect(got.size).toBe(2 * N);

      const files = await leaseFiles();
      expect(files.size).toBe(2 * N);
      for (const [ip, id] of got) expect(files.get(ip)).toBe(`${id}\r\neth0`);
      // Round-robin from .2 with no gaps: every pick went to the next free address.
      expect([...files.keys()].sort((a, b) => Number(a.split('.')[3]) - Number(b.split('.')[3]))).toEqual(
        Array.from({ length: 2 * N }, (_, i) => `10.77.0.${i + 2}`),
      );
    } finally {
      for (const { child } of children) if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
