// The IPAM leases of this node's CNI network, joined with the host ends of
// the pods' veths, and how many addresses the node subnet has left.
import { existsSync } from 'node:fs';
import type * as nl from '../netlink/index.js';
import type { SubnetEnv } from '../flannel/subnet-env.js';
import { HostLocalIpam, type LeaseRecord } from '../ipam/index.js';
import { canonicalCidr, compareAddresses, formatIp, parseCidr } from '../net/ip.js';
import { hostVethName } from '../plugin/names.js';

export interface PodAttachment {
  ip: string;
  containerId: string;
  /** absent for legacy id-only lease files */
  ifname?: string;
  /** the host end of the pod's veth as the plugin names it */
  hostVeth?: string;
  vethPresent: boolean;
  /** MTU of the host end; the plugin gives both ends the same MTU */
  vethMtu?: number;
  /** the bridge the host end is a port of */
  vethMaster?: string;
}

export interface IpamState {
  dir: string;
  exists: boolean;
  pods: PodAttachment[];
  /** addresses the node subnet offers in total and still free (needs FLANNEL_SUBNET) */
  total?: number;
  free?: number;
  error?: string;
}

/** The node subnet as the plugin allocates from it: FLANNEL_SUBNET's network, its address the gateway. */
function rangeSetsOf(env: SubnetEnv | undefined) {
  const c = env && parseCidr(env.subnet, 4);
  return c ? [[{ subnet: canonicalCidr(c), gateway: formatIp(c.ip) }]] : undefined;
}

interface LinkIndex {
  byName: Map<string, nl.Link>;
  byIndex: Map<number, nl.Link>;
}

function podOf(rec: LeaseRecord, { byName, byIndex }: LinkIndex): PodAttachment {
  const pod: PodAttachment = { ip: rec.ip, containerId: rec.containerId, vethPresent: false };
  if (rec.ifname === undefined) return pod;
  pod.ifname = rec.ifname;
  pod.hostVeth = hostVethName(rec.containerId, rec.ifname);
  const veth = byName.get(pod.hostVeth);
  if (veth) {
    pod.vethPresent = true;
    pod.vethMtu = veth.mtu;
    const master = byIndex.get(veth.masterIndex);
    if (master) pod.vethMaster = master.name;
  }
  return pod;
}

export async function readIpam(dataDir: string, network: string, env: SubnetEnv | undefined, links: readonly nl.Link[]): Promise<IpamState> {
  const base: IpamState = { dir: `${dataDir.replace(/\/+$/, '')}/${network}`, exists: false, pods: [] };
  if (!existsSync(base.dir)) return base;
  base.exists = true;
  try {
    const rangeSets = rangeSetsOf(env);
    const ipam = new HostLocalIpam({ dataDir, network, rangeSets, lockTimeoutMs: 5000 });
    const index: LinkIndex = { byName: new Map(links.map((l) => [l.name, l])), byIndex: new Map(links.map((l) => [l.index, l])) };
    base.pods = (await ipam.list()).map((rec) => podOf(rec, index));
    base.pods.sort((a, b) => compareAddresses(a.ip, b.ip));
    if (rangeSets) {
      const [stats] = await ipam.stats();
      if (stats) {
        base.total = stats.total;
        base.free = stats.free;
      }
    }
  } catch (err) {
    base.error = (err as Error).message;
  }
  return base;
}
