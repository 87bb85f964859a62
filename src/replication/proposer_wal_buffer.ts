/**
 * The WAL a proposer holds in memory: one contiguous range that grows at the end (Postgres's new WAL), at the
 * front (older WAL fetched from a donor safekeeper for one that lags) and is trimmed once committed and sent.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatLsn, type Lsn } from "../lsn.ts";

/** A contiguous range of WAL bytes [start_lsn, end_lsn). */
export class ProposerWalBuffer {
  #start_lsn: Lsn;
  /** Free bytes before the content (room to prepend), then the content, then free room to append. */
  #bytes = new Uint8Array(4096);
  #head = 2048;
  #size_bytes = 0;

  /** @param lsn where the (empty) range starts */
  constructor(lsn: Lsn) {
    this.#start_lsn = lsn;
  }

  /** The first LSN held. */
  get start_lsn(): Lsn {
    return this.#start_lsn;
  }

  /** The end of the bytes held. */
  get end_lsn(): Lsn {
    return this.#start_lsn + BigInt(this.#size_bytes);
  }

  /** How many bytes are held. */
  get size_bytes(): number {
    return this.#size_bytes;
  }

  /** Adds `bytes` at the end, which `lsn_start` must be. */
  append(lsn_start: Lsn, bytes: Uint8Array): void {
    assert(lsn_start === this.end_lsn, `append at ${formatLsn(lsn_start)}, end is ${formatLsn(this.end_lsn)}`);
    this.#reserve(0, bytes.length);
    this.#bytes.set(bytes, this.#head + this.#size_bytes);
    this.#size_bytes += bytes.length;
  }

  /** Adds `bytes`, which end where the range starts, at the front. */
  prepend(lsn_start: Lsn, bytes: Uint8Array): void {
    const lsn_end = lsn_start + BigInt(bytes.length);
    assert(
      lsn_end === this.#start_lsn,
      `prepend ending at ${formatLsn(lsn_end)}, start is ${formatLsn(this.#start_lsn)}`,
    );
    this.#reserve(bytes.length, 0);
    this.#head -= bytes.length;
    this.#bytes.set(bytes, this.#head);
    this.#size_bytes += bytes.length;
    this.#start_lsn = lsn_start;
  }

  /** A copy of [lsn_start, lsn_end), which must be held. */
  read(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    assert(lsn_start >= this.#start_lsn && lsn_start <= lsn_end && lsn_end <= this.end_lsn, "read outside buffer");
    const from = this.#head + Number(lsn_start - this.#start_lsn);
    return this.#bytes.slice(from, from + Number(lsn_end - lsn_start));
  }

  /** Drops the bytes before `lsn` (no-op when already dropped). */
  trimTo(lsn: Lsn): void {
    if (lsn <= this.#start_lsn) return;
    assert(lsn <= this.end_lsn, "trim past the end");
    const drop_bytes = Number(lsn - this.#start_lsn);
    this.#head += drop_bytes;
    this.#size_bytes -= drop_bytes;
    this.#start_lsn = lsn;
  }

  /** Makes room for `front_bytes` before and `back_bytes` after the content, growing geometrically. */
  #reserve(front_bytes: number, back_bytes: number): void {
    const back_room = this.#bytes.length - this.#head - this.#size_bytes;
    if (this.#head >= front_bytes && back_room >= back_bytes) return;
    const head = Math.max(front_bytes, front_bytes > 0 ? this.#size_bytes : 0);
    const tail = Math.max(back_bytes, back_bytes > 0 ? this.#size_bytes : 0);
    const grown = new Uint8Array(head + this.#size_bytes + tail);
    grown.set(this.#bytes.subarray(this.#head, this.#head + this.#size_bytes), head);
    this.#bytes = grown;
    this.#head = head;
  }
}
