/**
 * A read replica of a branch: read-only sessions on its newest committed state, with a bounded lag. PGlite runs
 * single-user Postgres, which has no hot standby (it cannot apply WAL while serving), so a replica is a series of
 * read-only computes, each started at the branch's head at the time (docs/replicas.md):
 *
 * - A *generation* is one read-only compute. It is fresh for `max_lag_ms` from the moment its start began (every
 *   commit acknowledged before that moment is in it), and for as long after as the branch's head has not moved.
 * - A transaction (an owner of the backend, from its first message to ReadyForQuery idle) runs on one generation:
 *   it never sees the data move. A new owner gets the newest generation; if that is no longer fresh, it waits for
 *   the next one (or for the check that the head has not moved).
 * - A new generation starts in the background when the newest is as old as the lag less the time a start takes, so
 *   owners seldom wait; the old one stops once its last owner has given it back.
 *
 * @module
 */
import { formatLsn, type Lsn } from "../lsn.ts";
import type { Logger } from "../logger.ts";
import type { BackendFn, CopyStream, SharedBackend } from "./shared_backend.ts";

/** What a replica needs from where computes come from. */
export type ReplicaSource = {
  /** A read-only compute at the branch's head now, its LSN, and how to let it go. */
  attachReadOnly(): Promise<{ compute: SharedBackend; release: () => Promise<void>; lsn: Lsn }>;
  /** The branch's head now: every acknowledged commit is below it. */
  headLsn(): Promise<Lsn>;
  /** Structured log: each generation started. */
  log?: Logger;
};

type Generation = {
  number: number;
  compute: SharedBackend;
  release: () => Promise<void>;
  lsn: Lsn;
  /** The head observed just before the compute started: everything below is in it. */
  head: Lsn;
  /** When it was last known to be at the head (ms, performance.now()). */
  fresh_at_ms: number;
  owners: number;
  retired: boolean;
};

/** A branch's replica as the server's sessions share it. */
export class ReplicaBackend implements SharedBackend {
  readonly #source: ReplicaSource;
  readonly #max_lag_ms: number;
  #current: Generation | undefined;
  #next: Promise<Generation> | undefined;
  #checking: Promise<void> | undefined;
  #generations = 0;
  /** When a transaction last asked for a generation (ms). */
  #used_ms = 0;
  /** How long a generation takes to start (ms; a moving average). */
  #start_ms: number;
  /** Generations not stopped yet: the newest and those whose owners have not ended. */
  readonly #live = new Set<Generation>();
  #closed = false;

  /** @param source where its computes come from @param max_lag_ms how stale a new transaction's state may be */
  constructor(source: ReplicaSource, max_lag_ms: number) {
    if (!(max_lag_ms > 0)) throw new RangeError(`max_lag_ms must be positive, got ${max_lag_ms}`);
    this.#source = source;
    this.#max_lag_ms = max_lag_ms;
    this.#start_ms = max_lag_ms / 2;
  }

  /** The LSN the newest generation serves (0 before the first). */
  get replay_lsn(): Lsn {
    return this.#current?.lsn ?? 0n;
  }

  /** Runs `fn` on a fresh generation, which it keeps until `fn` ends; `fn` learns the generation's number. */
  async exclusive<T>(fn: BackendFn<T>, copy?: CopyStream): Promise<T> {
    this.#used_ms = performance.now();
    const generation = await this.#fresh();
    generation.owners++;
    try {
      return await generation.compute.exclusive((exec, idle) => fn(exec, idle, generation.number), copy);
    } finally {
      generation.owners--;
      if (generation.retired && generation.owners === 0) await this.#stop(generation);
    }
  }

  /** Cancels the statement running on generation `number` (default: the newest). */
  cancel(number?: number): boolean {
    const generation = [...this.#live].find((g) => g.number === (number ?? this.#current?.number));
    return generation?.compute.cancel?.() ?? false;
  }

  /** Stops every generation (their owners have ended). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#next?.catch(() => {});
    const current = this.#current;
    this.#current = undefined;
    if (current !== undefined) {
      current.retired = true;
      if (current.owners === 0) await this.#stop(current);
    }
  }

  /**
   * The newest generation once it is fresh for a transaction asking now: at once, after a check that the head has
   * not moved, or the next. Freshness is judged at the moment of asking: a generation that takes longer than the lag
   * to start is still the freshest state that can be had, and waiting for another would only add to the lag.
   */
  async #fresh(): Promise<Generation> {
    const asked_ms = performance.now();
    for (let attempt = 0; attempt < 3; attempt++) {
      if (this.#closed) throw new Error("the replica is closed");
      const current = this.#current;
      const age_ms = current === undefined ? Infinity : performance.now() - current.fresh_at_ms;
      // The next generation starts early enough to be ready as this one goes stale, going by how long starts take.
      if (current !== undefined && age_ms > Math.max(0, this.#max_lag_ms - this.#start_ms)) this.#checkSoon();
      if (current !== undefined && asked_ms - current.fresh_at_ms <= this.#max_lag_ms) return current;
      if (current === undefined) await this.#startNext();
      else await (this.#next ?? this.#checking);
    }
    return await this.#startNext();
  }

  /**
   * Once a generation is the newest: while the replica is in use, the next one starts as soon as this one is as old
   * as the lag less a start's time (at once when starts take longer than the lag), so a reader seldom waits.
   */
  #scheduleNext(generation: Generation): void {
    if (performance.now() - this.#used_ms > 2 * this.#max_lag_ms) return;
    const delay_ms = Math.max(0, this.#max_lag_ms - this.#start_ms - (performance.now() - generation.fresh_at_ms));
    const timer = setTimeout(() => {
      if (this.#current === generation && !this.#closed) this.#checkSoon();
    }, delay_ms);
    Deno.unrefTimer(timer);
  }

  /** Checks the head in the background: unmoved, the newest generation is fresh again; moved, the next starts. */
  #checkSoon(): void {
    if (this.#checking !== undefined || this.#next !== undefined) return;
    this.#checking = (async () => {
      const current = this.#current!;
      const checked_at_ms = performance.now();
      const head = await this.#source.headLsn();
      if (head <= current.head) {
        current.fresh_at_ms = checked_at_ms;
        this.#scheduleNext(current);
      } else await this.#startNext();
    })().catch(() => {}).finally(() => this.#checking = undefined);
  }

  /** Starts the next generation (one at a time) and makes it the newest. */
  #startNext(): Promise<Generation> {
    this.#next ??= (async () => {
      const started_ms = performance.now();
      const head = await this.#source.headLsn();
      const { compute, release, lsn } = await this.#source.attachReadOnly();
      const generation: Generation = {
        number: ++this.#generations,
        compute,
        release,
        lsn,
        head,
        fresh_at_ms: started_ms,
        owners: 0,
        retired: false,
      };
      this.#start_ms = 0.7 * this.#start_ms + 0.3 * (performance.now() - started_ms);
      this.#source.log?.("replica_generation", {
        generation: generation.number,
        lsn: formatLsn(lsn),
        start_ms: Math.round(performance.now() - started_ms),
      });
      const previous = this.#current;
      this.#current = generation;
      this.#live.add(generation);
      this.#scheduleNext(generation);
      if (previous !== undefined) {
        previous.retired = true;
        if (previous.owners === 0) await this.#stop(previous);
      }
      // Closed while it started: close() waits for this promise, so the new generation stops here.
      if (this.#closed) {
        this.#current = undefined;
        generation.retired = true;
        await this.#stop(generation);
      }
      return generation;
    })().finally(() => this.#next = undefined);
    return this.#next;
  }

  async #stop(generation: Generation): Promise<void> {
    generation.owners = -1; // stopped: never again
    this.#live.delete(generation);
    await generation.release();
  }
}
