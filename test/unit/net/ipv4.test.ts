import { describe, expect, it } from 'vitest';
import { gatewayCidr } from '../../../src/net/ipv4.js';

describe('gatewayCidr', () => {
  it('gives the first address of a node subnet with its prefix, as FLANNEL_SUBNET holds it', () => {
    expect(gatewayCidr('10.244.1.0/24')).toBe('10.244.1.1/24');
    expect(gatewayCidr('10.244.128.0/17')).toBe('10.244.128.1/17');
    // host bits as written are dropped first; carrying past an octet works
    expect(gatewayCidr('10.244.1.77/24')).toBe('10.244.1.1/24');
    expect(gatewayCidr('10.0.255.255/16')).toBe('10.0.0.1/16');
  });

  it('is undefined for what is not an IPv4 CIDR', () => {
    expect(gatewayCidr('10.244.1.0')).toBeUndefined();
    expect(gatewayCidr('fd00::/64')).toBeUndefined();
    expect(gatewayCidr('10.244.1.0/33')).toBeUndefined();
  });
});
