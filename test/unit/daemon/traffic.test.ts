// The iptables traffic manager's handling of a failing or missing tool,
// against a scripted runner (the kernel side is in test/integration/
// iptables.test.ts): a run that failed is never taken for "nothing there".
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { ensureTrafficAtStart } from '../../../src/daemon/traffic/index.js';
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

/**
 * Just enough of iptables for ensure() and the clean-up: chains made with
 * -N, flushed with -F, deleted with -X; rules (`table chain spec`, `seed`
 * first) checked with -C, inserted with -I, appended with -A, deleted with
 * -D, listed with -S; the lock-wait arguments before -t are skipped.
 */
function tinyIptables(seed: { chains?: string[]; rules?: string[] } = {}): { run: IptablesRunner; rules: string[] } {
  const chains = new Set(['filter FORWARD', 'nat POSTROUTING', ...(seed.chains ?? [])]);
  const rules: string[] = [...(seed.rules ?? [])];
  const ok = (stdout = ''): RunResult => ({ code: 0, stdout, stderr: '' });
  const absent: RunResult = { code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.\n' };
  const run: IptablesRunner = async (all) => {
    const args = all.slice(all.indexOf('-t'));
    const [, table, op, chain, ...rest] = args;
    const key = `${table} ${chain}`;
    if (op === '-N') return chains.add(key), ok();
    if (!chains.has(key)) return absent;
    const inChain = rules.filter((r) => r.startsWith(`${key} `));
    if (op === '-S') return ok(inChain.map((r) => `-A ${r.slice(key.length + 1)}\n`).join(''));
    const rule = `${key} ${rest.slice(op === '-I' ? 1 : 0).join(' ')}`;
    if (op === '-C') return rules.includes(rule) ? ok() : absent;
    if (op === '-D') return rules.includes(rule) ? (rules.splice(rules.indexOf(rule), 1), ok()) : absent;
    if (op === '-F') {
      for (const r of inChain) rules.splice(rules.indexOf(r), 1);
      return ok();
    }
    if (op === '-X') return chains.delete(key), ok();
    if (op === '-A') return rules.push(rule), ok();
    if (op === '-I') {
      const before = inChain[Number(rest[0]) - 1];
      rules.splice(before === undefined ? rules.length : rules.indexOf(before), 0, rule);
      return ok();
    }
    return absent;
  };
  return { run, rules };
}

/** A pino logger whose lines land in `lines` (parsed). */
function capturingLogger(): { log: pino.Logger; lines: { level: number; msg: string; err?: string }[] } {
  const lines: { level: number; msg: string; err?: string }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { level: number; msg: string; err?: string }) });
  return { log, lines };
}

describe('agent start: a failing first ensure() warns instead of stopping the agent, and the resync retries', () => {
  const off = { network: '10.244.0.0/16', subnet: '10.244.1.0/24', ipMasq: false, forwardRules: false, randomFully: false };

  /**
   * An earlier run's FLANNEL-POSTRTG with its jump from POSTROUTING, behind an
   * xtables lock held while `locked` is true; records every call.
   */
  function leftoverBehindLock(): { run: IptablesRunner; calls: string[][]; unlock: () => void } {
    let locked = true;
    let jump = true;
    let chain = true;
    const calls: string[][] = [];
    const ok: RunResult = { code: 0, stdout: '', stderr: '' };
    const absent: RunResult = { code: 1, stdout: '', stderr: 'iptables: No chain/target/match by that name.\n' };
    const run: IptablesRunner = async (args) => {
      calls.push(args);
      if (args[0] === '--version') return VERSION;
      if (locked) return LOCKED;
      const t = args.indexOf('-t'); // after the lock-wait arguments
      const [op, name] = [args[t + 2], args[t + 3]];
      if (name === 'POSTROUTING' && op === '-C') return jump ? ok : absent;
      if (name === 'POSTROUTING' && op === '-D') return jump ? ((jump = false), ok) : absent;
      if (name === 'FLANNEL-POSTRTG' && op === '-S') return chain ? ok : absent;
      if (name === 'FLANNEL-POSTRTG' && (op === '-F' || op === '-X')) return op === '-X' && (chain = false), ok;
      return absent;
    };
    return { run, calls, unlock: () => void (locked = false) };
  }

  it('iptables: a held xtables lock (exit 4) warns instead of failing the start, and the resync\'s ensure() removes the rules later', async () => {
    const { run, calls, unlock } = leftoverBehindLock();
    const m = new IptablesTrafficManager(off, { runner: run });
    const { log, lines } = capturingLogger();
    await expect(ensureTrafficAtStart(m, off, log)).resolves.toBe(false);
    expect(lines.filter((l) => l.level === 40)).toEqual([
      expect.objectContaining({ msg: expect.stringMatching(/resync retries/), err: expect.stringMatching(/xtables lock/) }),
    ]);
    // the resync: the lock is gone, ensure() retries the removal
    unlock();
    calls.length = 0;
    await m.ensure();
    const ran = calls.map((c) => c.slice(c.indexOf('-t')).slice(0, 4).join(' '));
    expect(ran).toContain('-t nat -D POSTROUTING');
    expect(ran).toContain('-t nat -X FLANNEL-POSTRTG');
    // done once: later resyncs run nothing
    calls.length = 0;
    expect(await m.ensure()).toEqual([]);
    expect(calls).toEqual([]);
  });

  it('iptables: with --ip-masq on, a held xtables lock warns instead of failing the start, and the resync\'s ensure() installs the masquerade', async () => {
    const table = tinyIptables();
    let locked = true;
    const run: IptablesRunner = async (args) => (args[0] === '--version' ? VERSION : locked ? LOCKED : table.run(args));
    const on = { ...off, ipMasq: true, forwardRules: false };
    const m = new IptablesTrafficManager(on, { runner: run });
    const { log, lines } = capturingLogger();
    await expect(ensureTrafficAtStart(m, on, log)).resolves.toBe(false);
    expect(lines.filter((l) => l.level === 40)).toEqual([
      expect.objectContaining({ msg: expect.stringMatching(/could not install the traffic rules at start; the resync retries/), err: expect.stringMatching(/xtables lock/) }),
    ]);
    expect(table.rules).toEqual([]);
    // the resync, the lock free again
    locked = false;
    expect(await m.ensure()).toHaveLength(7);
    expect(table.rules).toContain('nat POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG');
    expect(table.rules.filter((r) => r.startsWith('nat FLANNEL-POSTRTG ')).at(-1)).toMatch(/-j MASQUERADE$/);
    expect(await m.ensure()).toEqual([]);
  });

  it('nftables: an nft error deleting an earlier run\'s table warns instead of failing the start, and the resync deletes it', async () => {
    let broken = true;
    let table = true;
    const run: IptablesRunner = async (args) => {
      if (args[0] === 'list') return table ? { code: 0, stdout: 'table ip flannel {\n}\n', stderr: '' } : { code: 1, stdout: '', stderr: 'Error: No such file or directory\n' };
      if (broken) return { code: 1, stdout: '', stderr: 'Error: Could not process rule: Device or resource busy\n' };
      table = false;
      return { code: 0, stdout: '', stderr: '' };
    };
    const m = new NftablesTrafficManager(off, { runner: run });
    const { log, lines } = capturingLogger();
    await expect(ensureTrafficAtStart(m, off, log)).resolves.toBe(false);
    expect(lines.filter((l) => l.level === 40)).toEqual([expect.objectContaining({ err: expect.stringMatching(/deleting table .* failed \(exit 1\)/) })]);
    broken = false;
    expect(await m.ensure()).toEqual([expect.stringMatching(/^removed table /)]);
    expect(table).toBe(false);
    expect(await m.ensure()).toEqual([]);
  });
});

describe('one removal of flannel\'s iptables chains', () => {
  // An earlier run's FLANNEL-POSTRTG with two copies of its jump, and its FLANNEL-FWD.
  const seed = {
    chains: ['nat FLANNEL-POSTRTG', 'filter FLANNEL-FWD'],
    rules: [
      'nat POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG',
      'nat POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG',
      'nat FLANNEL-POSTRTG -s 10.244.0.0/16 -m comment --comment flanneld masq -j MASQUERADE',
      'filter FORWARD -m comment --comment flanneld forward -j FLANNEL-FWD',
      'filter FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment flanneld forward -j ACCEPT',
    ],
  };
  const recorded = (): { run: IptablesRunner; calls: string[]; rules: string[] } => {
    const table = tinyIptables(seed);
    const calls: string[] = [];
    const run: IptablesRunner = async (args) => {
      calls.push(args.join(' '));
      return args[0] === '--version' ? VERSION : table.run(args);
    };
    return { run, calls, rules: table.rules };
  };

  it('the agent removing switched-off chains and tsflanneld --cleanup run the same iptables calls: one -D per jump copy, then -S, -F, -X', async () => {
    const agent = recorded();
    await new IptablesTrafficManager({ ...seed, network: '10.244.0.0/16', subnet: '10.244.1.0/24', ipMasq: false, forwardRules: false, randomFully: false }, { runner: agent.run }).ensure();
    const cleanup = recorded();
    await expect(cleanUpIptables(cleanup.run)).resolves.toBe(true);
    expect(agent.rules).toEqual([]);
    expect(cleanup.rules).toEqual([]);
    expect(agent.calls).toEqual(cleanup.calls);
    expect(cleanup.calls.filter((c) => c.includes('-t nat'))).toEqual([
      '-w 5 -t nat -D POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG',
      '-w 5 -t nat -D POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG',
      '-w 5 -t nat -D POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG',
      '-w 5 -t nat -S FLANNEL-POSTRTG',
      '-w 5 -t nat -F FLANNEL-POSTRTG',
      '-w 5 -t nat -X FLANNEL-POSTRTG',
    ]);
  });
});
