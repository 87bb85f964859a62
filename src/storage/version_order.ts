/**
 * The order of versions and events in a page store: by LSN, then by layer generation (the in-memory layer is the
 * newest), then by write sequence within a layer. At equal LSN the later write wins.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";

/** What orders a version or event. */
export type Ordered = { lsn: Lsn; gen: number; seq: number };

/** Negative, zero or positive as `a` sorts before, with or after `b`. */
export function compareOrder(a: Ordered, b: Ordered): number {
  if (a.lsn !== b.lsn) return a.lsn < b.lsn ? -1 : 1;
  if (a.gen !== b.gen) return a.gen < b.gen ? -1 : 1;
  return a.seq - b.seq;
}

/** Inserts keeping `list` ordered; searches from the end because new writes almost always go last. */
export function insertOrdered<T extends Ordered>(list: T[], item: T): void {
  let i = list.length;
  while (i > 0 && compareOrder(list[i - 1], item) > 0) i--;
  list.splice(i, 0, item);
}

/** Index of the first item with lsn > `lsn`. */
export function upperBound(list: Ordered[], lsn: Lsn): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid].lsn <= lsn) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
