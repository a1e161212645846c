// Bugs the fuzz suite (test/fuzz) found, pinned at the unit level.
import { describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { validateIfname } from '../../../src/cni/env.js';
import { netConfFromObject } from '../../../src/cni/config.js';
import { CniError } from '../../../src/cni/errors.js';
import { parsePluginConfig } from '../../../src/plugin/config.js';
import { HostLocalIpam } from '../../../src/ipam/index.js';

const conf = (extra: Record<string, unknown>) =>
  netConfFromObject({ cniVersion: '1.1.0', name: 'n', type: 'tsflannel', dataDir: '/x', ...extra }, 'ADD');

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof CniError) return err.code;
    throw err;
  }
  return undefined;
}

describe('interface names', () => {
  it('refuse U+0085 (NEL), which Go counts as whitespace and \\s does not', () => {
    expect(codeOf(() => validateIfname('a\u0085b'))).toBe(4);
    expect(codeOf(() => validateIfname('eth0'))).toBeUndefined();
  });
});

describe('plugin config', () => {
  it('refuses a bridge name over 15 bytes even when it is 15 characters or fewer (was 999 from the kernel)', () => {
    expect(codeOf(() => parsePluginConfig(conf({ bridge: 'é'.repeat(8) })))).toBe(7);
    expect(codeOf(() => parsePluginConfig(conf({ bridge: 'a\u0085b' })))).toBe(7);
    expect(parsePluginConfig(conf({ bridge: 'é'.repeat(7) })).bridge).toBe('é'.repeat(7));
  });

  it('refuses a route gateway that is not an IPv4 address (was 999 from the kernel after the veth existed)', () => {
    for (const gw of ['garbage', '10.0.0.256', 'fd00::1', ' 10.0.0.1']) {
      expect(codeOf(() => parsePluginConfig(conf({ ipam: { routes: [{ dst: '10.0.0.0/8', gw }] } }))), gw).toBe(7);
    }
    expect(parsePluginConfig(conf({ ipam: { routes: [{ dst: '10.0.0.0/8', gw: '10.244.1.1' }] } })).routes).toEqual([
      { dst: '10.0.0.0/8', gw: '10.244.1.1' },
    ]);
  });
});

describe('lease files', () => {
  it('leave no temp file behind and sweep one a killed writer left', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'tsf-regress-'));
    try {
      const ipam = new HostLocalIpam({ dataDir, network: 'net', rangeSets: [[{ subnet: '10.9.0.0/29' }]] });
      await ipam.allocate('c1', 'eth0');
      const dir = path.join(dataDir, 'net');
      expect((await readdir(dir)).sort()).toEqual(['10.9.0.2', 'last_reserved_ip.0', 'lock']);
      // What a writer killed between writing its temp file and linking it leaves.
      await writeFile(path.join(dir, '.lease.4242.0badcafe.tmp'), 'c2\r\neth0');
      await writeFile(path.join(dir, '.last_reserved_ip.0.4242.0badcafe.tmp'), '10.9.0.3');
      expect(await ipam.list()).toEqual([{ ip: '10.9.0.2', containerId: 'c1', ifname: 'eth0' }]);
      expect((await readdir(dir)).sort()).toEqual(['10.9.0.2', 'last_reserved_ip.0', 'lock']);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
