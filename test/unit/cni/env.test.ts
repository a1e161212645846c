import { describe, expect, it } from 'vitest';
import { parseCniArgs, parseEnv } from '../../../src/cni/env.js';
import { cniErrorOf } from '../../helpers/cni-error.js';

const full = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'abc123',
  CNI_NETNS: '/var/run/netns/x',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin:/usr/lib/cni',
};


describe('parseEnv', () => {
  it('returns typed values for a complete ADD', () => {
    const env = parseEnv({ ...full, CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=p' });
    expect(env).toEqual({
      command: 'ADD',
      containerId: 'abc123',
      netns: '/var/run/netns/x',
      ifname: 'eth0',
      args: { IgnoreUnknown: '1', K8S_POD_NAME: 'p' },
      path: ['/opt/cni/bin', '/usr/lib/cni'],
    });
  });

  const cases: [string, Record<string, string | undefined>, number, RegExp][] = [
    ['CNI_COMMAND unset', { CNI_COMMAND: undefined }, 4, /CNI_COMMAND/],
    ['CNI_COMMAND empty', { CNI_COMMAND: '' }, 4, /CNI_COMMAND/],
    ['unknown command', { CNI_COMMAND: 'FROB' }, 4, /unknown CNI_COMMAND/],
    ['lower-case command', { CNI_COMMAND: 'add' }, 4, /unknown CNI_COMMAND/],
    ['ADD without container ID', { CNI_CONTAINERID: undefined }, 4, /CNI_CONTAINERID/],
    ['ADD with empty container ID', { CNI_CONTAINERID: '' }, 4, /CNI_CONTAINERID/],
    ['ADD without netns', { CNI_NETNS: '' }, 4, /CNI_NETNS/],
    ['ADD without ifname', { CNI_IFNAME: undefined }, 4, /CNI_IFNAME/],
    ['ADD without path', { CNI_PATH: undefined }, 4, /CNI_PATH/],
    ['CHECK without netns', { CNI_COMMAND: 'CHECK', CNI_NETNS: undefined }, 4, /CNI_NETNS/],
    ['DEL without container ID', { CNI_COMMAND: 'DEL', CNI_CONTAINERID: '' }, 4, /CNI_CONTAINERID/],
    ['DEL without ifname', { CNI_COMMAND: 'DEL', CNI_IFNAME: '' }, 4, /CNI_IFNAME/],
    ['container ID starting with a dot', { CNI_CONTAINERID: '.abc' }, 4, /container ID/],
    ['container ID with a slash', { CNI_CONTAINERID: 'a/b' }, 4, /container ID/],
    ['container ID with a space', { CNI_CONTAINERID: 'a b' }, 4, /container ID/],
    ['container ID of 1025 chars', { CNI_CONTAINERID: 'a'.repeat(1025) }, 4, /longer than 1024/],
    ['ifname of 16 bytes', { CNI_IFNAME: 'abcdefghijklmnop' }, 4, /longer than 15/],
    ['ifname of 15 chars but 16 bytes', { CNI_IFNAME: 'é' + 'a'.repeat(14) }, 4, /longer than 15/],
    ['ifname "."', { CNI_IFNAME: '.' }, 4, /may not be/],
    ['ifname ".."', { CNI_IFNAME: '..' }, 4, /may not be/],
    ['ifname with a slash', { CNI_IFNAME: 'eth/0' }, 4, /whitespace/],
    ['ifname with a colon', { CNI_IFNAME: 'eth0:1' }, 4, /whitespace/],
    ['ifname with a space', { CNI_IFNAME: 'eth 0' }, 4, /whitespace/],
    ['ifname with a tab', { CNI_IFNAME: 'eth\t0' }, 4, /whitespace/],
    ['ifname with a no-break space', { CNI_IFNAME: 'eth\u00a00' }, 4, /whitespace/],
    ['huge netns path', { CNI_NETNS: '/' + 'n'.repeat(5000) }, 4, /CNI_NETNS/],
    ['malformed CNI_ARGS', { CNI_ARGS: 'K8S_POD_NAME' }, 4, /invalid pair/],
    ['huge CNI_ARGS', { CNI_ARGS: 'A=' + 'b'.repeat(70_000) }, 4, /CNI_ARGS/],
  ];
  it.each(cases)('%s -> code %i', (_name, patch, code, msg) => {
    const env: Record<string, string | undefined> = { ...full, ...patch };
    const got = cniErrorOf(() => parseEnv(env));
    expect(got.code).toBe(code);
    expect(got.msg).toMatch(msg);
  });

  it('names every missing variable at once', () => {
    const got = cniErrorOf(() => parseEnv({ CNI_COMMAND: 'ADD' }));
    expect(got.code).toBe(4);
    for (const v of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH']) expect(got.msg).toContain(v);
  });

  it('accepts the longest legal values', () => {
    const env = parseEnv({ ...full, CNI_CONTAINERID: 'a'.repeat(1024), CNI_IFNAME: 'a'.repeat(15) });
    expect(env.containerId).toHaveLength(1024);
    expect(env.ifname).toBe('a'.repeat(15));
    expect(parseEnv({ ...full, CNI_CONTAINERID: 'A9_.-x' }).containerId).toBe('A9_.-x');
  });

  it('accepts DEL with an empty CNI_NETNS and no CNI_PATH (containerd second DEL)', () => {
    const env = parseEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'abc', CNI_IFNAME: 'eth0', CNI_NETNS: '' });
    expect(env).toMatchObject({ command: 'DEL', containerId: 'abc', ifname: 'eth0', netns: '', path: [] });
  });

  it('needs nothing but CNI_COMMAND for GC, STATUS and VERSION and blanks per-attachment values', () => {
    for (const command of ['GC', 'STATUS', 'VERSION']) {
      const env = parseEnv({ CNI_COMMAND: command, CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '' });
      expect(env).toEqual({ command, containerId: '', netns: '', ifname: '', args: {}, path: [] });
    }
    // podman's VERSION probe with dummy values is fine too.
    expect(parseEnv({ CNI_COMMAND: 'VERSION', CNI_NETNS: 'dummy', CNI_IFNAME: 'dummy', CNI_PATH: 'dummy' }).netns).toBe('');
    // GC keeps CNI_PATH, needed to forward GC to a delegate.
    expect(parseEnv({ CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }).path).toEqual(['/opt/cni/bin']);
  });

  it('drops empty CNI_PATH entries', () => {
    expect(parseEnv({ ...full, CNI_PATH: ':/a::/b:' }).path).toEqual(['/a', '/b']);
  });
});

describe('parseCniArgs', () => {
  it('reads the Kubernetes keys in any order', () => {
    const keys = ['IgnoreUnknown=1', 'K8S_POD_NAMESPACE=ns', 'K8S_POD_NAME=p', 'K8S_POD_INFRA_CONTAINER_ID=abc', 'K8S_POD_UID=u-1'];
    const want = { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'ns', K8S_POD_NAME: 'p', K8S_POD_INFRA_CONTAINER_ID: 'abc', K8S_POD_UID: 'u-1' };
    expect(parseCniArgs(keys.join(';'))).toEqual(want);
    expect(parseCniArgs([...keys].reverse().join(';'))).toEqual(want);
    expect(parseCniArgs([keys[2], keys[0], keys[4], keys[1], keys[3]].join(';'))).toEqual(want);
  });

  it('treats an empty string as no args and allows empty values', () => {
    expect(parseCniArgs('')).toEqual({});
    expect(parseCniArgs('IP=')).toEqual({ IP: '' });
  });

  it('keeps "__proto__" as a plain key', () => {
    const args = parseCniArgs('__proto__=x;A=b');
    expect(Object.keys(args)).toEqual(['__proto__', 'A']);
    expect(args.__proto__).toBe('x');
    expect(({} as Record<string, unknown>).A).toBeUndefined();
  });

  it.each(['A', 'A=b=c', '=b', 'A=b;', ';A=b', 'A=b;;C=d'])('rejects %j with code 4', (s) => {
    expect(cniErrorOf(() => parseCniArgs(s)).code).toBe(4);
  });
});
