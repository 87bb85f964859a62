// GC of a page store: after an image at the horizon and a rewrite that leaves out what no read needs, every read at
// or above the horizon (and at a kept point below it) answers as before, reads elsewhere below it are refused with
// LsnOutOfRangeError, the layers shrink, and all of it holds after a reopen; a child branch reading its parent at
// its branch point still reads the right pages.
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { LsnOutOfRangeError } from "../src/errors.ts";
import type { Lsn } from "../src/lsn.ts";
import { BLOCK_SIZE } from "../src/storage/page_api.ts";
import { computeDelta } from "../src/storage/page_delta.ts";
import { PageStore } from "../src/storage/page_store.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const PARENT = "0123456789abcdef0123456789abcdef";
const CHILD = "fedcba9876543210fedcba9876543210";
const FILES = ["base/5/1000", "base/5/1001", "base/5/1002", "base/5/1003"];

/** A seeded random history of creates, resizes, images, deltas and unlinks; flushed now and then. */
async function writeHistory(store: PageStore, seed: number, lsn_from: number, ops: number): Promise<Lsn> {
  let state = seed;
  const rand = (n: number) => (state = (state * 1103515245 + 12345) & 0x7fffffff) % n;
  const sizes = new Map<string, number>();
  let lsn = BigInt(lsn_from);
  if (lsn_from === 10) {
    store.putEvent("base", 1n, { kind: "mkdir" });
    store.putEvent("base/5", 1n, { kind: "mkdir" });
  }
  for (let i = 0; i < ops; i++) {
    lsn += BigInt(1 + rand(3));
    const path = FILES[rand(FILES.length)];
    const blocks = sizes.get(path);
    const roll = rand(100);
    if (blocks === undefined) {
      store.putEvent(path, lsn, { kind: "create" });
      store.putEvent(path, lsn, { kind: "resize", size_bytes: 4 * BLOCK_SIZE });
      sizes.set(path, 4);
    } else if (roll < 4) {
      store.putEvent(path, lsn, { kind: "unlink" });
      sizes.delete(path);
    } else if (roll < 10) {
      const size = 1 + rand(6);
      store.putEvent(path, lsn, { kind: "resize", size_bytes: size * BLOCK_SIZE });
      sizes.set(path, size);
    } else {
      const blkno = rand(blocks);
      const old = store.getPage(path, blkno, lsn) ?? new Uint8Array(BLOCK_SIZE);
      const next = old.slice();
      next.fill(rand(256), rand(8000), rand(8000) + 100);
      store.putPage(
        path,
        blkno,
        lsn,
        rand(5) === 0 ? { kind: "image", bytes: next } : {
          kind: "delta",
          ranges: computeDelta(old, next),
        },
      );
    }
    if (i % 25 === 24) await store.flush(lsn);
  }
  await store.flush(lsn);
  return lsn;
}

/** Every file's pages and size at `lsn`, as the store answers. */
function snapshot(store: PageStore, lsn: Lsn): unknown {
  return FILES.map((path) => {
    const meta = store.stat(path, lsn);
    if (meta?.kind !== "file") return [path, "absent"];
    const pages = [];
    for (let b = 0; b * BLOCK_SIZE < meta.size_bytes; b++) pages.push([...store.getPage(path, b, lsn)!.slice(0, 64)]);
    return [path, meta.size_bytes, pages, store.readdir("base/5", lsn)];
  });
}

Deno.test("page store GC: reads at and above the horizon and at kept points are unchanged; others are refused", () =>
  withTempDir(async (dir) => {
    let store = await PageStore.open({ dir, timeline_id: PARENT });
    const end = await writeHistory(store, 7, 10, 600);
    const kept: Lsn = 300n;
    const horizon: Lsn = 900n;
    const points: Lsn[] = [kept, horizon, horizon + 1n, 1000n, 1100n, end];
    const before = points.map((lsn) => snapshot(store, lsn));
    const refused: Lsn = 500n;
    ok(snapshot(store, refused) !== undefined);
    const { bytes_before, bytes_after } = await store.gc(horizon, [kept]);
    ok(bytes_after < bytes_before, `${bytes_before} -> ${bytes_after} bytes`);
    equal(store.gc_cutoff_lsn, horizon);
    equal(store.layer_count, 1);
    for (const [i, lsn] of points.entries()) deepEqual(snapshot(store, lsn), before[i], `at ${lsn}`);
    throws(() => store.getPage(FILES[0], 0, refused), LsnOutOfRangeError);
    throws(
      () => store.stat(FILES[0], refused),
      (e: Error) => e instanceof LsnOutOfRangeError && /0\/384/.test(e.message),
    );
    // More history, then a second GC that keeps the same point: the first run's image there is kept.
    const end2 = await writeHistory(store, 11, Number(end), 300);
    const later = [kept, end, end2].map((lsn) => snapshot(store, lsn));
    await store.gc(end, [kept]);
    deepEqual([kept, end, end2].map((lsn) => snapshot(store, lsn)), later);
    throws(() => store.getPage(FILES[0], 0, horizon), LsnOutOfRangeError);
    await store.close();
    store = await PageStore.open({ dir, timeline_id: PARENT });
    deepEqual([kept, end, end2].map((lsn) => snapshot(store, lsn)), later, "after a reopen");
    equal(store.gc_cutoff_lsn, end);
    await store.close();
  }));

Deno.test("page store GC: a child branch reads its parent at its branch point after the parent's GC", () =>
  withTempDir(async (dir) => {
    const parent = await PageStore.open({ dir, timeline_id: PARENT });
    const end = await writeHistory(parent, 3, 10, 400);
    const branch_lsn: Lsn = 400n;
    const child = await PageStore.open({ dir, timeline_id: CHILD, ancestor: { source: parent, branch_lsn } });
    // The child writes over one inherited page without any event of its own, and makes a file of its own.
    const inherited = FILES.find((f) => parent.stat(f, branch_lsn)?.kind === "file")!;
    child.putPage(inherited, 0, branch_lsn + 1n, { kind: "image", bytes: new Uint8Array(BLOCK_SIZE).fill(9) });
    child.putEvent("base/5/2000", branch_lsn + 2n, { kind: "create" });
    await child.flush(branch_lsn + 2n);
    const child_before = snapshot(child, branch_lsn + 10n);
    await parent.gc(end - 5n, [branch_lsn]);
    deepEqual(snapshot(child, branch_lsn + 10n), child_before);
    // The child's own GC: its image holds its own pages; inherited ones still come from the parent.
    await child.gc(branch_lsn + 2n, []);
    deepEqual(snapshot(child, branch_lsn + 10n), child_before);
    deepEqual(child.readdir("base/5", branch_lsn + 10n).includes("2000"), true);
    await child.close();
    await parent.close();
  }));
