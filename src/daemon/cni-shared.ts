// What the agent's CNI threads share, in SharedArrayBuffers, so that the
// event loop takes no part in a call: the call each worker serves (who
// answers it is decided here), the attachments they hold (one call per
// attachment at a time, across workers), and the counters and call
// durations the event loop reads for metrics and the stats file
// (cni-server.ts).
import type { CniServerMetrics } from './cni-server.js';

/** The commands counted per outcome; anything else counts as 'invalid'. */
export const COUNTED_COMMANDS = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS', 'VERSION', 'invalid'] as const;
export type CountedCommand = (typeof COUNTED_COMMANDS)[number];

export function countedCommand(command: string): CountedCommand {
  return (COUNTED_COMMANDS as readonly string[]).includes(command) ? (command as CountedCommand) : 'invalid';
}

/** Durations kept per worker until the event loop reads them (at most every second). */
const RING = 1024;
const EMPTY = -1;
/** The deadline of a call whose frame is being read: none (the worker bounds the read). */
const NO_DEADLINE = 2n ** 62n;

// Int32 header words.
const LOCK = 0;
const STOPPING = 1;
// The pool's (cni-pool.ts): threads running now, spare threads started.
// Before REFUSED: `changes` sums from there, and these are no calls.
const THREADS = 2;
const SPARES = 3;
const REFUSED = 4;
const BAD_FRAMES = 5;
const TIMEOUTS = 6;
const CALLS = 7; // COUNTED_COMMANDS.length × (ok, error)
const HEADER = CALLS + COUNTED_COMMANDS.length * 2;
// Per worker: the call it serves (a token, see accepted()), the attachment
// it holds, its duration ring's head and tail, whether it holds a connection
// (the calls in flight are the workers that do: a dead worker's is cleared
// by the pool, which a shared counter could not be), the call's descriptor,
// the last token it gave, whether it is stalled (see stall()), and its
// call's command (an index in COUNTED_COMMANDS; -1 while the frame is read),
// so a call the pool answers for a dead worker is counted as its own.
const PER_WORKER = 9;

export interface CniSharedBuffers {
  ints: SharedArrayBuffer;
  floats: SharedArrayBuffer;
  workers: number;
}

export type Counter = 'refused' | 'badFrames' | 'timeouts' | 'threads' | 'spares';
const COUNTER_WORD: Record<Counter, number> = { refused: REFUSED, badFrames: BAD_FRAMES, timeouts: TIMEOUTS, threads: THREADS, spares: SPARES };

// Node 20 has Atomics.waitAsync; this project's TypeScript lib (ES2022) does not declare it.
type WaitAsync = (
  a: Int32Array,
  index: number,
  value: number,
  timeoutMs?: number,
) => { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** 32 bits of FNV-1a, never 0 (0 marks "no attachment"). */
function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h === 0 ? 1 : h;
}

export class CniShared {
  readonly buffers: CniSharedBuffers;
  private readonly i32: Int32Array;
  // The floats buffer: per worker the call's deadline and its length (ms),
  // through `timing`, then the duration rings (code, seconds) through f64.
  private readonly f64: Float64Array;
  // The deadlines and lengths, read and written with Atomics only: the
  // sweep must see a call's length whenever it sees its deadline.
  private readonly timing: BigInt64Array;
  readonly workers: number;
  /**
   * Set in a worker thread: told when this thread's call stalls (stall()),
   * which is rare, so the pool learns of it at once without the event loop
   * watching every call.
   */
  onStall?: (i: number) => void;

  constructor(workersOrBuffers: number | CniSharedBuffers) {
    if (typeof workersOrBuffers === 'number') {
      const n = workersOrBuffers;
      this.buffers = {
        ints: new SharedArrayBuffer((HEADER + n * PER_WORKER) * 4),
        floats: new SharedArrayBuffer(n * (2 + RING * 2) * 8),
        workers: n,
      };
    } else {
      this.buffers = workersOrBuffers;
    }
    this.workers = this.buffers.workers;
    this.i32 = new Int32Array(this.buffers.ints);
    this.f64 = new Float64Array(this.buffers.floats);
    this.timing = new BigInt64Array(this.buffers.floats, 0, this.workers * 2);
    if (typeof workersOrBuffers === 'number') {
      for (let i = 0; i < this.workers; i++) this.i32[this.current(i)] = EMPTY;
    }
  }

  private current(i: number): number {
    return HEADER + i;
  }
  private busy(i: number): number {
    return HEADER + this.workers + i;
  }
  private head(i: number): number {
    return HEADER + this.workers * 2 + i;
  }
  private tail(i: number): number {
    return HEADER + this.workers * 3 + i;
  }
  private serving(i: number): number {
    return HEADER + this.workers * 4 + i;
  }
  private fdOf(i: number): number {
    return HEADER + this.workers * 5 + i;
  }
  private seq(i: number): number {
    return HEADER + this.workers * 6 + i;
  }
  private stalledWord(i: number): number {
    return HEADER + this.workers * 7 + i;
  }
  private commandOf(i: number): number {
    return HEADER + this.workers * 8 + i;
  }
  private ringAt(i: number, n: number): number {
    return this.workers * 2 + (i * RING + (n & (RING - 1))) * 2;
  }

  // A spin lock for the few words of the attachment table; a holder
  // preempted mid-section makes a waiter sleep, not spin.
  private lock(word: number): void {
    for (let spins = 0; Atomics.compareExchange(this.i32, word, 0, 1) !== 0; spins++) {
      if (spins > 100) Atomics.wait(this.i32, word, 1, 1);
    }
  }
  private unlock(word: number): void {
    Atomics.store(this.i32, word, 0);
    Atomics.notify(this.i32, word, 1);
  }

  /** Tells every thread to stop once its call is answered. */
  stop(): void {
    Atomics.store(this.i32, STOPPING, 1);
  }

  get stopping(): boolean {
    return Atomics.load(this.i32, STOPPING) === 1;
  }

  // ---- the call in progress, and who answers it ----

  /**
   * Worker `i` accepted connection `fd`: from now until it is answered, the
   * connection is the worker's call, so a worker that dies even while it
   * reads the request frame leaves its connection to the pool to answer and
   * close (claimCurrent) instead of open and unanswered. No deadline yet:
   * the frame's read is bounded by the worker itself.
   */
  accepted(i: number, fd: number): number {
    // Claims name the call by a token, never by its descriptor: a closed
    // descriptor's number comes back at the next accept(2), and a sweep
    // that saw the expired call on fd 7 could otherwise claim (answer "try
    // again" to, and close) the next call on fd 7, which is far from its
    // deadline and running. Tokens grow per worker (a replaced thread goes
    // on from its predecessor's) and wrap after 2^31 calls.
    const token = (Atomics.load(this.i32, this.seq(i)) % 0x7fffffff) + 1;
    Atomics.store(this.i32, this.seq(i), token);
    Atomics.store(this.i32, this.fdOf(i), fd);
    Atomics.store(this.i32, this.commandOf(i), -1);
    Atomics.store(this.timing, i * 2, NO_DEADLINE);
    Atomics.store(this.i32, this.current(i), token);
    Atomics.store(this.i32, this.serving(i), 1);
    return token;
  }

  /** Worker `i` is done with its connection (answered by whoever claimed it): it no longer counts in flight. */
  served(i: number): void {
    Atomics.store(this.i32, this.serving(i), 0);
  }

  /** Worker `i` serves call `token` (a `command`) until `deadline` (epoch ms), a limit of `limitMs`. */
  beginCall(i: number, token: number, deadline: number, limitMs: number, command: CountedCommand = 'invalid'): void {
    Atomics.store(this.i32, this.commandOf(i), COUNTED_COMMANDS.indexOf(command));
    // The length first: a sweep that sees the deadline sees it too.
    Atomics.store(this.timing, i * 2 + 1, BigInt(Math.round(limitMs)));
    Atomics.store(this.timing, i * 2, Number.isFinite(deadline) ? BigInt(Math.round(deadline)) : NO_DEADLINE);
    // Publishes the deadline (an atomic write), unless the call was claimed meanwhile.
    Atomics.compareExchange(this.i32, this.current(i), token, token);
  }

  /**
   * Whoever claims the call answers it and closes its descriptor: the worker
   * when its handler returns, or, at the deadline, its timer or the event
   * loop's watchdog. Exactly one claim succeeds; the others must not touch
   * the descriptor again (its number may already name another connection).
   */
  claimCall(i: number, token: number): boolean {
    return Atomics.compareExchange(this.i32, this.current(i), token, EMPTY) === token;
  }

  /** Calls past their deadline, claimed for the caller to answer: [worker, fd, limitMs]. */
  claimExpired(now: number): [number, number, number][] {
    const out: [number, number, number][] = [];
    for (let i = 0; i < this.workers; i++) {
      const token = Atomics.load(this.i32, this.current(i));
      if (token < 0) continue;
      // Read before the claim: once it succeeds, the worker may already
      // write its next call's. While `token` is current they are its own.
      const fd = Atomics.load(this.i32, this.fdOf(i));
      if (Atomics.load(this.timing, i * 2) > BigInt(Math.floor(now))) continue;
      const limitMs = Number(Atomics.load(this.timing, i * 2 + 1));
      if (this.claimCall(i, token)) out.push([i, fd, limitMs]);
    }
    return out;
  }

  /** The earliest deadline (epoch ms) of a call being served; Infinity when none has one. */
  nextDeadline(): number {
    let next = NO_DEADLINE;
    for (let i = 0; i < this.workers; i++) {
      if (Atomics.load(this.i32, this.current(i)) < 0) continue;
      const d = Atomics.load(this.timing, i * 2);
      if (d < next) next = d;
    }
    return next === NO_DEADLINE ? Infinity : Number(next);
  }

  /**
   * The call worker `i` was serving when it died, claimed: its descriptor,
   * command ('invalid' when its frame was not read) and how long it ran
   * (0 s then: its start is not kept); undefined when none.
   */
  claimCurrent(i: number, now = Date.now()): { fd: number; command: CountedCommand; seconds: number } | undefined {
    const token = Atomics.load(this.i32, this.current(i));
    if (token < 0) return undefined;
    const fd = Atomics.load(this.i32, this.fdOf(i));
    const code = Atomics.load(this.i32, this.commandOf(i));
    const deadline = Atomics.load(this.timing, i * 2);
    const limitMs = Atomics.load(this.timing, i * 2 + 1);
    if (!this.claimCall(i, token)) return undefined;
    const begun = code >= 0 && deadline !== NO_DEADLINE;
    return {
      fd,
      command: begun ? COUNTED_COMMANDS[code]! : 'invalid',
      // the call began at its deadline less its limit
      seconds: begun ? Math.max(0, now - Number(deadline - limitMs)) / 1000 : 0,
    };
  }

  /** Worker `i` serves a connection now (from accept to answer). */
  isServing(i: number): boolean {
    return Atomics.load(this.i32, this.serving(i)) === 1;
  }

  // ---- stalls: a thread held by a call that is not working ----

  /**
   * Worker `i`'s thread waits on someone else, not on work of its own: its
   * call is parked behind its attachment's earlier call (enter), or its
   * frame's sender is slow. The pool (cni-pool.ts) may start a spare thread
   * so that other pods' calls do not queue behind it.
   */
  stall(i: number): void {
    Atomics.store(this.i32, this.stalledWord(i), 1);
    this.onStall?.(i);
  }

  unstall(i: number): void {
    Atomics.store(this.i32, this.stalledWord(i), 0);
  }

  isStalled(i: number): boolean {
    return Atomics.load(this.i32, this.stalledWord(i)) === 1;
  }

  // ---- one call per attachment at a time ----

  /**
   * Worker `i` takes attachment `key`, waiting while another worker holds
   * it; false when `deadline` passes first (the call must then not start).
   * While it waits, the worker is marked stalled (stall()).
   */
  async enter(i: number, key: string, deadline: number): Promise<boolean> {
    const h = keyHash(key);
    let parked = false;
    try {
      for (let waited = false; ; waited = true) {
        // After a wait, the deadline is checked again before the attachment is
        // taken: the holder may leave after the deadline but before this
        // thread saw its own timeout (busy or descheduled), and a call started
        // then runs after the deadline's "try again" was sent.
        if (waited && Date.now() >= deadline) return false;
        this.lock(LOCK);
        let holder = -1;
        for (let j = 0; j < this.workers && holder < 0; j++) if (j !== i && this.i32[this.busy(j)] === h) holder = j;
        if (holder < 0) this.i32[this.busy(i)] = h;
        this.unlock(LOCK);
        if (holder < 0) return true;
        const left = deadline - Date.now();
        if (left <= 0) return false;
        const w = waitAsync(this.i32, this.busy(holder), h, left);
        if (!w.async) continue;
        // This thread now waits on another call: other pods' calls must
        // not queue behind it (the pool may start a spare thread).
        if (!parked) this.stall(i);
        parked = true;
        // Node does not count a pending Atomics.waitAsync as work that keeps
        // the event loop alive: a worker thread waiting here has nothing else
        // (it waits for connections synchronously), so its thread ended (code
        // 0) and the pool answered the call "CNI worker exited". A timer for
        // as long keeps it alive.
        const keep = setTimeout(() => undefined, left);
        try {
          await w.value;
        } finally {
          clearTimeout(keep);
        }
      }
    } finally {
      if (parked) this.unstall(i);
    }
  }

  /** Worker `i` lets its attachment go; a worker waiting for it goes on. */
  leave(i: number): void {
    Atomics.store(this.i32, this.busy(i), 0);
    Atomics.notify(this.i32, this.busy(i));
  }

  // ---- counters and durations ----

  add(counter: Counter, n = 1): void {
    Atomics.add(this.i32, COUNTER_WORD[counter], n);
  }

  /** One answered call: counted, and its duration queued for the event loop. */
  record(i: number, command: CountedCommand, ok: boolean, seconds: number): void {
    const code = COUNTED_COMMANDS.indexOf(command) * 2 + (ok ? 0 : 1);
    Atomics.add(this.i32, CALLS + code, 1);
    const head = Atomics.load(this.i32, this.head(i));
    // A full ring (nobody read it for RING calls) drops the duration; the count above stays exact.
    if (((head - Atomics.load(this.i32, this.tail(i))) | 0) >= RING) return;
    const at = this.ringAt(i, head);
    this.f64[at] = code;
    this.f64[at + 1] = seconds;
    Atomics.store(this.i32, this.head(i), (head + 1) | 0);
  }

  /** The event loop: every duration recorded since the last drain. */
  drain(fn: (command: CountedCommand, ok: boolean, seconds: number) => void): void {
    for (let i = 0; i < this.workers; i++) {
      const head = Atomics.load(this.i32, this.head(i));
      let tail = Atomics.load(this.i32, this.tail(i));
      while (tail !== head) {
        const at = this.ringAt(i, tail);
        const code = this.f64[at]!;
        fn(COUNTED_COMMANDS[code >> 1]!, (code & 1) === 0, this.f64[at + 1]!);
        tail = (tail + 1) | 0;
      }
      Atomics.store(this.i32, this.tail(i), tail);
    }
  }

  /** Grows with every call answered, refused or bad: the stats file is due when it moved. */
  get changes(): number {
    let n = 0;
    for (let w = REFUSED; w < HEADER; w++) n += Atomics.load(this.i32, w);
    return n;
  }

  /** The counters as the metrics and the stats file read them. */
  metrics(): CniServerMetrics {
    const read = (word: number) => Atomics.load(this.i32, word);
    const workers = this.workers;
    const serving = (i: number) => this.serving(i);
    return {
      get calls() {
        const m = new Map<string, { ok: number; error: number }>();
        COUNTED_COMMANDS.forEach((c, k) => {
          const ok = read(CALLS + k * 2);
          const error = read(CALLS + k * 2 + 1);
          if (ok + error > 0) m.set(c, { ok, error });
        });
        return m;
      },
      get refused() {
        return read(REFUSED);
      },
      get badFrames() {
        return read(BAD_FRAMES);
      },
      get timeouts() {
        return read(TIMEOUTS);
      },
      get threads() {
        return read(THREADS);
      },
      get sparesStarted() {
        return read(SPARES);
      },
      get inFlight() {
        let n = 0;
        for (let i = 0; i < workers; i++) n += read(serving(i));
        return n;
      },
    };
  }
}
