// The iptables chains the checks look at, as `iptables -S` prints them.
// Read-only; tsflanneld's own rule management is src/daemon/iptables.ts.
import { netnsCommand, run, type RunResult } from './exec.js';

export interface IptablesSnapshot {
  /** false when iptables could not be run at all */
  ok: boolean;
  error?: string;
  forwardPolicy?: string;
  /** `iptables -S FORWARD` lines */
  forward: string[];
  /** `iptables -S FLANNEL-FWD` lines, null when the chain does not exist */
  flannelFwd: string[] | null;
  /** `iptables -t nat -S FLANNEL-POSTRTG` lines, null when the chain does not exist */
  flannelMasq: string[] | null;
}

/** The chain's `-A` rules, null when the chain could not be listed. */
function appendRules(res: RunResult): string[] | null {
  if (res.code !== 0) return null;
  return res.stdout.split('\n').filter((l) => l.startsWith('-A '));
}

/** `iptables -S` (or `ip6tables -S`) for the chains the checks look at. */
export async function readIptables(netns?: string, tool: 'iptables' | 'ip6tables' = 'iptables'): Promise<IptablesSnapshot> {
  const ipt = (args: string[]) => run(netnsCommand(netns, [tool, '-w', '5', ...args]));
  const [forward, fwd, masq] = await Promise.all([
    ipt(['-S', 'FORWARD']),
    ipt(['-S', 'FLANNEL-FWD']),
    ipt(['-t', 'nat', '-S', 'FLANNEL-POSTRTG']),
  ]);
  if (forward.code !== 0) {
    return { ok: false, error: forward.stderr.trim() || `${tool} exited ${forward.code}`, forward: [], flannelFwd: null, flannelMasq: null };
  }
  const snap: IptablesSnapshot = { ok: true, forward: appendRules(forward) ?? [], flannelFwd: appendRules(fwd), flannelMasq: appendRules(masq) };
  const policy = /^-P FORWARD (\S+)/m.exec(forward.stdout);
  if (policy?.[1]) snap.forwardPolicy = policy[1];
  return snap;
}
