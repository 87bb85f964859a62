/**
 * Walks PostgreSQL WAL records (page headers, continuation records, record headers and CRC32C) in the bytes a
 * {@linkcode WalSource} holds: record boundaries for exact branch points, and commit records with their times so
 * that a point in time resolves to the last commit at or before it.
 *
 * @module
 */
import assert from "node:assert/strict";
import { crc32c } from "../crc32c.ts";
import { formatLsn, type Lsn } from "../lsn.ts";
import type { WalSource } from "./wal_api.ts";

const WAL_PAGE_BYTES = 8192;
const SHORT_PAGE_HEADER_BYTES = 24;
const LONG_PAGE_HEADER_BYTES = 40;
const XLP_FIRST_IS_CONTRECORD = 0x0001;
const XLP_LONG_HEADER = 0x0002;
const RECORD_HEADER_BYTES = 24;
const RM_XACT_ID = 1;
const XLOG_XACT_OPMASK = 0x70;
const XLOG_XACT_COMMIT = 0x00;
const XLOG_XACT_COMMIT_PREPARED = 0x30;
const XLR_MAX_BLOCK_ID = 32;
const XLR_BLOCK_ID_DATA_SHORT = 255;
const XLR_BLOCK_ID_DATA_LONG = 254;
const XLR_BLOCK_ID_ORIGIN = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID = 252;
const BKPBLOCK_HAS_IMAGE = 0x10;
const BKPBLOCK_SAME_REL = 0x80;
const BKPIMAGE_HAS_HOLE = 0x01;
const BKPIMAGE_COMPRESSED = 0x04 | 0x08 | 0x10;
/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC). */
const POSTGRES_EPOCH_MS = 946_684_800_000;
/** The longest record Tarn decodes; PostgreSQL's own limit is 1 GB, but records here are far smaller. */
const MAX_RECORD_BYTES = 64 * 1024 * 1024;

/** One decoded WAL record. */
export type WalRecord = {
  /** Where the record starts. */
  lsn: Lsn;
  /** Where the next record may start: the end of this one, aligned to 8 bytes. */
  next_lsn: Lsn;
  /** Resource manager id (1 = transactions). */
  rmid: number;
  /** The record's info byte. */
  info: number;
  /** Transaction id, 0 if none. */
  xid: number;
  /** For commit records: the commit time. */
  commit_time?: Date;
};

/** The bytes at an LSN are not a valid record: the end of the WAL, or damage. */
export type WalEnd = { end_lsn: Lsn; reason: string };

/** Reads WAL records from a source, one after another, from a known record boundary. */
export class WalDecoder {
  readonly #source: WalSource;
  #lsn: Lsn;

  /**
   * @param source where the WAL bytes come from
   * @param lsn_start a record boundary (see {@linkcode firstRecordInPage})
   */
  constructor(source: WalSource, lsn_start: Lsn) {
    this.#source = source;
    this.#lsn = skipPageHeader(source, lsn_start);
  }

  /** The position of the next record. */
  get lsn(): Lsn {
    return this.#lsn;
  }

  /** The next record, or where and why the WAL ends. */
  next(): WalRecord | WalEnd {
    const lsn = this.#lsn;
    if (lsn >= this.#source.end_lsn) return { end_lsn: lsn, reason: "end of the held WAL" };
    const header = this.#readLogical(lsn, RECORD_HEADER_BYTES);
    if (header === undefined) return { end_lsn: lsn, reason: "record header cut by an invalid page" };
    const view = new DataView(header.bytes.buffer, header.bytes.byteOffset, RECORD_HEADER_BYTES);
    const total_bytes = view.getUint32(0, true);
    if (total_bytes < RECORD_HEADER_BYTES || total_bytes > MAX_RECORD_BYTES) {
      return { end_lsn: lsn, reason: `invalid record length ${total_bytes} at ${formatLsn(lsn)}` };
    }
    const record = this.#readLogical(lsn, total_bytes);
    if (record === undefined) return { end_lsn: lsn, reason: `record at ${formatLsn(lsn)} runs past the WAL` };
    const expected_crc = view.getUint32(20, true);
    const actual_crc = crc32c(record.bytes.subarray(0, 20), crc32c(record.bytes.subarray(RECORD_HEADER_BYTES)));
    if (expected_crc !== actual_crc) return { end_lsn: lsn, reason: `bad record CRC at ${formatLsn(lsn)}` };
    const rmid = record.bytes[17];
    const info = record.bytes[16];
    const next_lsn = skipPageHeader(this.#source, alignUp(record.end_lsn));
    this.#lsn = next_lsn;
    const decoded: WalRecord = { lsn, next_lsn, rmid, info, xid: view.getUint32(4, true) };
    const op = info & XLOG_XACT_OPMASK;
    if (rmid === RM_XACT_ID && (op === XLOG_XACT_COMMIT || op === XLOG_XACT_COMMIT_PREPARED)) {
      decoded.commit_time = commitTime(record.bytes);
    }
    return decoded;
  }

  /**
   * `length` bytes of record data from `lsn`, skipping the page headers in between; undefined when a page is
   * missing. Bytes past the held end read as zeros: the log does not store a record's trailing zeros, and a record
   * that really was cut fails its CRC.
   */
  #readLogical(lsn: Lsn, length: number): { bytes: Uint8Array; end_lsn: Lsn } | undefined {
    const bytes = new Uint8Array(length);
    let at = lsn;
    for (let done = 0; done < length;) {
      if (at % BigInt(WAL_PAGE_BYTES) === 0n) {
        const header = pageHeader(this.#source, at);
        if (header === undefined || (header.info & XLP_FIRST_IS_CONTRECORD) === 0) return undefined;
        at += BigInt(header.size_bytes);
      }
      const page_left = WAL_PAGE_BYTES - Number(at % BigInt(WAL_PAGE_BYTES));
      const n = Math.min(page_left, length - done);
      bytes.set(this.#source.read(at, at + BigInt(n)), done);
      done += n;
      at += BigInt(n);
    }
    return { bytes, end_lsn: at };
  }
}

/** The first record boundary in the WAL page starting at `page_lsn` (after its header and any continuation). */
export function firstRecordInPage(source: WalSource, page_lsn: Lsn): Lsn {
  assert(page_lsn % BigInt(WAL_PAGE_BYTES) === 0n, "firstRecordInPage needs a page-aligned LSN");
  const header = pageHeader(source, page_lsn);
  if (header === undefined) return page_lsn;
  return alignUp(page_lsn + BigInt(header.size_bytes) + BigInt(header.remaining_bytes));
}

function pageHeader(
  source: WalSource,
  page_lsn: Lsn,
): { info: number; size_bytes: number; remaining_bytes: number } | undefined {
  if (page_lsn + BigInt(SHORT_PAGE_HEADER_BYTES) > source.end_lsn) return undefined;
  const bytes = source.read(page_lsn, page_lsn + BigInt(SHORT_PAGE_HEADER_BYTES));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(0, true) === 0 || view.getBigUint64(8, true) !== page_lsn) return undefined;
  const info = view.getUint16(2, true);
  const size_bytes = info & XLP_LONG_HEADER ? LONG_PAGE_HEADER_BYTES : SHORT_PAGE_HEADER_BYTES;
  return { info, size_bytes, remaining_bytes: view.getUint32(16, true) };
}

/** A record never starts inside a page header: a position at a page start moves past the header. */
function skipPageHeader(source: WalSource, lsn: Lsn): Lsn {
  if (lsn % BigInt(WAL_PAGE_BYTES) !== 0n) return lsn;
  const header = pageHeader(source, lsn);
  return header === undefined ? lsn : lsn + BigInt(header.size_bytes);
}

function alignUp(lsn: Lsn): Lsn {
  return (lsn + 7n) & ~7n;
}

/** The commit time: the first 8 bytes of a commit record's main data, which ends the record. */
function commitTime(record: Uint8Array): Date | undefined {
  const view = new DataView(record.buffer, record.byteOffset, record.byteLength);
  let at = RECORD_HEADER_BYTES;
  let main_bytes = 0;
  while (at < record.length) {
    const id = record[at];
    if (id === XLR_BLOCK_ID_DATA_SHORT) {
      main_bytes = record[at + 1];
      break;
    } else if (id === XLR_BLOCK_ID_DATA_LONG) {
      main_bytes = view.getUint32(at + 1, true);
      break;
    } else if (id === XLR_BLOCK_ID_ORIGIN) at += 3;
    else if (id === XLR_BLOCK_ID_TOPLEVEL_XID) at += 5;
    else if (id <= XLR_MAX_BLOCK_ID) at = skipBlockHeader(record, at);
    else return undefined;
  }
  if (main_bytes < 8) return undefined;
  const micros = view.getBigInt64(record.length - main_bytes, true);
  return new Date(POSTGRES_EPOCH_MS + Number(micros / 1000n));
}

function skipBlockHeader(record: Uint8Array, at: number): number {
  const fork_flags = record[at + 1];
  at += 4; // id, fork_flags, data_length
  if (fork_flags & BKPBLOCK_HAS_IMAGE) {
    const image_info = record[at + 4];
    at += 5;
    if (image_info & BKPIMAGE_HAS_HOLE && image_info & BKPIMAGE_COMPRESSED) at += 2;
  }
  if (!(fork_flags & BKPBLOCK_SAME_REL)) at += 12;
  return at + 4;
}
