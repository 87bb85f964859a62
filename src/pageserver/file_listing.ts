/**
 * Every file and directory of a timeline at an LSN, in pages: what a compute loads once at attach, so that its
 * file system answers stat and readdir without a round trip (it is the timeline's only writer from then on).
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";
import type { PathMeta } from "../storage/page_api.ts";
import type { FileEntry } from "./messages.ts";

/** What a listing reads: a page store's metadata. */
export type FileTree = {
  stat(path: string, lsn: Lsn): PathMeta | undefined;
  readdir(path: string, lsn: Lsn): string[];
};

/** The most paths a timeline's listing walks: a guard against a cycle or a runaway tree. */
const MAX_PATHS = 4_000_000;

/**
 * The entries of `tree` at `lsn` whose paths sort after `after` (byte order), at most `limit` of them; `more` when
 * some are left.
 */
export function listFiles(
  tree: FileTree,
  lsn: Lsn,
  after: string,
  limit: number,
): { entries: FileEntry[]; more: boolean } {
  const all: FileEntry[] = [];
  const pending = [""];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    const prefix = dir === "" ? "" : dir + "/";
    for (const name of tree.readdir(dir, lsn)) {
      const path = prefix + name;
      const meta = tree.stat(path, lsn);
      if (meta === undefined) continue;
      all.push({ path, meta });
      if (all.length > MAX_PATHS) throw new Error(`a timeline with more than ${MAX_PATHS} files`);
      if (meta.kind === "dir") pending.push(path);
    }
  }
  all.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
  let from = 0;
  for (let hi = all.length; from < hi;) {
    const mid = (from + hi) >> 1;
    if (all[mid].path <= after) from = mid + 1;
    else hi = mid;
  }
  return { entries: all.slice(from, from + limit), more: from + limit < all.length };
}
