/**
 * Errors the proposer throws at its caller (the compute's WAL sink): each says what happened and what to do.
 *
 * @module
 */
import { formatLsn, type Lsn } from "../lsn.ts";

/** WAL was offered to a proposer that cannot take it: not elected yet, or deposed. */
export class ProposerStateError extends Error {
  /** @param what why it cannot take WAL now */
  constructor(what: string) {
    super(`the proposer cannot take WAL: ${what}`);
    this.name = "ProposerStateError";
  }
}

/** WAL offered somewhere other than the end: within a term a proposer never rewrites what it sent. */
export class ProposerAppendError extends RangeError {
  /**
   * @param lsn_start where the WAL was offered
   * @param end_lsn the proposer's end
   */
  constructor(lsn_start: Lsn, end_lsn: Lsn) {
    super(
      `WAL offered at ${formatLsn(lsn_start)} but the proposer's log ends at ${formatLsn(end_lsn)}: ` +
        "send each byte once, in order; a new writer needs a new proposer (a new term)",
    );
    this.name = "ProposerAppendError";
  }
}

/** Too much WAL is waiting for the quorum: wait for the commit LSN to advance before offering more. */
export class ProposerBackpressureError extends Error {
  /** @param limit_bytes the most uncommitted bytes the proposer holds */
  constructor(limit_bytes: number) {
    super(`over ${limit_bytes} bytes of WAL wait for the quorum: wait for commits, or raise max_uncommitted_bytes`);
    this.name = "ProposerBackpressureError";
  }
}
