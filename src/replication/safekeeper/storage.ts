/**
 * What a safekeeper keeps per timeline, and the interface to where it keeps it: a small state record written
 * atomically, and the WAL bytes, written then made durable by an explicit sync.
 *
 * @module
 */
import type { Lsn } from "../../lsn.ts";
import type { Term, TermHistory } from "./term_history.ts";

/** The state a safekeeper persists besides its WAL. */
export interface SafekeeperState {
  /** The highest term seen: never goes backwards. */
  readonly term: Term;
  /** Who got the vote in `term` (0 when nobody did): a repeated request from it is granted again. */
  readonly voted_for: bigint;
  /** The history of the WAL, as the last elected message of `term` (or an earlier one) described it. */
  readonly term_history: TermHistory;
  /** The last commit LSN heard of, persisted lazily: it may be stale after a restart. */
  readonly commit_lsn: Lsn;
}

/** The state of a safekeeper that never saw a proposer. */
export const EMPTY_STATE: SafekeeperState = { term: 0n, voted_for: 0n, term_history: [], commit_lsn: 0n };

/**
 * Durable storage of one timeline on one safekeeper. A failed operation throws and the storage must not be used
 * again: what reached the disk is unknown until it is opened anew (as after a crash).
 */
export interface SafekeeperStorage {
  /** The state persisted last; {@linkcode EMPTY_STATE} when none was. */
  loadState(): Promise<SafekeeperState>;
  /** Persists `state` atomically: after a crash either it or the previous state is read back, whole. */
  persistState(state: SafekeeperState): Promise<void>;
  /** The first LSN of the WAL held (equal to `wal_end_lsn` when none is). */
  readonly wal_start_lsn: Lsn;
  /** The end of the WAL written, durable or not. */
  readonly wal_end_lsn: Lsn;
  /** The end of the durable WAL. */
  readonly wal_flush_lsn: Lsn;
  /** Writes `bytes` at `lsn_start`, which must equal `wal_end_lsn`. Durable after {@linkcode syncWal}. */
  writeWal(lsn_start: Lsn, bytes: Uint8Array): void;
  /** Cuts the WAL at `lsn` (between `wal_start_lsn` and `wal_end_lsn`; any LSN when empty: it starts there). */
  truncateWal(lsn: Lsn): void;
  /**
   * Lets go of the WAL below `lsn` (at most the durable, committed end): it is in the lake, and no reader needs it
   * from here. Files go a whole segment at a time, so `wal_start_lsn` may stay below `lsn`.
   */
  removeWalBefore(lsn: Lsn): void;
  /** Makes every write and truncation durable; resolves with the durable end. */
  syncWal(): Promise<Lsn>;
  /** The WAL of [lsn_start, lsn_end), which must lie within [wal_start_lsn, wal_end_lsn]. */
  readWal(lsn_start: Lsn, lsn_end: Lsn): Uint8Array;
  /** Releases files; unsynced writes are lost. */
  close(): Promise<void>;
}
