import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chmod, link, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile, open } from 'node:fs/promises';
import { spawn, execFileSync } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CniError } from '../../../src/cni/errors.js';
import { HostLocalIpam, type IpamConfig, type IpamRange } from '../../../src/ipam/index.js';
import { flock, funlock } from '../../../src/netlink/index.js';
import { attachmentLockName } from '../../../src/ipam/store.js';

let dataDir: string;

beforeEach(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'tsf-ipam-'));
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

function ipam(rangeSets: IpamRange[][] = [[{ subnet: '10.9.0.0/29' }]], extra: Partial<IpamConfig> = {}): HostLocalIpam {
  return new HostLocalIpam({ dataDir, network: 'net1', rangeSets, ...extra });
}
const netDir = (network = 'net1') => path.join(dataDir, network);
const ips = (allocs: { address: string }[]) => allocs.map((a) => a.address);

async function cniErr(p: Promise<unknown> | (() => unknown)): Promise<CniError> {
  try {
    if (typeof p === 'function') p();
    else await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error('expected a CniError');
}

/**
 * Whoever opens a FIFO to read it waits for a writer: this watcher process
 * is one, so a reader is let go at once (never a hung test); stop() says
 * how many waited.
 */
async function watchFifo(fifo: string): Promise<{ stop: () => Promise<string> }> {
  const watcher = spawn(process.execPath, [
    '-e',
    `const fs = require('node:fs');
     process.stdout.write('ready\\n');
     setInterval(() => {
       try { fs.closeSync(fs.openSync(process.argv[1], fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)); process.stdout.write('a reader waited on the FIFO\\n'); }
       catch {}
     }, 10);`,
    fifo,
  ]);
  let out = '';
  watcher.stdout.on('data', (b: Buffer) => (out += b.toString()));
  const closed = new Promise((resolve) => watcher.on('close', resolve));
  await new Promise<void>((resolve) => watcher.stdout.once('data', () => resolve()));
  return {
    stop: async () => {
      watcher.kill();
      await closed;
      return out.replace('ready\n', '');
    },
  };
}

describe('HostLocalIpam construction', () => {
  it.each<[IpamRange[][], RegExp]>([
    [[[{ subnet: '10.0.0.1/24' }]], /host bits set/],
    [[[{ subnet: '10.0.0.0/31' }]], /too small/],
    [[[{ subnet: '10.0.0.0/32' }]], /too small/],
    [[[{ subnet: '10.0.0.0/24', rangeStart: '10.0.1.5' }]], /rangeStart .* not in network/],
    [[[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.1.5' }]], /rangeEnd .* not in network/],
    [[[{ subnet: '10.0.0.0/24', gateway: '10.0.1.1' }]], /gateway .* not in network/],
    [[[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.0.0.0/16' }]], /overlaps/],
  ])('rejects bad ranges with code 7 (%j)', async (sets, msg) => {
    const err = await cniErr(() => ipam(sets));
    expect(err.code).toBe(7);
    expect(err.message).toMatch(msg);
  });

  it.each(['../x', '..', '.', 'a/b', '', '-lead', 'sp ace'])('rejects network name %j with code 7', async (network) => {
    const err = await cniErr(() => new HostLocalIpam({ dataDir, network, rangeSets: [[{ subnet: '10.0.0.0/24' }]] }));
    expect(err.code).toBe(7);
  });
});

describe('allocate', () => {
  it('hands out .2, .3, ... skipping the gateway, and writes the reference layout', async () => {
    const a = ipam();
    expect(await a.allocate('c1', 'eth0')).toEqual([{ address: '10.9.0.2/29', gateway: '10.9.0.1', rangeSet: 0, created: true }]);
    expect(ips(await a.allocate('c2', 'eth0'))).toEqual(['10.9.0.3/29']);
    expect(ips(await a.allocate('c3', 'eth0'))).toEqual(['10.9.0.4/29']);

    const lease = await readFile(path.join(netDir(), '10.9.0.2'));
    expect(lease.equals(Buffer.from('c1\r\neth0'))).toBe(true);
    expect(await readFile(path.join(netDir(), 'last_reserved_ip.0'), 'utf8')).toBe('10.9.0.4');
    expect((await stat(path.join(netDir(), '10.9.0.2'))).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(netDir(), 'last_reserved_ip.0'))).mode & 0o777).toBe(0o600);
    expect((await stat(netDir())).mode & 0o777).toBe(0o755);
    const lock = await stat(path.join(netDir(), 'lock'));
    expect(lock.isFile()).toBe(true);
    expect(lock.size).toBe(0);
    // Only leases, the lock and last_reserved_ip: temp files never stay behind.
    expect((await readdir(netDir())).sort()).toEqual(['10.9.0.2', '10.9.0.3', '10.9.0.4', 'last_reserved_ip.0', 'lock']);
  });

  it('continues round-robin after last_reserved_ip even after a release, then wraps', async () => {
    const a = ipam();
    await a.allocate('c1', 'eth0');
    await a.allocate('c2', 'eth0');
    expect(await a.release('c1', 'eth0')).toEqual(['10.9.0.2']);
    expect(ips(await a.allocate('c3', 'eth0'))).toEqual(['10.9.0.4/29']);
    expect(ips(await a.allocate('c4', 'eth0'))).toEqual(['10.9.0.5/29']);
    expect(ips(await a.allocate('c5', 'eth0'))).toEqual(['10.9.0.6/29']);
    // End of range: wraps to the start, where .2 was freed.
    expect(ips(await a.allocate('c6', 'eth0'))).toEqual(['10.9.0.2/29']);
  });

  it('starts after a last_reserved_ip written by someone else', async () => {
    const a = ipam();
    await a.list(); // creates the directory
    await writeFile(path.join(netDir(), 'last_reserved_ip.0'), '10.9.0.5');
    expect(ips(await a.allocate('c1', 'eth0'))).toEqual(['10.9.0.6/29']);
    expect(ips(await a.allocate('c2', 'eth0'))).toEqual(['10.9.0.2/29']);
  });

  it('fails with code 11 and the reference message when a /29 is exhausted', async () => {
    const a = ipam();
    for (let i = 0; i < 5; i++) await a.allocate(`c${i}`, 'eth0');
    const err = await cniErr(a.allocate('late', 'eth0'));
    expect(err.code).toBe(11);
    expect(err.message).toBe('no IP addresses available in range set: 10.9.0.1-10.9.0.6');
    expect((await a.list()).length).toBe(5);
  });

  it('is idempotent for the same (id, ifname) and gives a second ifname its own IP', async () => {
    const a = ipam();
    const first = await a.allocate('c1', 'eth0');
    expect(await a.allocate('c1', 'eth0')).toEqual(first.map((x) => ({ ...x, created: false })));
    const second = await a.allocate('c1', 'net1');
    expect(ips(second)).toEqual(['10.9.0.3/29']);
    expect(await a.allocate('c1', 'net1')).toEqual(second.map((x) => ({ ...x, created: false })));
    expect((await a.list()).length).toBe(2);
    expect(await readFile(path.join(netDir(), 'last_reserved_ip.0'), 'utf8')).toBe('10.9.0.3');
  });

  it('attachmentLocked: finds its own lease read before the store lock, and takes a new address when the lease was removed or given away before the lock', async () => {
    const a = ipam();
    const other = ipam();
    const locked = { attachmentLocked: true };
    expect(ips(await a.allocate('c1', 'eth0', [], locked))).toEqual(['10.9.0.2/29']);
    expect(await a.allocate('c1', 'eth0', [], locked)).toEqual([{ address: '10.9.0.2/29', gateway: '10.9.0.1', rangeSet: 0, created: false }]);
    expect(await a.find('c1', 'eth0', locked)).toEqual(await a.find('c1', 'eth0'));
    // Each allocate below reads c1's lease at once, then queues for the store
    // lock behind the calls started before it, which change that lease.
    const [removed, afterGc] = await Promise.all([a.gc([]), a.allocate('c1', 'eth0', [], locked)]);
    expect(removed.map((l) => l.ip)).toEqual(['10.9.0.2']);
    expect(afterGc).toEqual([{ address: '10.9.0.3/29', gateway: '10.9.0.1', rangeSet: 0, created: true }]);
    const [, taken, mine] = await Promise.all([
      a.release('c1', 'eth0'),
      other.allocate('c2', 'eth0', [{ family: 4, value: 0x0a090003n }]),
      a.allocate('c1', 'eth0', [], locked),
    ]);
    expect(ips(taken)).toEqual(['10.9.0.3/29']);
    expect(mine).toEqual([{ address: '10.9.0.4/29', gateway: '10.9.0.1', rangeSet: 0, created: true }]);
    expect((await a.list()).map((l) => `${l.ip} ${l.containerId}`).sort()).toEqual(['10.9.0.3 c2', '10.9.0.4 c1']);
  });

  it('an attachment\'s lock file records the leases it made, so its retried ADD reads those and no other lease; an older version\'s empty lock file makes it read them all once and start the record', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }]]);
    const locked = { attachmentLocked: true };
    const lockFile = (id: string) => path.join(netDir(), 'attachments', attachmentLockName(id, 'eth0'));
    const add = (id: string) => a.withAttachment(id, 'eth0', () => a.allocate(id, 'eth0', [], locked));
    for (const id of ['p1', 'p2', 'p3']) await add(id);
    expect(await readFile(lockFile('p2'), 'utf8')).toBe('tsflannel-attachment 1\n10.9.0.3\n');
    // A lease of p2's that its record does not name (none of ours is made so:
    // each name is written before its lease) is not read: the record is the list.
    await writeFile(path.join(netDir(), '10.9.0.200'), 'p2\r\neth0');
    expect(ips(await add('p2'))).toEqual(['10.9.0.3/24']);
    expect(await readFile(lockFile('p2'), 'utf8')).toBe('tsflannel-attachment 1\n10.9.0.3\n');
    // A recorded lease since given to another pod (GC, then a new ADD) is not p1's.
    await rm(path.join(netDir(), '10.9.0.2'));
    await writeFile(path.join(netDir(), '10.9.0.2'), 'other\r\neth0');
    expect(ips(await add('p1'))).toEqual(['10.9.0.5/24']);
    expect(await readFile(lockFile('p1'), 'utf8')).toBe('tsflannel-attachment 1\n10.9.0.2\n10.9.0.5\n');
    // An attachment from before the record: its lease is found by reading every lease, and recorded.
    await writeFile(path.join(netDir(), '10.9.0.150'), 'old\r\neth0');
    await writeFile(lockFile('old'), '');
    expect(await add('old')).toEqual([{ address: '10.9.0.150/24', gateway: '10.9.0.1', rangeSet: 0, created: false }]);
    expect(await readFile(lockFile('old'), 'utf8')).toBe('tsflannel-attachment 1\n10.9.0.150\n');
    // DEL finds the leases through the record, or, with no lock file to hold one, by reading every lease.
    const found = (id: string) => a.withAttachment(id, 'eth0', async () => (await a.find(id, 'eth0', locked)).map((l) => l.ip), true);
    expect(await found('p3')).toEqual(['10.9.0.4']);
    await expect(stat(lockFile('p3'))).rejects.toThrow(/ENOENT/); // DEL forgets the attachment, record and all
    await rm(lockFile('p1'));
    expect(await found('p1')).toEqual(['10.9.0.5']);
  });

  it('a DEL that fails keeps the attachment\'s lock file and its record, so the next ADD of that attachment gets its lease back instead of leasing a second address', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }]]);
    const locked = { attachmentLocked: true };
    const lockFile = path.join(netDir(), 'attachments', attachmentLockName('p1', 'eth0'));
    const add = () => a.withAttachment('p1', 'eth0', () => a.allocate('p1', 'eth0', [], locked));
    expect(ips(await add())).toEqual(['10.9.0.2/24']);
    // A DEL (forget: true) that fails before it released anything: a veth
    // teardown error, or the store lock timing out (code 11).
    await expect(
      a.withAttachment('p1', 'eth0', async () => Promise.reject(new CniError(11, 'timed out waiting for lock')), true),
    ).rejects.toThrow(/timed out/);
    // podman restarts a container under the same ID after a failed teardown.
    expect(await add()).toEqual([{ address: '10.9.0.2/24', gateway: '10.9.0.1', rangeSet: 0, created: false }]);
    expect(await readFile(lockFile, 'utf8')).toBe('tsflannel-attachment 1\n10.9.0.2\n');
    expect((await a.list()).map((l) => `${l.ip} ${l.containerId}`)).toEqual(['10.9.0.2 p1']);
  });

  it('attachmentLocked: a directory, a symlink or a FIFO at an address a dense ADD tried (so its record names it) is no lease: its retried ADD and its DEL neither fail on it, take it for theirs, nor wait on the FIFO', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }]]);
    const locked = { attachmentLocked: true };
    const add = (id: string) => a.withAttachment(id, 'eth0', () => a.allocate(id, 'eth0', [], locked));
    const del = (id: string) =>
      a.withAttachment(id, 'eth0', async () => a.releaseFound(id, 'eth0', (await a.find(id, 'eth0', locked)).map((l) => l.ip)), true);
    const at = (host: number) => path.join(netDir(), `10.9.0.${host}`);
    expect(ips(await add('p1'))).toEqual(['10.9.0.2/24']);
    // Eight taken in a row: the ADD lists the store, which shows lease files
    // only, so it tries the odd names below (link(2) fails on each) and
    // records each name first, as it does every name it tries.
    for (let host = 3; host <= 10; host++) await writeFile(at(host), `hand${host}\r\neth0`);
    await mkdir(at(11));
    await symlink('10.9.0.14', at(12)); // dangling now; later it points at p2's own lease
    execFileSync('mkfifo', [at(13)]);
    expect(ips(await add('p2'))).toEqual(['10.9.0.14/24']);
    expect(await readFile(path.join(netDir(), 'attachments', attachmentLockName('p2', 'eth0')), 'utf8')).toBe(
      'tsflannel-attachment 1\n10.9.0.11\n10.9.0.12\n10.9.0.13\n10.9.0.14\n',
    );
    const readers = await watchFifo(at(13));
    try {
      expect(await add('p2')).toEqual([{ address: '10.9.0.14/24', gateway: '10.9.0.1', rangeSet: 0, created: false }]);
      expect(await del('p2')).toEqual(['10.9.0.14']);
    } finally {
      expect(await readers.stop()).toBe('');
    }
    expect((await lstat(at(11))).isDirectory()).toBe(true);
    expect((await lstat(at(12))).isSymbolicLink()).toBe(true);
    expect((await lstat(at(13))).isFIFO()).toBe(true);
  });

  it('attachmentLocked: a lease made by hand (not under our lock) where the round-robin goes next is skipped, in the reference\'s order; a dense range still gives its one free address', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }]]);
    const add = (id: string) => a.withAttachment(id, 'eth0', () => a.allocate(id, 'eth0', [], { attachmentLocked: true }));
    expect(ips(await add('p1'))).toEqual(['10.9.0.2/24']);
    // The reference host-local (or a hand) took .3 and .4 after our last reservation.
    await writeFile(path.join(netDir(), '10.9.0.3'), 'ref3\r\neth0');
    await writeFile(path.join(netDir(), '10.9.0.4'), 'ref4\r\neth0');
    expect(ips(await add('p2'))).toEqual(['10.9.0.5/24']);
    expect(await readFile(path.join(netDir(), 'last_reserved_ip.0'), 'utf8')).toBe('10.9.0.5');
    // Near the end of the range: past .254 the round goes back to .2 (taken), then .3 ... .
    await writeFile(path.join(netDir(), 'last_reserved_ip.0'), '10.9.0.253');
    await writeFile(path.join(netDir(), '10.9.0.254'), 'ref254\r\neth0');
    expect(ips(await add('p3'))).toEqual(['10.9.0.6/24']);
    // Dense: every address but .100 taken; the round-robin from .6 still gets there.
    for (let host = 7; host <= 253; host++) if (host !== 100) await writeFile(path.join(netDir(), `10.9.0.${host}`), `ref${host}\r\neth0`);
    expect(ips(await add('p4'))).toEqual(['10.9.0.100/24']);
    const err = await cniErr(add('p5'));
    expect(err.code).toBe(11);
    expect(err.message).toMatch(/no IP addresses available/);
    // A link(2) that loses (the name appeared after the check) is no lease of ours either.
    expect((await a.list()).filter((l) => l.containerId.startsWith('p')).map((l) => l.ip)).toEqual(['10.9.0.100', '10.9.0.2', '10.9.0.5', '10.9.0.6']);
  });

  it('attachmentLocked: concurrent ADDs of 40 pods in one process, with leases of other pods scattered in the range, never share an address', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/26' }]]);
    await mkdir(netDir());
    for (const host of [3, 4, 9, 10, 11, 12, 13, 14, 15, 16, 17, 30]) await writeFile(path.join(netDir(), `10.9.0.${host}`), `ref${host}\r\neth0`);
    const add = (id: string) => a.withAttachment(id, 'eth0', () => a.allocate(id, 'eth0', [], { attachmentLocked: true }));
    const got = (await Promise.all(Array.from({ length: 40 }, (_, i) => add(`c${i}`)))).map((r) => r[0]!.address);
    expect(new Set(got).size).toBe(40);
    const leases = await a.list();
    expect(leases.length).toBe(52);
    expect(new Set(leases.map((l) => l.ip)).size).toBe(52);
    // The 61 usable addresses of a /26 minus 52 leases: 9 left, all reachable.
    expect((await Promise.all(Array.from({ length: 9 }, (_, i) => add(`d${i}`)))).length).toBe(9);
    expect((await cniErr(add('e0'))).code).toBe(11);
  });

  it('rewrites its own 0600 last_reserved_ip in place (same inode, exact shorter text); replaces a symlink, a 0644 file or a hard link there instead of writing through it', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }]]);
    const last = path.join(netDir(), 'last_reserved_ip.0');
    const ip = (text: string) => [{ family: 4 as const, value: BigInt(text.split('.').reduce((n, o) => n * 256 + Number(o), 0)) }];
    await a.allocate('c1', 'eth0', ip('10.9.0.100'));
    const first = await stat(last);
    await a.allocate('c2', 'eth0', ip('10.9.0.5'));
    expect(await readFile(last, 'utf8')).toBe('10.9.0.5');
    expect((await stat(last)).ino).toBe(first.ino);
    expect((await stat(last)).mode & 0o777).toBe(0o600);

    const target = path.join(dataDir, 'elsewhere');
    await writeFile(target, 'keep');
    await rm(last);
    await symlink(target, last);
    // (read through the link, 'keep' is no address: the round starts over at .2)
    expect(ips(await a.allocate('c3', 'eth0'))).toEqual(['10.9.0.2/24']);
    expect(await readFile(target, 'utf8')).toBe('keep');
    expect((await lstat(last)).isFile()).toBe(true);
    expect(await readFile(last, 'utf8')).toBe('10.9.0.2');

    await rm(last);
    await writeFile(last, '10.9.0.7', { mode: 0o644 });
    await chmod(last, 0o644);
    expect(ips(await a.allocate('c4', 'eth0'))).toEqual(['10.9.0.8/24']);
    expect((await stat(last)).mode & 0o777).toBe(0o600);
    expect(await readFile(last, 'utf8')).toBe('10.9.0.8');

    // A hard link to another 0600 file: replaced, never written through.
    const linked = path.join(dataDir, 'linked');
    await rm(last);
    await writeFile(linked, '10.9.0.20', { mode: 0o600 });
    await link(linked, last);
    expect(ips(await a.allocate('c5', 'eth0'))).toEqual(['10.9.0.21/24']);
    expect(await readFile(linked, 'utf8')).toBe('10.9.0.20');
    expect((await stat(last)).nlink).toBe(1);
    expect(await readFile(last, 'utf8')).toBe('10.9.0.21');
  });

  it('a FIFO at last_reserved_ip is not waited on (the store lock held meanwhile would stop every pod on the node): the round starts at the range start and a plain file replaces it', async () => {
    const a = ipam();
    const lastFile = path.join(netDir(), 'last_reserved_ip.0');
    await mkdir(netDir(), { recursive: true });
    execFileSync('mkfifo', [lastFile]);
    const readers = await watchFifo(lastFile);
    try {
      expect(ips(await a.withAttachment('c1', 'eth0', () => a.allocate('c1', 'eth0', [], { attachmentLocked: true })))).toEqual(['10.9.0.2/29']);
    } finally {
      expect(await readers.stop()).toBe('');
    }
    expect((await lstat(lastFile)).isFile()).toBe(true);
    expect(await readFile(lastFile, 'utf8')).toBe('10.9.0.2');
  });

  it('allocates one IP per range set (dual stack)', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }], [{ subnet: 'fd00:9::/120' }]]);
    expect(await a.allocate('c1', 'eth0')).toEqual([
      { address: '10.9.0.2/24', gateway: '10.9.0.1', rangeSet: 0, created: true },
      { address: 'fd00:9::2/120', gateway: 'fd00:9::1', rangeSet: 1, created: true },
    ]);
    expect((await readFile(path.join(netDir(), 'fd00:9::2'))).toString()).toBe('c1\r\neth0');
    expect(await readFile(path.join(netDir(), 'last_reserved_ip.1'), 'utf8')).toBe('fd00:9::2');
  });

  it('releases the earlier sets when a later set is exhausted', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }], [{ subnet: '10.10.0.0/30' }]]);
    expect(ips(await a.allocate('c1', 'eth0'))).toEqual(['10.9.0.2/24', '10.10.0.2/30']);
    const err = await cniErr(a.allocate('c2', 'eth0'));
    expect(err.code).toBe(11);
    expect(err.message).toContain('10.10.0.1-10.10.0.2');
    expect((await a.list()).map((l) => l.ip).sort()).toEqual(['10.10.0.2', '10.9.0.2']);
  });

  it('allocates distinct IPs to concurrent callers in one process', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/26' }]]);
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => a.allocate(`c${i}`, 'eth0')));
    const got = results.map((r) => r[0]!.address);
    expect(new Set(got).size).toBe(30);
    expect((await a.list()).length).toBe(30);
  });

  it('times out with code 11 while another holder keeps the lock', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/29' }]], { lockTimeoutMs: 200 });
    await a.list();
    const holder = await open(path.join(netDir(), 'lock'), fsc.O_RDONLY);
    await flock(holder.fd, 'ex', 1000);
    try {
      const started = Date.now();
      const err = await cniErr(a.allocate('c1', 'eth0'));
      expect(err.code).toBe(11);
      expect(err.message).toMatch(/lock/);
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    } finally {
      funlock(holder.fd);
      await holder.close();
    }
    expect(ips(await a.allocate('c1', 'eth0'))).toEqual(['10.9.0.2/29']);
  });

  it('reports filesystem failures as code 5 naming the path', async () => {
    const blocker = path.join(dataDir, 'file');
    await writeFile(blocker, 'x');
    const a = new HostLocalIpam({ dataDir: blocker, network: 'net1', rangeSets: [[{ subnet: '10.9.0.0/29' }]] });
    const err = await cniErr(a.allocate('c1', 'eth0'));
    expect(err.code).toBe(5);
    expect(err.message).toContain(path.join(blocker, 'net1'));
  });
});

describe('release, find, list', () => {
  it('releases exactly (id, ifname), leaving the other interface', async () => {
    const a = ipam();
    await a.allocate('c1', 'eth0');
    await a.allocate('c1', 'net1');
    expect(await a.find('c1', 'net1')).toEqual([{ ip: '10.9.0.3', containerId: 'c1', ifname: 'net1' }]);
    expect(await a.release('c1', 'eth0')).toEqual(['10.9.0.2']);
    expect(await a.find('c1', 'eth0')).toEqual([]);
    expect(await a.list()).toEqual([{ ip: '10.9.0.3', containerId: 'c1', ifname: 'net1' }]);
  });

  it('falls back to legacy id-only files', async () => {
    const a = ipam();
    await a.list();
    await writeFile(path.join(netDir(), '10.9.0.5'), 'old\n');
    expect(await a.find('old', 'eth0')).toEqual([{ ip: '10.9.0.5', containerId: 'old' }]);
    expect(await a.release('old', 'eth0')).toEqual(['10.9.0.5']);
    expect(await readdir(netDir())).not.toContain('10.9.0.5');
  });

  it('prefers exact matches over legacy ones', async () => {
    const a = ipam();
    await a.allocate('c1', 'eth0');
    await writeFile(path.join(netDir(), '10.9.0.5'), 'c1');
    expect(await a.release('c1', 'eth0')).toEqual(['10.9.0.2']);
    expect(await a.release('c1', 'eth0')).toEqual(['10.9.0.5']);
  });

  it('releaseFound removes the leases find gave that (id, ifname) still holds, and leaves one gone or taken by another container', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/29' }], [{ subnet: '10.9.1.0/29' }]]);
    await a.allocate('c1', 'eth0');
    await a.allocate('c2', 'eth0');
    const found = (await a.find('c1', 'eth0')).map((l) => l.ip);
    expect(found).toEqual(['10.9.0.2', '10.9.1.2']);
    // Between the find and the release: one lease is gone (a GC), and its
    // address now belongs to another container (the reference plugin).
    await rm(path.join(netDir(), '10.9.1.2'));
    await writeFile(path.join(netDir(), '10.9.1.2'), 'other\r\neth0');
    expect(await a.releaseFound('c1', 'eth0', [...found, '10.9.0.6'])).toEqual(['10.9.0.2']);
    expect((await a.list()).map((l) => `${l.ip} ${l.containerId}`).sort()).toEqual(['10.9.0.3 c2', '10.9.1.2 other', '10.9.1.3 c2']);
    // A legacy id-only lease find matched is released too; nothing found, nothing read.
    await writeFile(path.join(netDir(), '10.9.0.5'), 'old\n');
    expect(await a.releaseFound('old', 'eth0', (await a.find('old', 'eth0')).map((l) => l.ip))).toEqual(['10.9.0.5']);
    expect(await a.releaseFound('nobody', 'eth0', [])).toEqual([]);
    await expect(a.releaseFound('c2', 'eth0', ['../escape'])).rejects.toThrow(/outside/);
  });

  it('a killed ADD\'s temp file: the one named after the attachment is removed by its DEL and replaced by its retried ADD; one with another name (an older tsflannel\'s) by the next GC', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/24' }]]);
    const locked = { attachmentLocked: true };
    const add = (id: string) => a.withAttachment(id, 'eth0', () => a.allocate(id, 'eth0', [], locked));
    const del = (id: string) =>
      a.withAttachment(id, 'eth0', async () => a.releaseFound(id, 'eth0', (await a.find(id, 'eth0', locked)).map((l) => l.ip)), true);
    const ownTemp = (id: string) => path.join(netDir(), `.lease.${attachmentLockName(id, 'eth0').slice(0, 32)}.tmp`);
    const oldTemp = path.join(netDir(), '.lease.4242.0badc0de00000001.tmp');
    const exists = (file: string) => stat(file).then(() => true, () => false);
    expect(ips(await add('p1'))).toEqual(['10.9.0.2/24']);
    // What an ADD killed between writing its temp file and linking it leaves.
    await writeFile(ownTemp('p1'), 'p1\r\neth0', { mode: 0o600 });
    await writeFile(ownTemp('p2'), 'p2\r\neth0', { mode: 0o600 });
    await writeFile(oldTemp, 'p9\r\neth0', { mode: 0o600 });
    expect(await del('p1')).toEqual(['10.9.0.2']);
    expect(await exists(ownTemp('p1'))).toBe(false);
    // The retried ADD of p2 writes its temp file afresh and removes it.
    expect(ips(await add('p2'))).toEqual(['10.9.0.3/24']);
    expect(await exists(ownTemp('p2'))).toBe(false);
    expect(await exists(oldTemp)).toBe(true);
    // Neither is a lease to a lister, and a GC sweeps the rest.
    expect((await a.list()).map((l) => l.ip)).toEqual(['10.9.0.3']);
    await writeFile(ownTemp('p3'), 'p3\r\neth0', { mode: 0o600 });
    expect((await a.gc([{ containerId: 'p2', ifname: 'eth0' }])).map((l) => l.ip)).toEqual([]);
    expect(await exists(oldTemp)).toBe(false);
    expect(await exists(ownTemp('p3'))).toBe(false);
    expect((await readdir(netDir())).sort()).toEqual(['10.9.0.3', 'attachments', 'last_reserved_ip.0', 'lock']);
  });

  it('treats releasing an unknown container as success', async () => {
    const a = ipam();
    expect(await a.release('nobody', 'eth0')).toEqual([]);
  });

  it('lists only lease files', async () => {
    const a = ipam();
    await a.allocate('c1', 'eth0');
    await writeFile(path.join(netDir(), '.last_reserved_ip.0.1.ab.tmp'), '10.9.0.4');
    await writeFile(path.join(netDir(), 'notes.txt'), 'c9');
    expect(await a.list()).toEqual([{ ip: '10.9.0.2', containerId: 'c1', ifname: 'eth0' }]);
  });
});

describe('gc', () => {
  it('keeps valid attachments, removes the rest, honours legacy files and skips bookkeeping files', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/28' }]]);
    await a.allocate('keep', 'eth0');
    await a.allocate('keep', 'net1');
    await a.allocate('gone', 'eth0');
    await writeFile(path.join(netDir(), '10.9.0.10'), 'legacykeep');
    await writeFile(path.join(netDir(), '10.9.0.11'), 'legacygone');

    const removed = await a.gc([
      { containerId: 'keep', ifname: 'eth0' },
      { containerId: 'legacykeep', ifname: 'eth0' },
    ]);
    expect(removed.sort((x, y) => x.ip.localeCompare(y.ip))).toEqual([
      { ip: '10.9.0.11', containerId: 'legacygone' },
      { ip: '10.9.0.3', containerId: 'keep', ifname: 'net1' },
      { ip: '10.9.0.4', containerId: 'gone', ifname: 'eth0' },
    ]);
    expect((await readdir(netDir())).sort()).toEqual(['10.9.0.10', '10.9.0.2', 'last_reserved_ip.0', 'lock']);
  });

  it('removes everything for an empty valid list', async () => {
    const a = ipam();
    await a.allocate('c1', 'eth0');
    await a.allocate('c2', 'eth0');
    expect((await a.gc([])).length).toBe(2);
    expect(await a.list()).toEqual([]);
    expect((await readdir(netDir())).sort()).toEqual(['last_reserved_ip.0', 'lock']);
  });
});

describe('path safety and validation', () => {
  it.each(['../../etc', '..', 'a/b', '/etc/passwd', '.hidden', 'x..y'])('rejects container id %j', async (id) => {
    const a = ipam();
    for (const op of [a.allocate(id, 'eth0'), a.release(id, 'eth0'), a.find(id, 'eth0')]) {
      const err = await cniErr(op);
      expect([3, 4]).toContain(err.code);
    }
    expect(await readdir(dataDir)).toEqual([]);
  });

  it('reports an empty container id as code 3', async () => {
    expect((await cniErr(ipam().allocate('', 'eth0'))).code).toBe(3);
  });

  it.each(['', 'a/b', 'eth0\r\nx', 'has space', 'averyveryverylongname', '..'])('rejects ifname %j with code 4', async (ifname) => {
    expect((await cniErr(ipam().allocate('c1', ifname))).code).toBe(4);
  });

  it('stays under dataDir for an absolute-looking network path', () => {
    const err = (() => {
      try {
        new HostLocalIpam({ dataDir, network: '/etc', rangeSets: [[{ subnet: '10.0.0.0/24' }]] });
      } catch (e) {
        return e as CniError;
      }
      return undefined;
    })();
    expect(err?.code).toBe(7);
  });
});

describe('stats', () => {
  it('counts capacity and use per range set', async () => {
    const a = ipam([[{ subnet: '10.9.0.0/29' }], [{ subnet: '10.10.0.0/24', rangeStart: '10.10.0.100' }]]);
    expect(await a.stats()).toEqual([
      { rangeSet: 0, total: 5, used: 0, free: 5 },
      { rangeSet: 1, total: 155, used: 0, free: 155 },
    ]);
    await a.allocate('c1', 'eth0');
    await a.allocate('c2', 'eth0');
    expect(await a.stats()).toEqual([
      { rangeSet: 0, total: 5, used: 2, free: 3 },
      { rangeSet: 1, total: 155, used: 2, free: 153 },
    ]);
  });
});

describe('HostLocalIpam without ranges (DEL and GC when the subnet file is gone)', () => {
  it('releases, lists and collects, but refuses to allocate', async () => {
    const [lease] = await ipam().allocate('c1', 'eth0');
    const bare = new HostLocalIpam({ dataDir, network: 'net1' });
    expect((await bare.list()).map((l) => l.ip)).toEqual([lease.address.split('/')[0]]);
    expect((await cniErr(bare.allocate('c2', 'eth0'))).code).toBe(7);
    expect((await cniErr(bare.stats())).code).toBe(7);
    expect(await bare.release('c1', 'eth0')).toEqual([lease.address.split('/')[0]]);
    expect(await bare.list()).toEqual([]);
  });
});
