import { describe, expect, it } from 'vitest';
import { compareVersions, CURRENT_VERSION, isSupportedVersion, SUPPORTED_VERSIONS, versionInfo } from '../../../src/cni/versions.js';
import { isIPv4, isIPv4Cidr, isIPv6Cidr, optArray, optBool, optInt, optObject, optString } from '../../../src/cni/validate.js';
import { cniErrorOf } from '../../helpers/cni-error.js';

describe('versions', () => {
  it('lists the supported versions and knows the current one', () => {
    expect([...SUPPORTED_VERSIONS]).toEqual(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    expect(CURRENT_VERSION).toBe('1.1.0');
    expect(isSupportedVersion('0.3.1')).toBe(true);
    for (const v of ['0.2.0', '0.1.0', '1.2.0', '', '1.1', 'v1.1.0']) expect(isSupportedVersion(v)).toBe(false);
  });

  it('compares numerically, component by component', () => {
    expect(compareVersions('0.4.0', '0.3.1')).toBe(1);
    expect(compareVersions('0.3.1', '0.4.0')).toBe(-1);
    expect(compareVersions('1.0.0', '1.0.0')).toBe(0);
    expect(compareVersions('0.10.0', '0.9.0')).toBe(1);
    expect(compareVersions('1.0', '1.0.0')).toBe(0);
    expect(compareVersions('x.y.z', '0.0.0')).toBe(-1);
    const sorted = ['1.1.0', '0.3.0', '1.0.0', '0.4.0', '0.3.1'].sort(compareVersions);
    expect(sorted).toEqual([...SUPPORTED_VERSIONS]);
  });

  it('echoes a supported requested version and falls back to the current one', () => {
    expect(versionInfo('1.0.0')).toEqual({ cniVersion: '1.0.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    expect(versionInfo().cniVersion).toBe('1.1.0');
    expect(versionInfo('0.2.0').cniVersion).toBe('1.1.0');
    // The returned list is a copy: callers cannot corrupt the constant.
    versionInfo().supportedVersions.push('9.9.9');
    expect(versionInfo().supportedVersions).toHaveLength(5);
  });
});


describe('typed getters', () => {
  const obj = JSON.parse(
    '{"s":"x","b":true,"n":1450,"f":1.5,"o":{"a":1},"a":[1,2],"nul":null,"__proto__":"p"}',
  ) as Record<string, unknown>;

  it('return the value or undefined when absent or null', () => {
    expect(optString(obj, 's')).toBe('x');
    expect(optBool(obj, 'b')).toBe(true);
    expect(optInt(obj, 'n', 68, 65535)).toBe(1450);
    expect(optObject(obj, 'o')).toEqual({ a: 1 });
    expect(optArray(obj, 'a')).toEqual([1, 2]);
    for (const get of [optString, optBool, optObject, optArray]) {
      expect(get(obj, 'missing')).toBeUndefined();
      expect(get(obj, 'nul')).toBeUndefined();
    }
    expect(optInt(obj, 'nul', 0, 1)).toBeUndefined();
  });

  it('ignore inherited properties and read an own "__proto__" key', () => {
    expect(optString(obj, 'constructor')).toBeUndefined();
    expect(optObject(obj, 'toString')).toBeUndefined();
    expect(optString(obj, '__proto__')).toBe('p');
  });

  it.each([
    ['optString on a number', () => optString(obj, 'n'), /"n".*string.*1450/],
    ['optBool on a string', () => optBool(obj, 's'), /"s".*true or false.*"x"/],
    ['optInt on a float', () => optInt(obj, 'f', 0, 10), /"f".*integer.*1\.5/],
    ['optInt below min', () => optInt(obj, 'n', 1500, 9000), /"n".*1500 to 9000.*1450/],
    ['optInt above max', () => optInt(obj, 'n', 0, 1000), /"n".*0 to 1000.*1450/],
    ['optInt on a string', () => optInt(obj, 's', 0, 1000), /"s"/],
    ['optObject on a list', () => optObject(obj, 'a'), /"a".*object.*\[1,2\]/],
    ['optArray on an object', () => optArray(obj, 'o'), /"o".*list/],
  ])('%s throws code 7 naming the field and value', (_n, fn, msg) => {
    const got = cniErrorOf(fn);
    expect(got.code).toBe(7);
    expect(got.msg).toMatch(msg);
  });

  it('truncates huge bad values in messages', () => {
    const got = cniErrorOf(() => optString({ k: 'x'.repeat(100_000).split('') }, 'k'));
    expect(got.msg.length).toBeLessThan(200);
  });
});

describe('address checks', () => {
  it('isIPv4', () => {
    for (const ok of ['0.0.0.0', '10.244.1.5', '255.255.255.255']) expect(isIPv4(ok)).toBe(true);
    for (const bad of ['256.0.0.1', '10.0.0', '010.0.0.1', '1.2.3.4/24', '::1', '', ' 1.2.3.4']) expect(isIPv4(bad)).toBe(false);
  });

  it('isIPv4Cidr accepts host bits and rejects bad prefixes', () => {
    for (const ok of ['10.244.1.5/24', '0.0.0.0/0', '10.0.0.0/8', '1.2.3.4/32']) expect(isIPv4Cidr(ok)).toBe(true);
    for (const bad of ['10.0.0.0/33', '10.0.0.0', '10.0.0.0/', '10.0.0.0/08', '10.0.0.0/-1', '10.0.0/8', 'fd00::/8', '10.0.0.0/8/8'])
      expect(isIPv4Cidr(bad)).toBe(false);
  });

  it('isIPv6Cidr', () => {
    for (const ok of ['fd00::5/64', '::/0', '2001:db8::1/128']) expect(isIPv6Cidr(ok)).toBe(true);
    for (const bad of ['fd00::/129', 'fe80::1%eth0/64', '10.0.0.0/8', 'fd00::']) expect(isIPv6Cidr(bad)).toBe(false);
  });
});
