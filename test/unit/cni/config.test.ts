import { describe, expect, it } from 'vitest';
import { CniError } from '../../../src/cni/errors.js';
import { MAX_CONFIG_BYTES, decodeConfig, netConfFromObject } from '../../../src/cni/config.js';
import type { Command } from '../../../src/cni/env.js';

/** stdin to NetConf as skel reads it: decode the bytes, then check the protocol fields. */
const readNetConf = (input: Buffer | string, command: Command) => netConfFromObject(decodeConfig(input), command);

const base = { cniVersion: '1.1.0', name: 'cbr0', type: 'tsflannel' };
const json = (o: unknown) => JSON.stringify(o);

function failure(input: Buffer | string, command: Command = 'ADD'): CniError {
  try {
    readNetConf(input, command);
  } catch (err) {
    expect(err).toBeInstanceOf(CniError);
    return err as CniError;
  }
  throw new Error('expected readNetConf to fail');
}

describe('NetConf from stdin: success', () => {
  it('decodes the protocol fields and keeps the rest in raw', () => {
    const input = { ...base, delegate: { hairpinMode: true }, capabilities: { portMappings: true } };
    const conf = readNetConf(Buffer.from(json(input)), 'ADD');
    expect(conf).toEqual({ cniVersion: '1.1.0', name: 'cbr0', type: 'tsflannel', runtimeConfig: {}, raw: input });
    expect(conf.prevResult).toBeUndefined();
    expect(conf.validAttachments).toBeUndefined();
  });

  it('accepts every supported version, including the stock flannel 0.3.1 config', () => {
    for (const cniVersion of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']) {
      expect(readNetConf(json({ ...base, cniVersion }), 'ADD').cniVersion).toBe(cniVersion);
    }
  });

  it('passes runtimeConfig through as given', () => {
    const rc = { portMappings: [{ HostPort: 8080, ContainerPort: 80, Protocol: 'tcp', HostIP: '' }] };
    expect(readNetConf(json({ ...base, runtimeConfig: rc }), 'ADD').runtimeConfig).toEqual(rc);
    expect(readNetConf(json({ ...base, runtimeConfig: null }), 'ADD').runtimeConfig).toEqual({});
  });

  it('converts prevResult on ADD, CHECK and DEL', () => {
    const prevResult = { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.244.1.5/24', gateway: '10.244.1.1' }] };
    for (const command of ['ADD', 'CHECK', 'DEL'] as const) {
      const conf = readNetConf(json({ ...base, cniVersion: '0.4.0', prevResult }), command);
      expect(conf.prevResult).toEqual({ cniVersion: '0.4.0', ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1' }] });
    }
    expect(readNetConf(json({ ...base, prevResult: null }), 'DEL').prevResult).toBeUndefined();
  });

  it('DEL drops an unreadable prevResult and runtimeConfig instead of failing', () => {
    const conf = readNetConf(json({ ...base, prevResult: { ips: [{ address: 'bogus' }] }, runtimeConfig: 5 }), 'DEL');
    expect(conf.prevResult).toBeUndefined();
    expect(conf.runtimeConfig).toEqual({});
    expect(failure(json({ ...base, prevResult: { ips: [{ address: 'bogus' }] } }), 'CHECK').code).toBe(7);
    expect(failure(json({ ...base, runtimeConfig: 5 }), 'ADD').code).toBe(7);
  });

  it('reads GC valid attachments from either key; null means none', () => {
    const list = [{ containerID: 'abc', ifname: 'eth0' }, { containerID: 'def', ifname: 'net1' }];
    expect(readNetConf(json({ ...base, 'cni.dev/valid-attachments': list }), 'GC').validAttachments).toEqual(list);
    expect(readNetConf(json({ ...base, 'cni.dev/attachments': list }), 'GC').validAttachments).toEqual(list);
    // libcni sends both keys; the current one wins.
    const both = json({ ...base, 'cni.dev/valid-attachments': [list[0]], 'cni.dev/attachments': list });
    expect(readNetConf(both, 'GC').validAttachments).toEqual([list[0]]);
    expect(readNetConf(json({ ...base, 'cni.dev/valid-attachments': null }), 'GC').validAttachments).toEqual([]);
    expect(readNetConf(json({ ...base, 'cni.dev/valid-attachments': [] }), 'GC').validAttachments).toEqual([]);
  });

  it('accepts a config of exactly 1 MiB', () => {
    const pad = 'x'.repeat(MAX_CONFIG_BYTES - json({ ...base, pad: '' }).length);
    expect(readNetConf(json({ ...base, pad }), 'ADD').name).toBe('cbr0');
  });
});

describe('NetConf from stdin: errors', () => {
  const cases: [string, Buffer | string, Command, number, RegExp][] = [
    ['empty stdin', '', 'ADD', 6, /empty/],
    ['whitespace only', ' \n', 'ADD', 6, /empty/],
    ['not JSON', '{"cniVersion":', 'ADD', 6, /not valid JSON/],
    ['a JSON list', '[]', 'ADD', 6, /must be a JSON object/],
    ['JSON null', 'null', 'ADD', 6, /must be a JSON object/],
    ['a JSON string', '"x"', 'ADD', 6, /must be a JSON object/],
    ['invalid UTF-8', Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]), 'ADD', 6, /UTF-8/],
    ['too large', json({ ...base, pad: 'x'.repeat(MAX_CONFIG_BYTES) }), 'ADD', 6, /larger than/],
    ['too deep', `{"cniVersion":"1.1.0","name":"n","type":"t","x":${'['.repeat(100)}${']'.repeat(100)}}`, 'ADD', 6, /nests deeper/],
    ['missing name', json({ cniVersion: '1.1.0', type: 't' }), 'ADD', 7, /missing network name/],
    ['numeric name', json({ ...base, name: 5 }), 'ADD', 7, /network name must be a string/],
    ['name with a slash', json({ ...base, name: 'a/b' }), 'ADD', 7, /invalid characters/],
    ['name "."', json({ ...base, name: '.' }), 'ADD', 7, /invalid characters/],
    ['name ".."', json({ ...base, name: '..' }), 'ADD', 7, /invalid characters/],
    ['name starting with "-"', json({ ...base, name: '-n' }), 'ADD', 7, /invalid characters/],
    ['name of 129 chars', json({ ...base, name: 'n'.repeat(129) }), 'ADD', 7, /longer than 128/],
    ['missing cniVersion', json({ name: 'n', type: 't' }), 'ADD', 1, /incompatible/],
    ['numeric cniVersion', json({ ...base, cniVersion: 1 }), 'ADD', 6, /cniVersion must be a string/],
    ['malformed cniVersion', json({ ...base, cniVersion: '1.0' }), 'ADD', 7, /MAJOR\.MINOR\.PATCH/],
    ['unsupported cniVersion 0.2.0', json({ ...base, cniVersion: '0.2.0' }), 'ADD', 1, /incompatible CNI versions/],
    ['future cniVersion', json({ ...base, cniVersion: '2.0.0' }), 'ADD', 1, /incompatible CNI versions/],
    ['missing type', json({ cniVersion: '1.1.0', name: 'n' }), 'ADD', 7, /missing plugin type/],
    ['type with a path', json({ ...base, type: '../bin/x' }), 'ADD', 7, /invalid plugin type/],
    ['CHECK on 0.3.1', json({ ...base, cniVersion: '0.3.1' }), 'CHECK', 1, /does not allow CHECK/],
    ['GC on 1.0.0', json({ ...base, cniVersion: '1.0.0', 'cni.dev/valid-attachments': [] }), 'GC', 1, /does not allow GC/],
    ['STATUS on 0.4.0', json({ ...base, cniVersion: '0.4.0' }), 'STATUS', 1, /does not allow STATUS/],
    ['GC without attachments', json(base), 'GC', 7, /cni\.dev\/valid-attachments/],
    ['GC attachments not a list', json({ ...base, 'cni.dev/valid-attachments': {} }), 'GC', 7, /must be a list/],
    ['GC attachment bad ID', json({ ...base, 'cni.dev/valid-attachments': [{ containerID: 'a b', ifname: 'eth0' }] }), 'GC', 7, /\[0\]\.containerID/],
    ['GC attachment bad ifname', json({ ...base, 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'e:1' }] }), 'GC', 7, /\[0\]\.ifname/],
    ['GC attachment missing ifname', json({ ...base, 'cni.dev/valid-attachments': [{ containerID: 'a' }] }), 'GC', 7, /\[0\]\.ifname/],
    ['bad prevResult on ADD', json({ ...base, prevResult: [] }), 'ADD', 7, /prevResult/],
  ];
  it.each(cases)('%s -> code %i', (_n, input, command, code, msg) => {
    const err = failure(input, command);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(msg);
  });

  it('says which versions it supports when refusing one', () => {
    const err = failure(json({ ...base, cniVersion: '0.2.0' }));
    expect(err.details).toContain('"0.2.0"');
    expect(err.details).toContain('1.1.0');
  });

  it('allows CHECK from 0.4.0 and GC/STATUS from 1.1.0', () => {
    expect(readNetConf(json({ ...base, cniVersion: '0.4.0' }), 'CHECK').cniVersion).toBe('0.4.0');
    expect(readNetConf(json(base), 'STATUS').cniVersion).toBe('1.1.0');
  });

  it('does not overflow the stack on hostile nesting', () => {
    const deep = `{"a":${'['.repeat(500_000)}${']'.repeat(500_000)}}`;
    expect(failure(deep).code).toBe(6);
    // Brackets inside strings do not count.
    const inString = json({ ...base, s: '['.repeat(1000) + '\\"{' });
    expect(readNetConf(inString, 'ADD').raw.s).toBe('['.repeat(1000) + '\\"{');
  });
});
