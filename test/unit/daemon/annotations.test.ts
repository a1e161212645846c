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
