// flannel's "traffic manager" seam (pkg/trafficmngr): the forward-accept and
// masquerade rules for the pod network, behind one interface with an
// iptables and an nftables implementation. `EnableNFTables` in net-conf.json
// picks one; the other one's leftovers are removed at start, as flanneld does.

export type TrafficMode = 'iptables' | 'nftables';

/**
 * What the rules are for: the cluster network, this node's lease and the
 * switches. One family per rule set: the network's (IPv4 rules through
 * iptables / `ip flannel-ipv4`, IPv6 through ip6tables / `ip6 flannel-ipv6`);
 * a dual-stack node runs one manager per family.
 */
export interface TrafficRules {
  /** the cluster network, e.g. 10.244.0.0/16 or fd00:10:244::/56 */
  network: string;
  /** this node's lease of the same family, e.g. 10.244.1.0/24 */
  subnet: string;
  /** masquerade set (flannel's --ip-masq) */
  ipMasq: boolean;
  /** forward accepts for the pod network (flannel's --iptables-forward-rules, default true) */
  forwardRules: boolean;
  /** masquerade with random-fully port mapping (off with --ip-masq-fully-random-disable) */
  randomFully: boolean;
}

export interface TrafficManager {
  readonly mode: TrafficMode;
  /**
   * Puts the rule set in place (creating, repairing or replacing it) and
   * returns the rules it had to (re)install; [] when everything was there.
   */
  ensure(): Promise<string[]>;
  /** The rules missing or different right now, one line each; changes nothing. */
  check(): Promise<string[]>;
  /** Removes every rule of this mode, for whatever network it was written; idempotent. */
  cleanUp(): Promise<void>;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the mode's tool (iptables or nft) with these arguments, optionally feeding stdin. */
export type ToolRunner = (args: string[], input?: string) => Promise<RunResult>;

export class TrafficError extends Error {
  override readonly name = 'TrafficError';
}
