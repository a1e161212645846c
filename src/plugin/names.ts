import { sha256Hex } from '../digest.js';

/**
 * The host end of a pod's veth: `veth` + 8 hex digits, like the reference
 * bridge plugin's names, but derived from the attachment so that a retried
 * ADD, a DEL without a netns and GC all find the same device.
 */
export function hostVethName(containerId: string, ifname: string): string {
  const digest = sha256Hex(`${containerId}\n${ifname}`);
  return `veth${digest.slice(0, 8)}`;
}
