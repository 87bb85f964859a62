/**
 * Branch points: an LSN is rounded down to a WAL record boundary, and a time resolves to the end of the last
 * commit at or before it, so that a branch always starts where recovery can stop exactly.
 *
 * @module
 */
import { LsnOutOfRangeError } from "../errors.ts";
import { formatLsn, type Lsn, parseLsn } from "../lsn.ts";
import type { WalSource } from "./wal_api.ts";
import { firstRecordInPage, WalDecoder } from "./wal_decoder.ts";

const WAL_PAGE_BYTES = 8192n;
/** How far back to look for a page where a record starts: records here are far shorter than this. */
const MAX_PAGES_BACK = 8192;
/** A bound on records walked in one resolution (about 1 GB of WAL). */
const MAX_RECORDS = 20_000_000;

/** The greatest record boundary <= `lsn` (the start of a record, or the end of the WAL). */
export function lastRecordBoundary(source: WalSource, lsn: Lsn): Lsn {
  let page = lsn - lsn % WAL_PAGE_BYTES;
  for (let back = 0; back < MAX_PAGES_BACK && page >= source.start_lsn - source.start_lsn % WAL_PAGE_BYTES; back++) {
    const first = firstRecordInPage(source, page);
    if (first <= lsn) return walkTo(source, first, lsn);
    page -= WAL_PAGE_BYTES;
  }
  return walkTo(source, firstRecordInPage(source, source.start_lsn - source.start_lsn % WAL_PAGE_BYTES), lsn);
}

function walkTo(source: WalSource, boundary: Lsn, lsn: Lsn): Lsn {
  const decoder = new WalDecoder(source, boundary);
  let at = decoder.lsn;
  for (let i = 0; i < MAX_RECORDS; i++) {
    const record = decoder.next();
    if (!("next_lsn" in record) || record.next_lsn > lsn) return at;
    at = record.next_lsn;
  }
  return at;
}

/**
 * The end of the last whole record of WAL whose stored bytes end at `end_lsn`. The log does not store a record's
 * trailing zeros, so the last record may end a few bytes past `end_lsn`; its CRC says it is whole.
 */
export function walHead(source: WalSource, end_lsn: Lsn): Lsn {
  const decoder = new WalDecoder(source, lastRecordBoundary(source, end_lsn));
  for (let i = 0; i < MAX_RECORDS; i++) {
    if (!("next_lsn" in decoder.next())) break;
  }
  return decoder.lsn;
}

/** The end of the last commit at or before `time` in [start of `source`, `end_lsn`); undefined if none. */
export function lsnAtTime(source: WalSource, time: Date, end_lsn: Lsn): Lsn | undefined {
  return scanCommits(source, time, end_lsn, { page_of: source.start_lsn }, MAX_RECORDS).found_lsn;
}

/**
 * What {@linkcode scanCommits} found, and where a later scan (for a later time) goes on; `passed` when it reached a
 * commit after the time (then the WAL scanned holds every commit at or before it).
 */
export type CommitScan = { found_lsn?: Lsn; resume_lsn: Lsn; passed: boolean };

/**
 * Walks at most `max_records` records towards `end_lsn`, for the end of the last commit at or before `time`, from
 * `from.boundary` (a record boundary, such as a `resume_lsn`) or from the first record of the WAL page of
 * `from.page_of`. `resume_lsn` is where a later scan, for this time or a later one, starts without missing a
 * commit: the record it stopped at (the first commit after `time`, or the budget's end), or the end of the WAL
 * decoded. A scan for a later time thus never walks the same WAL twice.
 */
export function scanCommits(
  source: WalSource,
  time: Date,
  end_lsn: Lsn,
  from: { boundary: Lsn } | { page_of: Lsn },
  max_records: number,
): CommitScan {
  let start: Lsn;
  if ("boundary" in from && from.boundary >= source.start_lsn) {
    start = from.boundary;
  } else {
    const at = "page_of" in from && from.page_of > source.start_lsn ? from.page_of : source.start_lsn;
    start = firstRecordInPage(source, at - at % WAL_PAGE_BYTES);
  }
  const decoder = new WalDecoder(source, start);
  let found_lsn: Lsn | undefined;
  for (let i = 0; i < max_records; i++) {
    const at = decoder.lsn;
    const record = decoder.next();
    if (!("next_lsn" in record) || record.next_lsn > end_lsn) return { found_lsn, resume_lsn: at, passed: false };
    if (record.commit_time !== undefined) {
      if (record.commit_time.getTime() > time.getTime()) return { found_lsn, resume_lsn: at, passed: true };
      found_lsn = record.next_lsn;
    }
  }
  return { found_lsn, resume_lsn: decoder.lsn, passed: false };
}

/** A branch point as users give it: an LSN (bigint or `0/17CC6C8`) or a time. */
export type BranchAt = bigint | string | Date;

/** A {@linkcode BranchAt} for "the head, read only": what a replica's next compute starts at. */
export const READ_ONLY_HEAD = "head";

/**
 * Resolves `at` on a branch whose stored WAL ends at `end_lsn` to an exact record boundary; no `at` means the head.
 * Throws {@linkcode LsnOutOfRangeError} for a point beyond the head or before the history held.
 */
export function resolveBranchPoint(branch: string, source: WalSource, end_lsn: Lsn, at: BranchAt | undefined): Lsn {
  const head_lsn = walHead(source, end_lsn);
  if (at === undefined) return head_lsn;
  if (at instanceof Date) {
    const lsn = lsnAtTime(source, at, head_lsn);
    if (lsn === undefined) {
      throw new LsnOutOfRangeError(
        `branch "${branch}" has no commit at or before ${at.toISOString()}: pick a later time or an LSN`,
      );
    }
    return lsn;
  }
  const lsn = typeof at === "string" ? parseLsn(at) : at;
  if (lsn > head_lsn) {
    throw new LsnOutOfRangeError(
      `LSN ${formatLsn(lsn)} is beyond the head of branch "${branch}" (${formatLsn(head_lsn)}): pick an earlier one`,
    );
  }
  if (lsn < source.start_lsn) {
    throw new LsnOutOfRangeError(
      `LSN ${formatLsn(lsn)} is before the history branch "${branch}" holds (from ${formatLsn(source.start_lsn)})`,
    );
  }
  return lastRecordBoundary(source, lsn);
}
