import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  annotationChanges,
  annotationKeys,
  annotationsFor,
  AnnotationPrefixError,
  cidrContains,
  DEFAULT_ANNOTATION_PREFIX,
  formatBackendData,
  leaseFromNode,
  nodeIPv4PodCIDR,
  type NodeLike,
} from '../../../src/daemon/subnet/annotations.js';
import type { LeaseAttrs } from '../../../src/daemon/types.js';

const P = 'flannel.alpha.coreos.com';

function node(annotations: Record<string, string>, podCIDR?: string, extra: Partial<NodeLike['spec']> = {}): NodeLike {
  const spec: NonNullable<NodeLike['spec']> = { ...extra };
  if (podCIDR !== undefined) spec.podCIDR = podCIDR;
  return { metadata: { name: 'n1', annotations }, spec };
}

const vxlanAnnotations = {
  [`${P}/backend-data`]: '{"VNI":1,"VtepMAC":"e6:7c:02:8e:e8:7e"}',
  [`${P}/backend-type`]: 'vxlan',
  [`${P}/kube-subnet-manager`]: 'true',
  [`${P}/public-ip`]: '192.168.1.10',
};

describe('annotation names', () => {
  it('uses flannel\'s exact keys under the default prefix', () => {
    const keys = annotationKeys();
    expect(DEFAULT_ANNOTATION_PREFIX).toBe(P);
    expect(keys.backendType).toBe(`${P}/backend-type`);
    expect(keys.backendData).toBe(`${P}/backend-data`);
    expect(keys.kubeSubnetManager).toBe(`${P}/kube-subnet-manager`);
    expect(keys.publicIP).toBe(`${P}/public-ip`);
    expect(keys.publicIPOverwrite).toBe(`${P}/public-ip-overwrite`);
    expect(keys.nodePublicIP).toBe(`${P}/node-public-ip`);
    expect(keys.backendV6Data).toBe(`${P}/backend-v6-data`);
  });

  it('accepts a custom prefix with or without the trailing slash and refuses garbage', () => {
    expect(annotationKeys('example.com/').publicIP).toBe('example.com/public-ip');
    expect(annotationKeys('example.com').publicIP).toBe('example.com/public-ip');
    expect(() => annotationKeys('Bad_Prefix')).toThrow(AnnotationPrefixError);
    expect(() => annotationKeys('')).toThrow(AnnotationPrefixError);
  });
});

describe('annotationsFor', () => {
  it('writes exactly the four annotations flannel writes, backend-data in flannel\'s byte form', () => {
    const attrs: LeaseAttrs = { publicIP: '192.168.1.10', backendType: 'vxlan', backendData: { VtepMAC: 'E6:7C:02:8E:E8:7E', VNI: 1 } };
    expect(annotationsFor(attrs)).toEqual(vxlanAnnotations);
  });

  it('writes null backend-data for host-gw, as flannel does', () => {
    const ann = annotationsFor({ publicIP: '10.0.0.1', backendType: 'host-gw', backendData: {} }, 'x.io');
    expect(ann['x.io/backend-data']).toBe('null');
    expect(ann['x.io/backend-type']).toBe('host-gw');
  });
});

describe('leaseFromNode', () => {
  it('builds the lease a flannel node advertises', () => {
    expect(leaseFromNode(node(vxlanAnnotations, '10.244.1.0/24'))).toEqual({
      lease: {
        subnet: '10.244.1.0/24',
        publicIP: '192.168.1.10',
        backendType: 'vxlan',
        backendData: { VNI: 1, VtepMAC: 'e6:7c:02:8e:e8:7e' },
        nodeName: 'n1',
      },
    });
  });

  it('prefers the IPv4 entry of spec.podCIDRs and normalises host bits away', () => {
    const n = node(vxlanAnnotations, 'fd00::/64', { podCIDRs: ['fd00::/64', '10.244.3.7/24'] });
    expect(leaseFromNode(n).lease?.subnet).toBe('10.244.3.0/24');
    expect(nodeIPv4PodCIDR(node({}, undefined, { podCIDRs: ['fd00::/64'] }))).toEqual({ reason: 'the node has no IPv4 pod CIDR' });
    expect('reason' in nodeIPv4PodCIDR(node({}, undefined, { podCIDRs: ['10.0.0.0/24', '10.0.1.0/24', 'fd00::/64'] }))).toBe(true);
  });

  const broken: Array<[string, NodeLike, RegExp]> = [
    ['no podCIDR', node(vxlanAnnotations), /podCIDR is not assigned/],
    ['bad podCIDR', node(vxlanAnnotations, '10.244.1.0'), /not a CIDR/],
    ['not managed', node({ ...vxlanAnnotations, [`${P}/kube-subnet-manager`]: 'false' }, '10.244.1.0/24'), /kube-subnet-manager/],
    ['no annotations', { metadata: { name: 'x' }, spec: { podCIDR: '10.244.1.0/24' } }, /kube-subnet-manager/],
    ['no backend-type', node(without(vxlanAnnotations, 'backend-type'), '10.244.1.0/24'), /backend-type is missing/],
    ['unknown backend', node({ ...vxlanAnnotations, [`${P}/backend-type`]: 'ipsec' }, '10.244.1.0/24'), /not supported/],
    ['no backend-data', node(without(vxlanAnnotations, 'backend-data'), '10.244.1.0/24'), /backend-data is missing/],
    ['backend-data not JSON', node({ ...vxlanAnnotations, [`${P}/backend-data`]: '{VNI:1' }, '10.244.1.0/24'), /not JSON/],
    ['backend-data array', node({ ...vxlanAnnotations, [`${P}/backend-data`]: '[1]' }, '10.244.1.0/24'), /not a JSON object/],
    ['bad MAC', node({ ...vxlanAnnotations, [`${P}/backend-data`]: '{"VNI":1,"VtepMAC":"zz"}' }, '10.244.1.0/24'), /VtepMAC/],
    ['bad VNI', node({ ...vxlanAnnotations, [`${P}/backend-data`]: '{"VNI":"1","VtepMAC":"e6:7c:02:8e:e8:7e"}' }, '10.244.1.0/24'), /VNI/],
    ['vxlan without MAC', node({ ...vxlanAnnotations, [`${P}/backend-data`]: '{"VNI":1}' }, '10.244.1.0/24'), /no VtepMAC/],
    ['no public-ip', node(without(vxlanAnnotations, 'public-ip'), '10.244.1.0/24'), /public-ip is missing/],
    ['bad public-ip', node({ ...vxlanAnnotations, [`${P}/public-ip`]: '300.1.1.1' }, '10.244.1.0/24'), /not an IPv4/],
    ['v6 public-ip', node({ ...vxlanAnnotations, [`${P}/public-ip`]: 'fd00::1' }, '10.244.1.0/24'), /not an IPv4/],
  ];
  it.each(broken)('refuses a node with %s and says why', (_label, n, why) => {
    const result = leaseFromNode(n);
    expect(result.lease).toBeNull();
    expect(result.reason).toMatch(why);
  });

  it('reads annotations under a custom prefix only', () => {
    const custom = Object.fromEntries(Object.entries(vxlanAnnotations).map(([k, v]) => [k.replace(P, 'example.org'), v]));
    expect(leaseFromNode(node(custom, '10.244.1.0/24'), 'example.org').lease?.publicIP).toBe('192.168.1.10');
    expect(leaseFromNode(node(custom, '10.244.1.0/24')).lease).toBeNull();
  });

  it('round-trips any attributes through annotations (property)', () => {
    const octet = fc.integer({ min: 0, max: 255 });
    const ip = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
    const mac = fc.array(octet, { minLength: 6, maxLength: 6 }).map((b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'));
    const attrs: fc.Arbitrary<LeaseAttrs> = fc.oneof(
      fc.record({ publicIP: ip, backendType: fc.constant('vxlan' as const), backendData: fc.record({ VNI: fc.integer({ min: 0, max: 0xffffff }), VtepMAC: mac }) }),
      fc.record({ publicIP: ip, backendType: fc.constant('host-gw' as const), backendData: fc.constant({}) }),
    );
    const subnet = fc.tuple(octet, octet, fc.integer({ min: 16, max: 24 })).map(([a, b, len]) => {
      const value = ((10 << 24) | (a << 16) | (b << 8)) >>> 0;
      const masked = (value & ~((1 << (32 - len)) - 1)) >>> 0;
      return `${[24, 16, 8, 0].map((s) => (masked >>> s) & 255).join('.')}/${len}`;
    });
    fc.assert(
      fc.property(attrs, subnet, (a, s) => {
        const { lease } = leaseFromNode(node(annotationsFor(a), s));
        expect(lease).toEqual({ ...a, subnet: s, nodeName: 'n1' });
      }),
    );
  });
});

describe('helpers', () => {
  it('annotationChanges returns only differing keys', () => {
    const desired = annotationsFor({ publicIP: '192.168.1.10', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'e6:7c:02:8e:e8:7e' } });
    expect(annotationChanges(vxlanAnnotations, desired)).toEqual({});
    expect(annotationChanges({ ...vxlanAnnotations, [`${P}/public-ip`]: '1.2.3.4', other: 'x' }, desired)).toEqual({ [`${P}/public-ip`]: '192.168.1.10' });
    expect(annotationChanges(undefined, desired)).toEqual(desired);
  });

  it('cidrContains checks IPv4 containment', () => {
    expect(cidrContains('10.244.0.0/16', '10.244.5.0/24')).toBe(true);
    expect(cidrContains('10.244.0.0/16', '10.245.0.0/24')).toBe(false);
    expect(cidrContains('10.244.0.0/16', '10.0.0.0/8')).toBe(false);
    expect(cidrContains('0.0.0.0/0', '1.2.3.0/24')).toBe(true);
  });

  it('formatBackendData omits absent fields', () => {
    expect(formatBackendData({ VNI: 4096 })).toBe('{"VNI":4096}');
    expect(formatBackendData({})).toBe('null');
  });
});

function without(ann: Record<string, string>, suffix: string): Record<string, string> {
  const copy = { ...ann };
  delete copy[`${P}/${suffix}`];
  return copy;
}

describe('IPv6 leases from Nodes (families from net-conf.json, as flannel\'s nodeToLease)', () => {
  const dual = { ipv4: true, ipv6: true };
  const v6only = { ipv4: false, ipv6: true };
  const v6Annotations = {
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/backend-v6-data`]: '{"VNI":1,"VtepMAC":"e6:7c:02:8e:e8:7f"}',
    [`${P}/kube-subnet-manager`]: 'true',
    [`${P}/public-ipv6`]: 'fd50::10',
  };
  const dualNode = (ann: Record<string, string>) => node(ann, undefined, { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });

  it('uses flannel\'s IPv6 annotation names', () => {
    const keys = annotationKeys();
    expect([keys.backendV6Data, keys.publicIPv6, keys.publicIPv6Overwrite, keys.nodePublicIPv6]).toEqual(
      ['backend-v6-data', 'public-ipv6', 'public-ipv6-overwrite', 'node-public-ipv6'].map((k) => `${P}/${k}`),
    );
  });

  it('reads a dual-stack lease: both pod CIDRs, both addresses, both backend data', () => {
    expect(leaseFromNode(dualNode({ ...vxlanAnnotations, ...v6Annotations }), P, dual).lease).toEqual({
      nodeName: 'n1',
      subnet: '10.244.1.0/24',
      ipv6Subnet: 'fd00:10:244:1::/64',
      publicIP: '192.168.1.10',
      publicIPv6: 'fd50::10',
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: 'e6:7c:02:8e:e8:7e' },
      backendV6Data: { VNI: 1, VtepMAC: 'e6:7c:02:8e:e8:7f' },
    });
  });

  it('reads an IPv6-only lease with the IPv4 fields empty', () => {
    const n = node(v6Annotations, 'fd00:10:244:1::/64');
    expect(leaseFromNode(n, P, v6only).lease).toMatchObject({ subnet: '', publicIP: '', backendData: {}, ipv6Subnet: 'fd00:10:244:1::/64', publicIPv6: 'fd50::10' });
    // the same node read by an IPv4-only config advertises nothing usable
    expect(leaseFromNode(n, P).reason).toBe('the node has no IPv4 pod CIDR');
  });

  it.each([
    ['no IPv6 pod CIDR', node({ ...vxlanAnnotations, ...v6Annotations }, '10.244.1.0/24'), /the node has no IPv6 pod CIDR/],
    ['no backend-v6-data', dualNode(without({ ...vxlanAnnotations, ...v6Annotations }, 'backend-v6-data')), /backend-v6-data is missing/],
    ['backend-v6-data without VtepMAC', dualNode({ ...vxlanAnnotations, ...v6Annotations, [`${P}/backend-v6-data`]: '{"VNI":1}' }), /vxlan backend-v6-data has no VtepMAC/],
    ['backend-v6-data not JSON', dualNode({ ...vxlanAnnotations, ...v6Annotations, [`${P}/backend-v6-data`]: '{' }), /backend-v6-data is not JSON/],
    ['no public-ipv6', dualNode(without({ ...vxlanAnnotations, ...v6Annotations }, 'public-ipv6')), /public-ipv6 is missing/],
    ['IPv4 in public-ipv6', dualNode({ ...vxlanAnnotations, ...v6Annotations, [`${P}/public-ipv6`]: '192.168.1.10' }), /public-ipv6 "192.168.1.10" is not an IPv6 address/],
  ])('refuses a dual-stack node with %s', (_name, n, reason) => {
    const result = leaseFromNode(n, P, dual);
    expect(result.lease).toBeNull();
    expect(result.reason).toMatch(reason);
  });

  it('annotationsFor writes the IPv6 pair only for a node with an IPv6 address, and no IPv4 pair for an IPv6-only node', () => {
    const v4: LeaseAttrs = { publicIP: '192.168.1.10', backendType: 'host-gw', backendData: {} };
    expect(Object.keys(annotationsFor(v4))).toEqual(['backend-data', 'backend-type', 'kube-subnet-manager', 'public-ip'].map((k) => `${P}/${k}`));
    const six: LeaseAttrs = { publicIP: '', publicIPv6: 'fd50::10', backendType: 'host-gw', backendData: {} };
    expect(annotationsFor(six)).toEqual({
      [`${P}/backend-type`]: 'host-gw',
      [`${P}/backend-v6-data`]: 'null',
      [`${P}/kube-subnet-manager`]: 'true',
      [`${P}/public-ipv6`]: 'fd50::10',
    });
    // host-gw publishes null data, which reads back as none
    expect(leaseFromNode(node(annotationsFor(six), 'fd00:10:244:1::/64'), P, v6only).lease).toMatchObject({ backendType: 'host-gw', backendV6Data: {} });
  });

  it('cidrContains checks IPv6 containment when asked, never across families', () => {
    expect(cidrContains('fd00:10:244::/56', 'fd00:10:244:7::/64', 6)).toBe(true);
    expect(cidrContains('fd00:10:244::/56', 'fd00:10:245::/64', 6)).toBe(false);
    expect(cidrContains('fd00:10:244::/56', 'fd00:10:244:7::/64')).toBe(false);
    expect(cidrContains('10.0.0.0/8', '10.1.0.0/16', 6)).toBe(false);
  });
});
