/**
 * Turns Postgres's writes to WAL segment files into appends of new LSN ranges to a {@linkcode WalSink}.
 *
 * Postgres rewrites the tail WAL page (8 KB) on every commit; only the bytes past what was already sent are new.
 * Trailing zeros of a write are not sent: unwritten WAL reads as zeros, so the stored log plus implicit zeros is
 * exactly what Postgres wrote. A write that differs from what was sent (after crash recovery stops before an
 * incomplete record, Postgres writes over it) truncates the log at the first differing byte.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Lsn } from "../lsn.ts";
import type { WalSink, WalSource } from "../replication/wal_api.ts";

/** Ships WAL writes as appends; remembers the last page sent to compare rewrites without reading the log. */
export class WalShipper {
  readonly #wal: WalSink & WalSource;
  #tail_lsn: Lsn = -1n;
  #tail_bytes = new Uint8Array(0);

  /** @param wal the log that receives the appends */
  constructor(wal: WalSink & WalSource) {
    this.#wal = wal;
  }

  /** Handles Postgres writing `bytes` at WAL position `lsn_start`. */
  write(lsn_start: Lsn, bytes: Uint8Array): void {
    const used = usedLength(bytes);
    const end = this.#wal.end_lsn;
    const empty_log = end === 0n;
    if (empty_log && used === 0) return;
    const overlap = empty_log ? 0 : Math.max(0, Math.min(used, Number(end - lsn_start)));
    let first_new = overlap;
    if (overlap > 0) {
      const known = this.#known(lsn_start, overlap);
      const differ_at = firstDifference(known, bytes.subarray(0, overlap));
      if (differ_at < overlap) first_new = differ_at;
    }
    const append_from = lsn_start + BigInt(first_new);
    if (first_new === used && append_from >= end && !empty_log) {
      this.#remember(lsn_start, bytes, used);
      return;
    }
    if (!empty_log && append_from > end) {
      // Trailing zeros of an earlier write were not sent: send them now so the log has no gap.
      this.#wal.append(end, new Uint8Array(Number(append_from - end)));
    }
    this.#wal.append(append_from, bytes.slice(first_new, used));
    this.#remember(lsn_start, bytes, used);
  }

  /** Forgets the remembered tail page (the log under it was rewound). */
  reset(): void {
    this.#tail_lsn = -1n;
    this.#tail_bytes = new Uint8Array(0);
  }

  #known(lsn_start: Lsn, length: number): Uint8Array {
    const offset = Number(lsn_start - this.#tail_lsn);
    if (this.#tail_lsn >= 0n && offset >= 0 && offset + length <= this.#tail_bytes.length) {
      return this.#tail_bytes.subarray(offset, offset + length);
    }
    return this.#wal.read(lsn_start, lsn_start + BigInt(length));
  }

  #remember(lsn_start: Lsn, bytes: Uint8Array, used: number): void {
    assert(used <= bytes.length);
    // Keep at most the last 64 KB written: the next commit rewrites the same tail page.
    const keep_from = Math.max(0, used - 65536);
    this.#tail_lsn = lsn_start + BigInt(keep_from);
    this.#tail_bytes = bytes.slice(keep_from, used);
  }
}

/** Length of `bytes` without its trailing zeros; word by word where aligned (every commit scans ~8 KB). */
function usedLength(bytes: Uint8Array): number {
  let n = bytes.length;
  if (bytes.byteOffset % 4 === 0) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n >>> 2);
    while (n > 0 && n % 4 !== 0 && bytes[n - 1] === 0) n--;
    if (n % 4 === 0) {
      let w = n >>> 2;
      while (w > 0 && words[w - 1] === 0) w--;
      n = w * 4;
    }
  }
  while (n > 0 && bytes[n - 1] === 0) n--;
  return n;
}

/** Index of the first byte where `a` and `b` differ (their length when equal); word by word where aligned. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  assert(a.length === b.length);
  let i = 0;
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0) {
    const wa = new Uint32Array(a.buffer, a.byteOffset, a.length >>> 2);
    const wb = new Uint32Array(b.buffer, b.byteOffset, a.length >>> 2);
    let w = 0;
    while (w < wa.length && wa[w] === wb[w]) w++;
    i = w * 4;
  }
  while (i < a.length && a[i] === b[i]) i++;
  return i;
}
