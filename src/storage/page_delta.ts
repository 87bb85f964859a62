/**
 * Page deltas: the byte ranges that differ between two versions of a page, and applying them.
 *
 * @module
 */
import assert from "node:assert";
import type { PageRange } from "./page_api.ts";

/** Runs of changed bytes closer than this are merged: a range header costs about as much as the bytes between. */
export const DELTA_GAP_BYTES = 16;

/**
 * The byte ranges of `next` that differ from `old` (two pages of equal length), in ascending offset order.
 * Runs separated by fewer than {@linkcode DELTA_GAP_BYTES} equal bytes are coalesced. The returned ranges own
 * copies of their bytes, so later changes to `next` do not alter them.
 */
export function computeDelta(old: Uint8Array, next: Uint8Array): PageRange[] {
  assert(old.length === next.length, `computeDelta: pages differ in length (${old.length} vs ${next.length})`);
  const ranges: PageRange[] = [];
  let start = -1;
  let end = -1;
  const mark = (pos: number) => {
    if (start < 0) {
      start = pos;
    } else if (pos - end >= DELTA_GAP_BYTES) {
      ranges.push({ offset: start, bytes: next.slice(start, end) });
      start = pos;
    }
    end = pos + 1;
  };
  const length = old.length;
  let pos = 0;
  // Word compares skip equal stretches four bytes at a time; they need 4-byte aligned views.
  if (old.byteOffset % 4 === 0 && next.byteOffset % 4 === 0) {
    const words = length >>> 2;
    const old_words = new Uint32Array(old.buffer, old.byteOffset, words);
    const next_words = new Uint32Array(next.buffer, next.byteOffset, words);
    for (let w = 0; w < words; w++) {
      if (old_words[w] === next_words[w]) continue;
      const base = w << 2;
      for (let b = base; b < base + 4; b++) {
        if (old[b] !== next[b]) mark(b);
      }
    }
    pos = words << 2;
  }
  for (; pos < length; pos++) {
    if (old[pos] !== next[pos]) mark(pos);
  }
  if (start >= 0) ranges.push({ offset: start, bytes: next.slice(start, end) });
  return ranges;
}

/** Overwrites `page` in place with each range; every range must lie within the page. */
export function applyDelta(page: Uint8Array, ranges: PageRange[]): void {
  for (const range of ranges) {
    assert(
      Number.isInteger(range.offset) && range.offset >= 0 && range.offset + range.bytes.length <= page.length,
      `applyDelta: range at ${range.offset} of ${range.bytes.length} bytes is outside a ${page.length}-byte page`,
    );
    page.set(range.bytes, range.offset);
  }
}
