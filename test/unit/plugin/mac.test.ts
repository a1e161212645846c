// The requested pod MAC as the reference bridge plugin reads it: the forms
// Go's net.ParseMAC takes for six bytes, one winner among runtimeConfig.mac,
// args.cni.mac and CNI_ARGS MAC= (in that order, empty meaning unset), and
// the addresses a veth cannot carry refused with the source named.
import { describe, expect, it } from 'vitest';
import { nonUnicastReason, parseMac } from '../../../src/net/mac.js';
import { requestedMac } from '../../../src/plugin/mac.js';
import { cniErrorOf } from '../../helpers/cni-error.js';

const none = { cniArgs: {}, conf: {}, runtimeConfig: {} };

describe('parseMac: Go net.ParseMAC forms of six bytes, written as the kernel writes them', () => {
  it('reads colon, dash and dotted forms in any case into lowercase colon text', () => {
    expect(parseMac('0a:58:0A:F4:01:07')).toBe('0a:58:0a:f4:01:07');
    expect(parseMac('0A-58-0a-f4-01-07')).toBe('0a:58:0a:f4:01:07');
    expect(parseMac('0a58.0af4.0107')).toBe('0a:58:0a:f4:01:07');
  });

  it('refuses anything else: wrong length (EUI-64, InfiniBand), mixed separators, one-digit groups, junk', () => {
    for (const bad of ['', '0a:58:0a:f4:01', '0a:58:0a:f4:01:07:00:01', '0a:58-0a:f4:01:07', 'a:58:0a:f4:01:07', '0a:58:0a:f4:01:0g', ' 0a:58:0a:f4:01:07', '0a580af40107', '0a:58:0a:f4:01:07\n']) {
      expect(parseMac(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });

  it('names why the kernel would refuse a device address: the group bit (multicast, broadcast) or all zeros', () => {
    expect(nonUnicastReason('01:00:5e:00:00:01')).toBe('a multicast address');
    expect(nonUnicastReason('ff:ff:ff:ff:ff:ff')).toBe('a multicast address');
    expect(nonUnicastReason('33:33:00:00:00:01')).toBe('a multicast address');
    expect(nonUnicastReason('00:00:00:00:00:00')).toBe('the all-zero address');
    expect(nonUnicastReason('0a:58:0a:f4:01:07')).toBeUndefined();
    expect(nonUnicastReason('02:00:00:00:00:00')).toBeUndefined();
  });
});

describe('requestedMac: one winner, in the reference bridge\'s order', () => {
  it('asks for nothing when no source names a MAC, or every one is empty', () => {
    expect(requestedMac(none)).toBeUndefined();
    expect(requestedMac({ cniArgs: { MAC: '' }, conf: { args: { cni: { mac: '' } } }, runtimeConfig: { mac: '' } })).toBeUndefined();
    expect(requestedMac({ ...none, conf: { args: { cni: { mac: null } } }, runtimeConfig: { mac: null } })).toBeUndefined();
  });

  it('takes runtimeConfig.mac over args.cni.mac over CNI_ARGS MAC=', () => {
    const all = { cniArgs: { MAC: '0a:00:00:00:00:03' }, conf: { args: { cni: { mac: '0a:00:00:00:00:02' } } }, runtimeConfig: { mac: '0a:00:00:00:00:01' } };
    expect(requestedMac(all)).toBe('0a:00:00:00:00:01');
    expect(requestedMac({ ...all, runtimeConfig: {} })).toBe('0a:00:00:00:00:02');
    expect(requestedMac({ ...all, runtimeConfig: { mac: '' } })).toBe('0a:00:00:00:00:02');
    expect(requestedMac({ ...all, runtimeConfig: {}, conf: {} })).toBe('0a:00:00:00:00:03');
    expect(requestedMac({ ...all, runtimeConfig: {}, conf: { args: { cni: {} } } })).toBe('0a:00:00:00:00:03');
  });

  it('parses only the winner, as the reference does: a bad CNI_ARGS MAC under a good runtimeConfig.mac is not read', () => {
    expect(requestedMac({ ...none, cniArgs: { MAC: 'junk' }, runtimeConfig: { mac: '0A:00:00:00:00:01' } })).toBe('0a:00:00:00:00:01');
  });

  it('refuses a malformed winner naming its source and value: code 7 from the config, 4 from CNI_ARGS', () => {
    const rc = cniErrorOf(() => requestedMac({ ...none, runtimeConfig: { mac: 'c2:11:22:33:44' } }));
    expect([rc.code, rc.msg]).toEqual([7, 'runtimeConfig.mac: invalid MAC address "c2:11:22:33:44"']);
    const args = cniErrorOf(() => requestedMac({ ...none, conf: { args: { cni: { mac: 'zz:11:22:33:44:55' } } } }));
    expect([args.code, args.msg]).toEqual([7, 'args.cni.mac: invalid MAC address "zz:11:22:33:44:55"']);
    const env = cniErrorOf(() => requestedMac({ ...none, cniArgs: { MAC: '0a:58' } }));
    expect([env.code, env.msg]).toEqual([4, 'CNI_ARGS MAC: invalid MAC address "0a:58"']);
  });

  it('refuses a multicast, broadcast or zero winner: a pod interface needs a unicast MAC', () => {
    const multi = cniErrorOf(() => requestedMac({ ...none, runtimeConfig: { mac: '01:00:5E:00:00:01' } }));
    expect([multi.code, multi.msg]).toEqual([7, 'runtimeConfig.mac: 01:00:5e:00:00:01 is a multicast address; a pod interface needs a unicast MAC']);
    const bcast = cniErrorOf(() => requestedMac({ ...none, cniArgs: { MAC: 'ff:ff:ff:ff:ff:ff' } }));
    expect([bcast.code, bcast.msg]).toEqual([4, 'CNI_ARGS MAC: ff:ff:ff:ff:ff:ff is a multicast address; a pod interface needs a unicast MAC']);
    const zero = cniErrorOf(() => requestedMac({ ...none, conf: { args: { cni: { mac: '0000.0000.0000' } } } }));
    expect([zero.code, zero.msg]).toEqual([7, 'args.cni.mac: 00:00:00:00:00:00 is the all-zero address; a pod interface needs a unicast MAC']);
  });

  it('refuses a config mac that is not a string wherever it sits, as the reference\'s JSON decoding does', () => {
    const rc = cniErrorOf(() => requestedMac({ ...none, runtimeConfig: { mac: 42 } }));
    expect([rc.code, rc.msg]).toEqual([7, 'runtimeConfig.mac must be a string, got 42']);
    const args = cniErrorOf(() => requestedMac({ ...none, conf: { args: { cni: { mac: ['0a:00:00:00:00:01'] } } }, runtimeConfig: { mac: '0a:00:00:00:00:02' } }));
    expect([args.code, args.msg]).toEqual([7, 'args.cni.mac must be a string, got ["0a:00:00:00:00:01"]']);
  });

  it('reads an inherited "mac" as absent: only own keys of the decoded config count', () => {
    const runtimeConfig = Object.create({ mac: '0a:00:00:00:00:01' }) as Record<string, unknown>;
    expect(requestedMac({ ...none, runtimeConfig })).toBeUndefined();
  });
});
