// Kernel limits a large cluster runs into on every node (docs/scale.md):
// each remote node costs one permanent ARP entry, one FDB entry and one
// route. The FDB and the IPv4 routing table have no count limit; the
// neighbour table does, and before Linux 5.0 permanent entries count
// against gc_thresh3, so a node with more peers than that refuses the rest
// ("neighbour table overflow") and those peers are unreachable.
import { count, pass, problem, skip, type CheckResult, type DoctorInputs, type Facts } from './types.js';

/** Kernels from 5.0 on keep permanent neighbour entries out of the gc_thresh accounting. */
export function permanentEntriesCount(release: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return true; // unknown: assume the stricter rule
  return Number(m[1]) < 5;
}

/** Above this share of gc_thresh3 doctor warns, so the limit is raised before a new node hits it. */
const WARN_SHARE = 0.8;
/** Past this many peers the first full sync is slow: the kernel inserts gateway routes in quadratic time. */
const SLOW_ROUTES = 20_000;

export function checkKernelLimits(inputs: DoctorInputs, facts: Facts): CheckResult {
  const id = 'kernel-limits';
  // Only VXLAN keeps a permanent neighbour per remote node.
  if (facts.backend.type !== 'vxlan') return skip(id, `the ${facts.backend.type} backend keeps no permanent neighbour per node`);
  const { neighGcThresh, kernelRelease } = inputs.state.sysctl;
  if (!neighGcThresh || !kernelRelease) return skip(id, 'neighbour table limits not read');
  const peers = facts.leases ? facts.remoteLeases.length : inputs.state.neighbours.length;
  const [t1, t2, t3] = neighGcThresh;
  const details = [`gc_thresh1/2/3 = ${t1 ?? '?'}/${t2 ?? '?'}/${t3 ?? '?'}, kernel ${kernelRelease}`];
  if (peers >= SLOW_ROUTES) {
    details.push(`${peers} gateway routes on one device: the kernel's route insertion slows down with their number (minutes for the first full sync at 50,000; see docs/scale.md)`);
  }
  if (!permanentEntriesCount(kernelRelease)) {
    return pass(id, `${count(peers, 'peer')}: kernel ${kernelRelease} does not count permanent ARP entries against gc_thresh3`, details);
  }
  if (t3 === null) {
    return problem(id, 'warn', `kernel ${kernelRelease} counts permanent ARP entries against gc_thresh3, which cannot be read here`, 'run doctor in the host netns (the thresholds are global)', details);
  }
  const fix = `sysctl -w net.ipv4.neigh.default.gc_thresh1=${Math.max(t1 ?? 0, peers)} net.ipv4.neigh.default.gc_thresh2=${Math.max(t2 ?? 0, 2 * peers)} net.ipv4.neigh.default.gc_thresh3=${Math.max(t3, 4 * peers)} (persist in /etc/sysctl.d/)`;
  if (peers >= t3) {
    return problem(id, 'fail', `${count(peers, 'peer')} need as many permanent ARP entries, but kernel ${kernelRelease} refuses neighbours beyond gc_thresh3=${t3}: some peers are unreachable`, fix, details);
  }
  if (peers >= WARN_SHARE * t3 || (t2 !== null && peers >= t2)) {
    return problem(id, 'warn', `${count(peers, 'peer')} use ${Math.round((100 * peers) / t3)}% of gc_thresh3=${t3} (kernel ${kernelRelease} counts permanent ARP entries): a few more nodes and neighbours are refused`, fix, details);
  }
  return pass(id, `${count(peers, 'peer')}: ${Math.round((100 * peers) / t3)}% of gc_thresh3=${t3}`, details);
}
