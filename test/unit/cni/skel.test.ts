import { describe, expect, it } from 'vitest';
import { CniError, ErrorCode } from '../../../src/cni/errors.js';
import { runPlugin, type PluginContext, type PluginHandlers } from '../../../src/cni/skel.js';
import type { Result } from '../../../src/cni/result.js';

const addEnv = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'ctr1',
  CNI_NETNS: '/var/run/netns/tsf-unit-does-not-exist',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: 'K8S_POD_NAME=p;IgnoreUnknown=1',
};
const conf = (cniVersion = '1.1.0', extra: Record<string, unknown> = {}) =>
  Buffer.from(JSON.stringify({ cniVersion, name: 'cbr0', type: 'tsflannel', ...extra }));

const result: Result = {
  cniVersion: '1.1.0',
  interfaces: [{ name: 'cni0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/var/run/netns/x', mtu: 1450 }],
  ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 2 }],
  routes: [{ dst: '10.244.0.0/16', gw: '10.244.1.1', mtu: 1400 }],
};

interface Harness {
  handlers: PluginHandlers;
  calls: { verb: string; ctx: PluginContext }[];
}

function fakeHandlers(behaviour: Partial<Record<keyof PluginHandlers, () => unknown>> = {}): Harness {
  const calls: Harness['calls'] = [];
  const make = (verb: keyof PluginHandlers, dflt: unknown) => async (ctx: PluginContext) => {
    calls.push({ verb, ctx });
    const b = behaviour[verb];
    return (b ? b() : dflt) as never;
  };
  return {
    calls,
    handlers: { add: make('add', result), del: make('del', undefined), check: make('check', undefined), gc: make('gc', undefined), status: make('status', undefined) },
  };
}

async function run(h: Harness, env: Record<string, string>, stdin: Buffer) {
  const out: string[] = [];
  const logs: { msg: string; err?: unknown }[] = [];
  const code = await runPlugin(h.handlers, {
    env,
    stdin,
    stdout: (t) => out.push(t),
    log: (msg, err) => logs.push({ msg, err }),
  });
  const text = out.join('');
  return { code, text, writes: out.length, logs, json: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
}

function expectOneErrorLine(r: Awaited<ReturnType<typeof run>>, code: number, cniVersion = '1.1.0') {
  expect(r.code).toBe(1);
  expect(r.writes).toBe(1);
  expect(r.text.endsWith('\n')).toBe(true);
  expect(r.text.trimEnd().split('\n')).toHaveLength(1);
  expect(r.json?.code).toBe(code);
  expect(r.json?.cniVersion).toBe(cniVersion);
  expect(typeof r.json?.msg).toBe('string');
  expect(Object.keys(r.json ?? {}).every((k) => ['cniVersion', 'code', 'msg', 'details'].includes(k))).toBe(true);
}

describe('runPlugin VERSION', () => {
  it('answers podman-style probes without calling any handler', async () => {
    const h = fakeHandlers();
    const env = { CNI_COMMAND: 'VERSION', CNI_NETNS: 'dummy', CNI_IFNAME: 'dummy', CNI_PATH: 'dummy' };
    const r = await run(h, env, Buffer.from('{"cniVersion":"1.0.0"}'));
    expect(r.code).toBe(0);
    expect(r.writes).toBe(1);
    expect(r.json).toEqual({ cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
    expect(h.calls).toEqual([]);
  });

  it('answers with empty or garbage stdin and bad other variables', async () => {
    for (const stdin of ['', 'not json', '{"cniVersion":"0.2.0"}']) {
      const r = await run(fakeHandlers(), { CNI_COMMAND: 'VERSION', CNI_CONTAINERID: '!!', CNI_IFNAME: 'x'.repeat(40) }, Buffer.from(stdin));
      expect(r.code).toBe(0);
      expect(r.json?.cniVersion).toBe('1.1.0');
      expect(r.json?.supportedVersions).toContain('0.3.1');
    }
  });
});

describe('runPlugin ADD', () => {
  it('passes typed env and config to the handler and prints the result in the config version', async () => {
    const h = fakeHandlers();
    const r = await run(h, addEnv, conf('1.1.0'));
    expect(r.code).toBe(0);
    expect(r.writes).toBe(1);
    expect(r.json).toEqual({ ...result, cniVersion: '1.1.0' });
    expect(h.calls).toHaveLength(1);
    const { ctx } = h.calls[0]!;
    expect(ctx.env).toMatchObject({ command: 'ADD', containerId: 'ctr1', ifname: 'eth0', args: { K8S_POD_NAME: 'p' } });
    expect(ctx.conf).toMatchObject({ cniVersion: '1.1.0', name: 'cbr0', type: 'tsflannel', runtimeConfig: {} });
  });

  it('prints 0.3.1 with ips[].version and 1.0.0 without the 1.1 route fields', async () => {
    const old = await run(fakeHandlers(), addEnv, conf('0.3.1'));
    expect(old.json?.cniVersion).toBe('0.3.1');
    expect(old.json?.ips).toEqual([{ version: '4', address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 2 }]);
    const v100 = await run(fakeHandlers(), addEnv, conf('1.0.0'));
    expect(v100.json?.routes).toEqual([{ dst: '10.244.0.0/16', gw: '10.244.1.1' }]);
    expect(v100.json?.interfaces).toEqual([{ name: 'cni0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/var/run/netns/x' }]);
  });

  it('turns a thrown CniError into one JSON line with its code and the config version', async () => {
    const h = fakeHandlers({
      add: () => {
        throw new CniError(ErrorCode.TryAgainLater, 'IPAM busy', 'lock held');
      },
    });
    const r = await run(h, addEnv, conf('0.4.0'));
    expectOneErrorLine(r, 11, '0.4.0');
    expect(r.json).toEqual({ cniVersion: '0.4.0', code: 11, msg: 'IPAM busy', details: 'lock held' });
    expect(r.logs).toHaveLength(1);
  });

  it('turns a plain Error into code 999 with its message and no stack on stdout', async () => {
    const boom = new Error('kaboom\nsecond line');
    const h = fakeHandlers({
      add: () => {
        throw boom;
      },
    });
    const r = await run(h, addEnv, conf());
    expectOneErrorLine(r, 999);
    expect(r.json?.msg).toBe('kaboom\nsecond line');
    expect(r.text).not.toContain('at ');
    expect(r.logs[0]?.err).toBe(boom);
  });

  it('turns a thrown non-Error value into code 999', async () => {
    const r = await run(fakeHandlers({ add: () => Promise.reject('just a string') }), addEnv, conf());
    expectOneErrorLine(r, 999);
    expect(r.json?.msg).toBe('just a string');
  });

  it('refuses an invalid handler result with 999 rather than printing it', async () => {
    const r = await run(fakeHandlers({ add: () => ({ cniVersion: '1.1.0', ips: [{ address: 'x' }] }) }), addEnv, conf());
    expectOneErrorLine(r, 999);
  });

  it('reports env errors (4) before reading the config, labelled 1.1.0', async () => {
    const h = fakeHandlers();
    const r = await run(h, { ...addEnv, CNI_IFNAME: 'eth0:bad' }, conf('0.3.1'));
    expectOneErrorLine(r, 4);
    expect(h.calls).toEqual([]);
  });

  it('reports config errors with their codes and the config version when known', async () => {
    expectOneErrorLine(await run(fakeHandlers(), addEnv, Buffer.from('{')), 6);
    expectOneErrorLine(await run(fakeHandlers(), addEnv, conf('0.2.0')), 1);
    const noName = Buffer.from(JSON.stringify({ cniVersion: '0.4.0', type: 't' }));
    expectOneErrorLine(await run(fakeHandlers(), addEnv, noName), 7, '0.4.0');
  });

  it('refuses the plugin\'s own netns with code 8 unless CNI_NETNS_OVERRIDE is set', async () => {
    const h = fakeHandlers();
    const own = { ...addEnv, CNI_NETNS: '/proc/self/ns/net' };
    expectOneErrorLine(await run(h, own, conf()), 8);
    expect(h.calls).toEqual([]);
    const r = await run(h, { ...own, CNI_NETNS_OVERRIDE: '1' }, conf());
    expect(r.code).toBe(0);
    expect(h.calls).toHaveLength(1);
  });

  it('fails with 4 for unknown or missing CNI_COMMAND', async () => {
    expectOneErrorLine(await run(fakeHandlers(), { ...addEnv, CNI_COMMAND: 'FROB' }, conf()), 4);
    const { CNI_COMMAND: _drop, ...noCommand } = addEnv;
    expectOneErrorLine(await run(fakeHandlers(), noCommand, conf()), 4);
  });
});

describe('runPlugin DEL, CHECK, GC, STATUS', () => {
  it('DEL with an empty CNI_NETNS reaches the handler and prints nothing', async () => {
    const h = fakeHandlers();
    const r = await run(h, { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'ctr1', CNI_IFNAME: 'eth0', CNI_NETNS: '', CNI_PATH: '/opt/cni/bin' }, conf());
    expect(r).toMatchObject({ code: 0, text: '', writes: 0 });
    expect(h.calls.map((c) => c.verb)).toEqual(['del']);
    expect(h.calls[0]!.ctx.env.netns).toBe('');
  });

  it('DEL passes the converted prevResult', async () => {
    const h = fakeHandlers();
    const prevResult = { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.244.1.5/24' }] };
    await run(h, { ...addEnv, CNI_COMMAND: 'DEL' }, conf('0.4.0', { prevResult }));
    expect(h.calls[0]!.ctx.conf.prevResult).toEqual({ cniVersion: '0.4.0', ips: [{ address: '10.244.1.5/24' }] });
  });

  it('CHECK, GC and STATUS print nothing on success', async () => {
    const h = fakeHandlers();
    const check = await run(h, { ...addEnv, CNI_COMMAND: 'CHECK' }, conf('0.4.0'));
    const gc = await run(h, { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, conf('1.1.0', { 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }));
    const status = await run(h, { CNI_COMMAND: 'STATUS' }, conf('1.1.0'));
    for (const r of [check, gc, status]) expect(r).toMatchObject({ code: 0, writes: 0 });
    expect(h.calls.map((c) => c.verb)).toEqual(['check', 'gc', 'status']);
    expect(h.calls[1]!.ctx.conf.validAttachments).toEqual([{ containerID: 'a', ifname: 'eth0' }]);
  });

  it('CHECK on a 0.3.1 config is refused with code 1 before the handler runs', async () => {
    const h = fakeHandlers();
    expectOneErrorLine(await run(h, { ...addEnv, CNI_COMMAND: 'CHECK' }, conf('0.3.1')), 1, '0.3.1');
    expect(h.calls).toEqual([]);
  });

  it('STATUS failure carries the handler code (50)', async () => {
    const h = fakeHandlers({
      status: () => {
        throw new CniError(ErrorCode.PluginNotAvailable, 'no subnet file');
      },
    });
    expectOneErrorLine(await run(h, { CNI_COMMAND: 'STATUS' }, conf()), 50);
  });
});
