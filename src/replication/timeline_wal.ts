/**
 * A timeline's WAL: its own log from the branch point on, and its ancestor's WAL before it. A branch copies no
 * WAL: recovery of a new branch reads the ancestor's WAL from the checkpoint before the branch point.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatLsn, type Lsn } from "../lsn.ts";
import type { OwnWal, WalSink, WalSource } from "./wal_api.ts";
import { WalLog } from "./wal_log.ts";

/** The WAL of one timeline, as its compute and its children see it. */
export class TimelineWal implements WalSink, WalSource {
  #own: OwnWal;
  readonly #ancestor: WalSource | undefined;
  readonly #branch_lsn: Lsn;
  readonly #segment_size: number;

  /**
   * @param own the timeline's own log (empty until its compute writes)
   * @param ancestor the parent timeline's WAL, read below `branch_lsn`; undefined for a root timeline
   * @param branch_lsn where this timeline branched off (0 for a root)
   * @param segment_size WAL segment size in bytes
   */
  constructor(own: OwnWal, ancestor: WalSource | undefined, branch_lsn: Lsn, segment_size: number) {
    assert(ancestor !== undefined || branch_lsn === 0n, "a root timeline has no branch point");
    this.#segment_size = segment_size;
    this.#own = own;
    this.#ancestor = ancestor;
    this.#branch_lsn = branch_lsn;
  }

  /** The WAL segment size in bytes. */
  get segment_size(): number {
    return this.#segment_size;
  }

  /** The timeline's own log. */
  get own(): OwnWal {
    return this.#own;
  }

  /** The first LSN readable through this timeline. */
  get start_lsn(): Lsn {
    if (this.#ownHolds(this.#own.start_lsn)) return this.#own.start_lsn;
    return this.#ancestor?.start_lsn ?? this.#own.start_lsn;
  }

  /**
   * Copies the ancestor's WAL from `lsn_start` to the branch point into the timeline's own (still empty) log, so that
   * the ancestor may drop it: the first compute of a branch replays it from the checkpoint before the branch point.
   */
  async adoptAncestorWal(lsn_start: Lsn): Promise<void> {
    assert(this.#ancestor !== undefined && this.#ownIsEmpty(), "only an empty branch adopts its ancestor's WAL");
    assert(lsn_start <= this.#branch_lsn, "adopted WAL ends at the branch point");
    this.#own.append(lsn_start, this.#ancestor.read(lsn_start, this.#branch_lsn));
    await this.#own.flush();
  }

  /** Whether the own log holds WAL from `lsn` on below the branch point (an adopted prefix). */
  #ownHolds(lsn: Lsn): boolean {
    return !this.#ownIsEmpty() && this.#own.start_lsn < this.#branch_lsn && this.#own.start_lsn <= lsn;
  }

  /** The end of the WAL: the branch point until the timeline writes its own. */
  get end_lsn(): Lsn {
    return this.#ownIsEmpty() ? this.#branch_lsn : this.#own.end_lsn;
  }

  /** The end of the durable WAL. */
  get flush_lsn(): Lsn {
    return this.#ownIsEmpty() || this.#own.flush_lsn === 0n ? this.#branch_lsn : this.#own.flush_lsn;
  }

  /** Appends to the timeline's own log; nothing below the branch point can change. */
  append(lsn_start: Lsn, bytes: Uint8Array): void {
    assert(
      lsn_start >= this.#branch_lsn,
      `WAL write at ${formatLsn(lsn_start)} is before the branch point ${formatLsn(this.#branch_lsn)}`,
    );
    this.#own.append(lsn_start, bytes);
  }

  /** Makes the own log durable. */
  async flush(): Promise<Lsn> {
    const flushed = await this.#own.flush();
    return flushed === 0n ? this.#branch_lsn : flushed;
  }

  /** WAL bytes of [lsn_start, lsn_end), from the ancestor below the branch point and the own log from it. */
  read(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    const out = new Uint8Array(Number(lsn_end - lsn_start));
    const split = lsn_end < this.#branch_lsn ? lsn_end : this.#branch_lsn;
    if (lsn_start < split && this.#ownHolds(lsn_start)) out.set(this.#own.read(lsn_start, split), 0);
    else if (this.#ancestor !== undefined && lsn_start < split) out.set(this.#ancestor.read(lsn_start, split), 0);
    const own_start = lsn_start > this.#branch_lsn ? lsn_start : this.#branch_lsn;
    if (own_start < lsn_end && !this.#ownIsEmpty()) {
      const from = own_start > this.#own.start_lsn ? own_start : this.#own.start_lsn;
      if (from < lsn_end) out.set(this.#own.read(from, lsn_end), Number(from - lsn_start));
    }
    return out;
  }

  /** The own log may drop WAL before `lsn`; an ancestor keeps what its children need. */
  retainFrom(lsn: Lsn): void {
    if (lsn > this.#branch_lsn && !this.#ownIsEmpty()) this.#own.retainFrom(lsn);
  }

  /** A point to {@linkcode rewindTo} later: the own log's end. */
  mark(): Lsn {
    return this.#own.end_lsn;
  }

  /** Drops the WAL written since `mark` (a fork back to its snapshot); the own log must be memory-only. */
  async rewindTo(mark: Lsn): Promise<void> {
    if (this.#own.end_lsn === mark) return;
    if (mark === 0n) {
      await this.#own.close();
      this.#own = await WalLog.open({ segment_size: this.#segment_size });
      return;
    }
    this.#own.append(mark, new Uint8Array(0));
    await this.#own.flush();
  }

  #ownIsEmpty(): boolean {
    return this.#own.end_lsn === 0n;
  }
}
