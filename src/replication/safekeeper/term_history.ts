/**
 * Terms and term histories: which proposer wrote which stretch of a timeline's WAL. Two logs agree up to the point
 * where their histories part, which is how a safekeeper finds the divergent tail it must cut.
 *
 * @module
 */
import { formatLsn, type Lsn } from "../../lsn.ts";

/** A proposer's election round; 0 means "none yet". */
export type Term = bigint;

/** From `start_lsn` on (until the next switch), the WAL was written by the proposer of `term`. */
export interface TermSwitch {
  /** The term whose proposer wrote this stretch. */
  readonly term: Term;
  /** Where the stretch starts. */
  readonly start_lsn: Lsn;
}

/** Term switches, terms strictly increasing, start LSNs non-decreasing. */
export type TermHistory = readonly TermSwitch[];

/** Why a term history is not well formed, or undefined when it is. */
export function termHistoryProblem(history: TermHistory): string | undefined {
  for (let i = 1; i < history.length; i++) {
    if (history[i].term <= history[i - 1].term) return `term ${history[i].term} follows term ${history[i - 1].term}`;
    if (history[i].start_lsn < history[i - 1].start_lsn) return `term ${history[i].term} starts before its predecessor`;
  }
  if (history.length > 0 && history[0].term === 0n) return "term 0 in a history";
  return undefined;
}

/** The switches that describe a log ending at `lsn_end`: those starting at or before it. */
export function historyUpTo(history: TermHistory, lsn_end: Lsn): TermHistory {
  let count = history.length;
  while (count > 0 && history[count - 1].start_lsn > lsn_end) count--;
  return count === history.length ? history : history.slice(0, count);
}

/** The term of the last switch, 0 for an empty history. */
export function lastTerm(history: TermHistory): Term {
  return history.at(-1)?.term ?? 0n;
}

/**
 * The LSN up to which two logs hold the same bytes, given each one's history and end: both follow the same proposers
 * until the first switch they do not share, so they agree up to the end of the last shared term in either log.
 * Logs sharing no switch agree on nothing: the result is where the earlier one starts.
 */
export function divergenceLsn(a: TermHistory, a_end_lsn: Lsn, b: TermHistory, b_end_lsn: Lsn): Lsn {
  let shared = 0;
  while (
    shared < a.length && shared < b.length && a[shared].term === b[shared].term &&
    a[shared].start_lsn === b[shared].start_lsn
  ) shared++;
  if (shared === 0) return minLsn(a[0]?.start_lsn ?? b_end_lsn, b[0]?.start_lsn ?? a_end_lsn);
  const a_term_end = shared < a.length ? a[shared].start_lsn : a_end_lsn;
  const b_term_end = shared < b.length ? b[shared].start_lsn : b_end_lsn;
  return minLsn(minLsn(a_term_end, b_term_end), minLsn(a_end_lsn, b_end_lsn));
}

/** The smaller of two LSNs. */
export function minLsn(a: Lsn, b: Lsn): Lsn {
  return a < b ? a : b;
}

/** The larger of two LSNs. */
export function maxLsn(a: Lsn, b: Lsn): Lsn {
  return a > b ? a : b;
}

/** A history as text for logs and errors: `[1@0/1000, 3@0/2F00]`. */
export function formatHistory(history: TermHistory): string {
  return `[${history.map((s) => `${s.term}@${formatLsn(s.start_lsn)}`).join(", ")}]`;
}
