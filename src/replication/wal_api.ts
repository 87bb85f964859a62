/**
 * The interfaces between a compute and whatever makes its WAL durable: the embedded {@linkcode WalLog} today,
 * a quorum of safekeepers later. Both sides speak only in LSNs and exact WAL bytes.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";

/** Where a compute sends the WAL bytes Postgres writes. */
export interface WalSink {
  /**
   * Appends `bytes` at `lsn_start`. `lsn_start` must be <= the current end; when it is below the end, the log
   * is first truncated at `lsn_start` (a new writer replaces a divergent tail). Buffered until {@linkcode flush}.
   */
  append(lsn_start: Lsn, bytes: Uint8Array): void;
  /** Makes everything appended so far durable; resolves with the durable end (the flush LSN). */
  flush(): Promise<Lsn>;
  /** The end of everything appended (durable or not). */
  readonly end_lsn: Lsn;
  /** The end of what is durable. */
  readonly flush_lsn: Lsn;
}

/** Where a compute starting up (or a branch) reads WAL from. */
export interface WalSource {
  /** The first LSN still held. */
  readonly start_lsn: Lsn;
  /** The end of everything appended. */
  readonly end_lsn: Lsn;
  /**
   * The bytes of [lsn_start, lsn_end): bytes never written inside the held range read as zeros. Throws a typed
   * error when the range starts before {@linkcode start_lsn}.
   */
  read(lsn_start: Lsn, lsn_end: Lsn): Uint8Array;
  /** Allows the log to drop WAL before `lsn` (the redo point of the newest durable checkpoint, or history). */
  retainFrom(lsn: Lsn): void;
}

/** A timeline's own WAL: the embedded `WalLog`, or a `QuorumWal` on safekeepers. */
export interface OwnWal extends WalSink, WalSource {
  /** Persists what it can and releases its files and connections. */
  close(): Promise<void>;
}
