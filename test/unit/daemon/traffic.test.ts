// The iptables traffic manager's handling of a failing or missing tool,
// against a scripted runner (the kernel side is in test/integration/
// iptables.test.ts): a run that failed is never taken for "nothing there".
import { describe, expect, it } from 'vitest';
import { cleanUpIptables, IptablesTrafficManager, type IptablesRunner } from '../../../src/daemon/traffic/iptables.js';
import { NOT_INSTALLED } from '../../../src/daemon/traffic/exec.js';
import { NftablesTrafficManager } from '../../../src/daemon/traffic/nftables.js';
import type { RunResult } from '../../../src/daemon/traffic/types.js';

const LOCKED: RunResult = { code: 4, stdout: '', stderr: 'Another app is currently holding the xtables lock. Stopped waiting after 5s.\n' };
const VERSION: RunResult = { code: 0, stdout: 'iptables v1.8.9 (legacy)\n', stderr: '' };

/** Answers --version, and every other call with `rest`; records the calls. */
function scripted(rest: RunResult): { run: IptablesRunner; calls: string[][] } {
  const calls: string[][] = [];
  const run: IptablesRunner = async (args) => {
    calls.push(args);
    return args[0] === '--version' ? VERSION : rest;
  };
  return { run, calls };
}

describe('iptables clean-up when iptables fails', () => {
  it('a held xtables lock fails the clean-up (tsflanneld --cleanup, a mode switch) instead of reporting nothing to remove', async () => {
    const { run } = scripted(LOCKED);
    await expect(cleanUpIptables(run)).rejects.toThrow(/xtables lock/);
  });

  it('rules and chains that are really absent (exit 1 and 2) are a clean no-op', async () => {
    const absent = (args: string[]): RunResult =>
      args.includes('-D') ? { code: 2, stdout: '', stderr: "iptables v1.8.9 (nf_tables): Chain 'FLANNEL-POSTRTG' does not exist\n" } : { code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.\n' };
    const run: IptablesRunner = async (args) => (args[0] === '--version' ? VERSION : absent(args));
    await expect(cleanUpIptables(run)).resolves.toBe(false);
  });
});

describe('iptables mode without the iptables tool', () => {
  it('ensure() says which package is missing (iptables, ip6tables for an IPv6 network)', async () => {
    for (const network of ['10.244.0.0/16', 'fd00:10:244::/56']) {
      const subnet = network.includes(':') ? 'fd00:10:244:1::/64' : '10.244.1.0/24';
      const { run } = scripted({ code: NOT_INSTALLED, stdout: '', stderr: 'spawn iptables ENOENT' });
      const m = new IptablesTrafficManager({ network, subnet, ipMasq: true, forwardRules: true, randomFully: false }, { runner: run });
      const tool = network.includes(':') ? 'ip6tables' : 'iptables';
      await expect(m.ensure()).rejects.toThrow(new RegExp(`^${tool} not found: .*install the iptables package`));
    }
  });
});

describe('both switches off (--ip-masq and --iptables-forward-rules) on a node without the tools', () => {
  const off = { network: '10.244.0.0/16', subnet: '10.244.1.0/24', ipMasq: false, forwardRules: false, randomFully: false };
  const missing: IptablesRunner = async () => ({ code: NOT_INSTALLED, stdout: '', stderr: 'spawn nft ENOENT' });

  it('iptables mode: ensure() and check() need no iptables', async () => {
    const m = new IptablesTrafficManager(off, { runner: missing });
    expect(await m.ensure()).toEqual([]);
    expect(await m.check()).toEqual([]);
  });

  it('nftables mode: ensure() and check() need no nft', async () => {
    const m = new NftablesTrafficManager(off, { runner: missing });
    expect(await m.ensure()).toEqual([]);
    expect(await m.check()).toEqual([]);
  });
});
