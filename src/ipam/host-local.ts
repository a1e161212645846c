// host-local style IPAM over the reference plugin's on-disk store, so that
// this code and /usr/lib/cni/host-local can share one data directory.
import { CniError, ErrorCode } from '../cni/errors.js';
import { describeValue } from '../cni/validate.js';
import { formatIp, type Ip } from '../net/ip.js';
import {
  canonicalizeRangeSets,
  candidates,
  capacity,
  isReserved,
  rangeIndexOf,
  rangeSetToString,
  type IpamRange,
  type RangeSet,
} from './range.js';
import { attachmentLockName, DiskStore, leaseKey, LINE_BREAK, type StoreEntry } from './store.js';

export interface IpamConfig {
  dataDir: string;
  network: string;
  /**
   * Needed to allocate and for stats. Without them the store can still be
   * released, listed and collected: DEL and GC must work when the node's
   * subnet file is gone.
   */
  rangeSets?: IpamRange[][];
  lockTimeoutMs?: number;
}

export interface Allocation {
  /** `ip/prefix`, e.g. 10.244.1.5/24. */
  address: string;
  gateway: string;
  rangeSet: number;
  /** false when the attachment already held this address: an undo must then keep it */
  created: boolean;
}

export interface LeaseRecord {
  ip: string;
  containerId: string;
  /** Absent for legacy files that hold only the container ID. */
  ifname?: string;
}

export interface PoolStats {
  rangeSet: number;
  total: number;
  used: number;
  free: number;
}

/**
 * `attachmentLocked`: the caller runs inside withAttachment() for this
 * (id, ifname). Leases of an attachment are made and removed only by calls
 * holding its lock (ours, agent-served or standalone; the reference plugin
 * serves other containers), so they are looked up without the store lock
 * (from the attachment's record, DiskStore.recordLeases): the store lock,
 * which every call on the node waits for, then covers only what other
 * attachments change. A lease found so is read again under the store lock
 * before it counts (allocate, releaseFound): a GC may have removed it
 * meanwhile. Such an ADD or DEL does not list the store at all in the
 * common case (see allocateIn and releaseFound).
 */
export interface AttachmentLockedOption {
  attachmentLocked?: boolean;
}

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';
export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;

/**
 * How many round-robin candidates in a row an ADD finds taken, one lstat
 * each, before it lists the whole store once and skips the taken ones from
 * that list: a sparse range (the common case: the address after the last
 * one handed out is free) costs one lstat, a dense one a single readdir
 * rather than up to 254 (a /24) or 65,534 (a /16) probes.
 */
const PROBES_BEFORE_LISTING = 8;

/**
 * What an allocation knows of the store under its lock: the attachment's
 * own leases (with their key), and, once the store has been listed, every
 * lease's name; without a listing each candidate is looked up on its own.
 */
interface Known {
  own: readonly StoreEntry[];
  taken?: Set<string>;
}

/** libcni's rule for container IDs and network names. */
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function validateNetworkName(network: unknown): string {
  if (typeof network !== 'string' || !NAME_RE.test(network) || network === '.' || network === '..') {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid network name ${describeValue(network)}`);
  }
  return network;
}

function validateContainerId(id: unknown): string {
  if (typeof id !== 'string' || id === '') throw new CniError(ErrorCode.UnknownContainer, 'missing containerID');
  if (!NAME_RE.test(id) || id.includes('..')) {
    throw new CniError(ErrorCode.InvalidEnvironment, `invalid characters in containerID ${describeValue(id)}`);
  }
  return id;
}

function validateIfname(ifname: unknown): string {
  if (typeof ifname !== 'string' || ifname === '') throw new CniError(ErrorCode.InvalidEnvironment, 'missing interface name');
  if (ifname.length > 15) throw new CniError(ErrorCode.InvalidEnvironment, `interface name is too long: ${describeValue(ifname)}`);
  if (ifname === '.' || ifname === '..' || /[/:%\s\u0085]/u.test(ifname)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `invalid interface name ${describeValue(ifname)}`);
  }
  return ifname;
}

function validateTimeout(ms: unknown): number {
  if (ms === undefined) return DEFAULT_LOCK_TIMEOUT_MS;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid lockTimeoutMs ${String(ms)}`);
  }
  return ms;
}

function toRecord(entry: StoreEntry): LeaseRecord {
  const cut = entry.content.indexOf(LINE_BREAK);
  if (cut < 0) return { ip: entry.name, containerId: entry.content };
  return { ip: entry.name, containerId: entry.content.slice(0, cut), ifname: entry.content.slice(cut + LINE_BREAK.length) };
}

/** Files held by (id, ifname); when there are none, the legacy files holding just the id. */
function matching(entries: StoreEntry[], containerId: string, ifname: string): StoreEntry[] {
  const key = leaseKey(containerId, ifname);
  const exact = entries.filter((e) => e.content === key);
  return exact.length > 0 ? exact : entries.filter((e) => e.content === containerId);
}

/** The first requested address inside `set` (start..end), removed from `pending`. */
function takeRequested(pending: Map<string, Ip>, set: RangeSet): Ip | undefined {
  for (const [text, ip] of pending) {
    if (rangeIndexOf(set, ip) < 0) continue;
    pending.delete(text);
    return ip;
  }
  return undefined;
}

export class HostLocalIpam {
  readonly rangeSets: readonly RangeSet[];
  private readonly store: DiskStore;

  constructor(cfg: IpamConfig) {
    const network = validateNetworkName(cfg?.network);
    this.rangeSets = cfg.rangeSets === undefined ? [] : canonicalizeRangeSets(cfg.rangeSets);
    const dataDir = cfg.dataDir === undefined || cfg.dataDir === '' ? DEFAULT_DATA_DIR : cfg.dataDir;
    if (typeof dataDir !== 'string') throw new CniError(ErrorCode.InvalidNetworkConfig, 'dataDir must be a string');
    this.store = new DiskStore(dataDir, network, validateTimeout(cfg.lockTimeoutMs));
  }

  private requireRanges(): void {
    if (this.rangeSets.length === 0) throw new CniError(ErrorCode.InvalidNetworkConfig, 'no IP ranges specified');
  }

  /** The network's directory, <dataDir>/<network>. */
  get dir(): string {
    return this.store.dir;
  }

  /**
   * One address per range set. A repeated call for the same (id, ifname)
   * returns the addresses it already holds, so a retried ADD never leaks.
   *
   * `requested` are the addresses the runtime asked for (CNI_ARGS IP=,
   * args.cni.ips, runtimeConfig.ips), taken as the reference host-local
   * takes them: each range set uses the first requested address it
   * contains; one that is taken, or a gateway, fails the call, and so does
   * one no range set contains. Never is another address picked instead.
   */
  async allocate(containerId: string, ifname: string, requested: readonly Ip[] = [], opts: AttachmentLockedOption = {}): Promise<Allocation[]> {
    this.requireRanges();
    const id = validateContainerId(containerId);
    const dev = validateIfname(ifname);
    const key = leaseKey(id, dev);
    // Under the attachment's lock, its own leases are read before the
    // store lock (see AttachmentLockedOption); inside it, only those are
    // read again, and no other lease is read or listed in the common case.
    const mine = opts.attachmentLocked ? await this.ownLeases(id, dev) : undefined;
    return this.store.withLock(async () => {
      const known = mine ? { own: await this.confirmed(mine, key) } : HostLocalIpam.listed(await this.store.entries());
      const created: string[] = [];
      // One entry per address, as the reference keys them by text.
      const pending = new Map(requested.map((ip) => [formatIp(ip), ip]));
      try {
        const out: Allocation[] = [];
        for (const [idx, set] of this.rangeSets.entries()) {
          const wanted = takeRequested(pending, set);
          try {
            out.push(await this.allocateIn(idx, set, known, key, created, wanted));
          } catch (err) {
            if (!(err instanceof CniError) || wanted === undefined) throw err;
            throw new CniError(err.code, `failed to allocate for range ${idx}: ${err.message}`, err.details);
          }
        }
        if (pending.size > 0) {
          throw new CniError(
            ErrorCode.Internal,
            `failed to allocate all requested IPs: ${[...pending.keys()].join(' ')}`,
            `no range set holds them; the ranges are ${this.rangeSets.map(rangeSetToString).join('; ')}`,
          );
        }
        return out;
      } catch (err) {
        // Undo this call's reservations; leases it merely found stay put.
        for (const name of created) await this.store.remove(name).catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * Under the attachment's lock: its leases, from its record when it has
   * one (DiskStore.recordLeases), else from every lease on the node, which
   * then becomes the record.
   */
  private async ownLeases(id: string, dev: string): Promise<StoreEntry[]> {
    const { entries, recorded } = await this.attachmentEntries('none');
    // The record names what a DEL must remove, legacy id-only leases too.
    if (!recorded) this.store.recordLeases(matching(entries, id, dev).map((e) => e.name), true);
    const key = leaseKey(id, dev);
    return entries.filter((e) => e.content === key);
  }

  /**
   * Under the attachment's lock, without the store lock: the leases its
   * record names (`recorded`), or, with no record, every lease on the node.
   * `fresh`: see DiskStore.recordedLeases.
   */
  private async attachmentEntries(fresh: 'none' | 'unknown'): Promise<{ entries: StoreEntry[]; recorded: boolean }> {
    const names = this.store.recordedLeases(fresh);
    if (names !== undefined) return { entries: this.store.entriesNamed(names), recorded: true };
    return { entries: await this.store.entries({ locked: false }), recorded: false };
  }

  /**
   * Under the store lock: the attachment's own leases, read before the
   * lock, read once more each and kept only if still its own (a GC may
   * have removed one meanwhile, or the reference given its address away).
   * No other lease is read or listed here.
   */
  private async confirmed(mine: readonly StoreEntry[], key: string): Promise<StoreEntry[]> {
    const out: StoreEntry[] = [];
    for (const m of mine) if ((await this.store.leaseContent(m.name)) === key) out.push({ ...m, content: key });
    return out;
  }

  /** What a full read of the store under the lock tells an allocation. */
  private static listed(entries: readonly StoreEntry[]): Known {
    return { own: entries, taken: new Set(entries.map((e) => e.name)) };
  }

  /**
   * One address of range set `idx`: the attachment's own, the requested
   * one, or the next free one in the reference's round-robin order
   * (`candidates` from last_reserved_ip). link(2) in reserve() is the
   * authority on what is taken; `known.taken`, or an lstat per candidate
   * until the store is listed (PROBES_BEFORE_LISTING), only spares writing
   * a temp file for an address that is visibly taken.
   */
  private async allocateIn(
    idx: number,
    set: RangeSet,
    known: Known,
    key: string,
    created: string[],
    wanted?: Ip,
  ): Promise<Allocation> {
    const held = known.own.find((e) => e.content === key && rangeIndexOf(set, e.ip) >= 0);
    if (held && (wanted === undefined || held.ip.value === wanted.value)) return this.allocation(idx, set, held.ip, false);
    if (held) {
      throw new CniError(
        ErrorCode.Internal,
        `requested IP address ${formatIp(wanted!)} conflicts with ${held.name}, which this container already holds in range set ${rangeSetToString(set)}`,
        'delete the pod (CNI DEL) before asking for another address',
      );
    }
    if (wanted) return this.reserveRequested(idx, set, key, created, wanted);

    let seenTaken = 0;
    // After PROBES_BEFORE_LISTING taken candidates the range is dense: list it once.
    const sawTaken = async (): Promise<void> => {
      if (!known.taken && ++seenTaken >= PROBES_BEFORE_LISTING) known.taken = HostLocalIpam.listed(await this.store.entries({ contents: false })).taken;
    };
    const skip = async (name: string): Promise<boolean> => {
      if (known.taken) return known.taken.has(name);
      if (!this.store.exists(name)) return false;
      await sawTaken();
      return true;
    };
    for (const { value } of candidates(set, await this.store.lastReserved(idx))) {
      const ip: Ip = { family: set[0]!.family, value };
      const name = formatIp(ip);
      if (await skip(name)) continue;
      this.store.recordLeases([name]);
      // link(2) is the authority: a name made since the check (or by a writer that ignores the lock) still cannot double-book.
      if (!(await this.store.reserve(ip, key))) {
        await sawTaken();
        continue;
      }
      created.push(name);
      await this.store.setLastReserved(idx, ip);
      return this.allocation(idx, set, ip, true);
    }
    throw new CniError(ErrorCode.TryAgainLater, `no IP addresses available in range set: ${rangeSetToString(set)}`);
  }

  /** The reference's checks and words for a requested address; it also becomes the set's last reserved one. */
  private async reserveRequested(idx: number, set: RangeSet, key: string, created: string[], ip: Ip): Promise<Allocation> {
    const text = formatIp(ip);
    const r = set[rangeIndexOf(set, ip)]!;
    if (set.some((other) => other.gateway === ip.value)) throw new CniError(ErrorCode.Internal, `requested ip ${text} is subnet's gateway`);
    const unavailable = () => new CniError(ErrorCode.Internal, `requested IP address ${text} is not available in range set ${rangeSetToString(set)}`);
    // The network address and the IPv4 broadcast are never a pod's, even inside rangeStart..rangeEnd.
    if (isReserved(set, r, ip.value)) throw unavailable();
    this.store.recordLeases([text]);
    if (!(await this.store.reserve(ip, key))) throw unavailable();
    created.push(text);
    await this.store.setLastReserved(idx, ip);
    return this.allocation(idx, set, ip, true);
  }

  private allocation(idx: number, set: RangeSet, ip: Ip, created: boolean): Allocation {
    const r = set[rangeIndexOf(set, ip)]!;
    return {
      address: `${formatIp(ip)}/${r.prefix}`,
      gateway: formatIp({ family: r.family, value: r.gateway }),
      rangeSet: idx,
      created,
    };
  }

  /**
   * What (id, ifname) already holds, one allocation per range set, without
   * reserving anything; undefined unless every range set has its address.
   */
  async held(containerId: string, ifname: string): Promise<Allocation[] | undefined> {
    this.requireRanges();
    const key = leaseKey(validateContainerId(containerId), validateIfname(ifname));
    return this.store.withLock(async () => {
      const entries = await this.store.entries();
      const out: Allocation[] = [];
      for (const [idx, set] of this.rangeSets.entries()) {
        const e = entries.find((x) => x.content === key && rangeIndexOf(set, x.ip) >= 0);
        if (!e) return undefined;
        out.push(this.allocation(idx, set, e.ip, false));
      }
      return out;
    });
  }

  /**
   * Runs `fn` as the only call for this attachment on the node (see
   * DiskStore.withAttachmentLock); `forget` drops the lock file afterwards.
   */
  async withAttachment<T>(containerId: string, ifname: string, fn: () => Promise<T>, forget = false): Promise<T> {
    const id = validateContainerId(containerId);
    const dev = validateIfname(ifname);
    return this.store.withAttachmentLock(id, dev, forget, fn);
  }

  /**
   * Removes what (id, ifname) holds (or, failing that, legacy id-only
   * leases); nothing to remove is success. `only` limits it to those
   * addresses: an ADD undoing its own reservations keeps the ones it found.
   */
  async release(containerId: string, ifname: string, only?: readonly string[]): Promise<string[]> {
    const id = validateContainerId(containerId);
    const dev = validateIfname(ifname);
    return this.store.withLock(async () => {
      const held = matching(await this.store.entries(), id, dev);
      const victims = only === undefined ? held : held.filter((e) => only.includes(e.name));
      for (const e of victims) await this.store.remove(e.name);
      return victims.map((e) => e.name);
    });
  }

  /**
   * Removes the leases `ips` (names as find() gave them) that (id, ifname)
   * still holds, reading only those files: DEL looks its leases up with
   * find() before it deletes the veth, so it need not read every lease of
   * the node a second time. A lease that is gone, or now held by another
   * container, is left alone.
   */
  async releaseFound(containerId: string, ifname: string, ips: readonly string[]): Promise<string[]> {
    const id = validateContainerId(containerId);
    const key = leaseKey(id, validateIfname(ifname));
    // Taken even with nothing to release: a broken store (its lock path a
    // directory, say) is reported by DEL too, with the fix; and a temp file
    // a killed ADD of this attachment left is removed: under the
    // attachment's lock it has the attachment's name (one unlink, no
    // listing of the store); else every stale temp file is swept (names only).
    return this.store.withLock(async () => {
      if (!this.store.sweepOwnTemp()) await this.store.sweepTemps();
      const removed: string[] = [];
      for (const ip of ips) {
        const content = await this.store.leaseContent(ip);
        if (content !== key && content !== id) continue;
        await this.store.remove(ip);
        removed.push(ip);
      }
      return removed;
    });
  }

  async find(containerId: string, ifname: string, opts: AttachmentLockedOption = {}): Promise<LeaseRecord[]> {
    const id = validateContainerId(containerId);
    const dev = validateIfname(ifname);
    // Its own leases cannot change under the attachment's lock: no store lock
    // needed to read them, and its record (when it has one) names them all.
    if (opts.attachmentLocked) return matching((await this.attachmentEntries('unknown')).entries, id, dev).map(toRecord);
    return this.store.withLock(async () => matching(await this.store.entries(), id, dev).map(toRecord));
  }

  async list(): Promise<LeaseRecord[]> {
    return this.store.withLock(async () => (await this.store.entries()).map(toRecord));
  }

  /**
   * Removes every lease not held by one of `valid`; legacy id-only leases
   * survive when their id appears. An empty list means nothing is valid.
   */
  async gc(valid: { containerId: string; ifname: string }[]): Promise<LeaseRecord[]> {
    const keys = new Set(valid.map((v) => leaseKey(v.containerId, v.ifname)));
    const ids = new Set(valid.map((v) => v.containerId.trim()));
    return this.store.withLock(async () => {
      const removed: LeaseRecord[] = [];
      for (const entry of await this.store.entries()) {
        const rec = toRecord(entry);
        const keep = rec.ifname === undefined ? ids.has(rec.containerId) : keys.has(entry.content);
        if (keep) continue;
        await this.store.remove(entry.name);
        removed.push(rec);
      }
      await this.store.forgetAttachmentLocks(new Set(valid.map((v) => attachmentLockName(v.containerId, v.ifname))));
      return removed;
    });
  }

  /** Capacity and use per range set; IPv6 totals beyond 2^53 are approximate. */
  async stats(): Promise<PoolStats[]> {
    this.requireRanges();
    return this.store.withLock(async () => {
      const entries = await this.store.entries();
      return this.rangeSets.map((set, rangeSet) => {
        const total = capacity(set);
        const used = BigInt(entries.filter((e) => rangeIndexOf(set, e.ip) >= 0).length);
        const free = total > used ? total - used : 0n;
        return { rangeSet, total: Number(total), used: Number(used), free: Number(free) };
      });
    });
  }
}
