// How often a pod's ADD and DEL list the network's directory: the cost of a
// listing (readdir, plus a parse of every name) grows with the pods on the
// node (110 on a full one), so the common case must not list at all. The
// store's file calls are counted through a pass-through wrapper of node:fs.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

const listed: string[] = [];

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const readdirSync = ((dir: import('node:fs').PathLike, ...rest: unknown[]) => {
    listed.push(String(dir));
    return (real.readdirSync as (...a: unknown[]) => unknown)(dir, ...rest);
  }) as typeof real.readdirSync;
  return { ...real, default: { ...real, readdirSync }, readdirSync };
});

const { HostLocalIpam } = await import('../../../src/ipam/index.js');

let dataDir: string;

beforeEach(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'tsf-ipam-list-'));
  listed.length = 0;
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

const netDir = () => path.join(dataDir, 'net1');
const listings = () => listed.filter((d) => path.resolve(d) === netDir()).length;

/** A pod's ADD and DEL as src/plugin/commands.ts runs them: under the attachment's lock. */
function pod(a: InstanceType<typeof HostLocalIpam>, id: string) {
  const locked = { attachmentLocked: true };
  return {
    add: () => a.withAttachment(id, 'eth0', () => a.allocate(id, 'eth0', [], locked)),
    del: () =>
      a.withAttachment(
        id,
        'eth0',
        async () => a.releaseFound(id, 'eth0', (await a.find(id, 'eth0', locked)).map((l) => l.ip)),
        true,
      ),
  };
}

describe('a pod\'s ADD and DEL do not list the store in the common case', () => {
  it('with 60 other pods\' leases, a fresh ADD and its DEL list the network directory zero times; a retried ADD neither', async () => {
    const a = new HostLocalIpam({ dataDir, network: 'net1', rangeSets: [[{ subnet: '10.9.0.0/24' }]] });
    for (let i = 0; i < 60; i++) await pod(a, `other${i}`).add();
    const p = pod(a, 'fresh');
    const counted = async <T>(call: () => Promise<T>): Promise<[T, number]> => {
      listed.length = 0;
      const out = await call();
      return [out, listings()];
    };
    const [added, addListings] = await counted(p.add);
    const [retried, retryListings] = await counted(p.add);
    const [released, delListings] = await counted(p.del);
    expect(added[0]!.address).toBe('10.9.0.62/24');
    expect(retried[0]).toMatchObject({ address: '10.9.0.62/24', created: false });
    expect(released).toEqual(['10.9.0.62']);
    expect({ addListings, retryListings, delListings }).toEqual({ addListings: 0, retryListings: 0, delListings: 0 });
  });

  it('a dense range costs one listing, not a probe of every taken address, and still finds the one free address', async () => {
    const a = new HostLocalIpam({ dataDir, network: 'net1', rangeSets: [[{ subnet: '10.9.0.0/24' }]] });
    await pod(a, 'first').add(); // makes the directory and last_reserved_ip (.2)
    // Every other address taken by hand (the reference host-local, say), except .200.
    for (let host = 3; host <= 254; host++) if (host !== 200) await writeFile(path.join(netDir(), `10.9.0.${host}`), `ref${host}\r\neth0`);
    listed.length = 0;
    expect((await pod(a, 'dense').add())[0]!.address).toBe('10.9.0.200/24');
    expect(listings()).toBe(1);
  });

  it('dual-stack: a dense IPv4 set and a sparse IPv6 set cost one listing between them, and each set gets its next free address', async () => {
    const a = new HostLocalIpam({ dataDir, network: 'net1', rangeSets: [[{ subnet: '10.9.0.0/27' }], [{ subnet: 'fd00:9::/120' }]] });
    expect((await pod(a, 'first').add()).map((x) => x.address)).toEqual(['10.9.0.2/27', 'fd00:9::2/120']);
    for (let host = 3; host <= 29; host++) await writeFile(path.join(netDir(), `10.9.0.${host}`), `ref${host}\r\neth0`);
    await writeFile(path.join(netDir(), 'fd00:9::3'), 'ref\r\neth0');
    listed.length = 0;
    expect((await pod(a, 'dual').add()).map((x) => x.address)).toEqual(['10.9.0.30/27', 'fd00:9::4/120']);
    expect(listings()).toBe(1);
    listed.length = 0;
    // Its DEL releases both without a listing.
    expect((await pod(a, 'dual').del()).sort()).toEqual(['10.9.0.30', 'fd00:9::4']);
    expect(listings()).toBe(0);
  });
});
