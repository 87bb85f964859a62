import assert from "node:assert";
import { BLOCK_SIZE, type FileEvent, type PageValue } from "../src/storage/page_api.ts";
import { applyDelta, computeDelta } from "../src/storage/page_delta.ts";
import { CorruptLayerError, LayerReader } from "../src/storage/layer_file.ts";
import { MAX_DELTA_CHAIN, PageStore } from "../src/storage/page_store.ts";
import { layerFiles as layerFilesOf, withTempDir } from "./fixtures/temp_dir.ts";

const TIMELINE = "fedcba9876543210fedcba9876543210";
const ZEROS = new Uint8Array(BLOCK_SIZE);

function page(fill: number): Uint8Array {
  const p = new Uint8Array(BLOCK_SIZE);
  for (let i = 0; i < BLOCK_SIZE; i++) p[i] = (fill * 31 + i * 7) & 0xff;
  return p;
}

function delta(old: Uint8Array, at: number, value: number): { next: Uint8Array; value: PageValue } {
  const next = old.slice();
  next.fill(value, at, at + 10);
  return { next, value: { kind: "delta", ranges: computeDelta(old, next) } };
}

function layerDir(dir: string): string {
  return `${dir}/timelines/${TIMELINE}`;
}

const layerFiles = (dir: string) => layerFilesOf(dir, TIMELINE);

/** Writes a history on two files and returns what each page must read as at each LSN. */
function writeHistory(store: PageStore): [string, number, bigint, Uint8Array | undefined][] {
  const f = "base/5/16384";
  store.putEvent("base", 5n, { kind: "mkdir" });
  store.putEvent("base/5", 5n, { kind: "mkdir" });
  store.putEvent(f, 10n, { kind: "create" });
  const v20 = page(1);
  store.putPage(f, 0, 20n, { kind: "image", bytes: v20 });
  const d30 = delta(v20, 100, 9);
  store.putPage(f, 0, 30n, d30.value);
  const d30b = delta(d30.next, 4000, 3); // same LSN, written later: wins
  store.putPage(f, 0, 30n, d30b.value);
  const v40 = page(2);
  store.putPage(f, 0, 40n, { kind: "image", bytes: v40 });
  const d50 = delta(v40, 8000, 5);
  store.putPage(f, 0, 50n, d50.value);
  const d60 = delta(ZEROS, 0, 1); // block 1 starts from zeros with a delta
  store.putPage(f, 1, 60n, d60.value);
  store.putEvent(f, 60n, { kind: "resize", size_bytes: 2 * BLOCK_SIZE });
  store.putEvent("global", 70n, { kind: "mkdir" });
  store.putEvent("global/pg_control", 70n, { kind: "create" });
  store.putPage("global/pg_control", 0, 70n, { kind: "image", bytes: page(7) });
  return [
    [f, 0, 5n, undefined],
    [f, 0, 10n, ZEROS],
    [f, 0, 20n, v20],
    [f, 0, 29n, v20],
    [f, 0, 30n, d30b.next],
    [f, 0, 45n, v40],
    [f, 0, 50n, d50.next],
    [f, 0, 1000n, d50.next],
    [f, 1, 59n, ZEROS],
    [f, 1, 60n, d60.next],
    [f, 7, 60n, ZEROS],
    ["global/pg_control", 0, 69n, undefined],
    ["global/pg_control", 0, 70n, page(7)],
  ];
}

function checkHistory(store: PageStore, expected: [string, number, bigint, Uint8Array | undefined][]): void {
  for (const [path, blkno, lsn, want] of expected) {
    assert.deepStrictEqual(store.getPage(path, blkno, lsn), want, `${path} block ${blkno} at ${lsn}`);
  }
}

Deno.test("versions read back exactly at each LSN; a later write at the same LSN wins", async () => {
  const store = await PageStore.open({ timeline_id: TIMELINE });
  checkHistory(store, writeHistory(store));
  const copy = store.getPage("global/pg_control", 0, 70n)!;
  copy.fill(0);
  assert.deepStrictEqual(store.getPage("global/pg_control", 0, 70n), page(7), "getPage returns a copy");
  assert.throws(() => store.getPage("x", -1, 1n));
  assert.throws(() => store.getPage("x", 0, -1n));
  assert.throws(() => store.putPage("x", 0, 1n, { kind: "image", bytes: new Uint8Array(10) }));
  await store.close();
});

Deno.test("events drive stat and readdir; create and unlink reset a file's history", async () => {
  const store = await PageStore.open({ timeline_id: TIMELINE });
  const f = "base/1/100";
  store.putEvent("base", 1n, { kind: "mkdir" });
  store.putEvent("base/1", 2n, { kind: "mkdir" });
  store.putEvent(f, 3n, { kind: "create" });
  store.putPage(f, 0, 3n, { kind: "image", bytes: page(1) });
  store.putPage(f, 1, 3n, { kind: "image", bytes: page(2) });
  store.putEvent(f, 4n, { kind: "resize", size_bytes: 2 * BLOCK_SIZE });
  store.putEvent(f, 5n, { kind: "resize", size_bytes: BLOCK_SIZE }); // truncate: block 1 is gone
  store.putEvent("base/1/200", 6n, { kind: "create" });
  store.putEvent(f, 7n, { kind: "unlink" });
  store.putEvent(f, 8n, { kind: "create" });
  store.putEvent("base/2", 9n, { kind: "mkdir" });
  store.putEvent("base/2", 10n, { kind: "rmdir" });
  assert.deepStrictEqual(store.stat("", 0n), { kind: "dir" });
  assert.deepStrictEqual(store.readdir("", 0n), []);
  assert.deepStrictEqual(store.readdir("", 1n), ["base"]);
  assert.strictEqual(store.stat(f, 2n), undefined);
  assert.deepStrictEqual(store.stat(f, 3n), { kind: "file", size_bytes: 0 });
  assert.deepStrictEqual(store.stat(f, 4n), { kind: "file", size_bytes: 2 * BLOCK_SIZE });
  assert.deepStrictEqual(store.stat(f, 5n), { kind: "file", size_bytes: BLOCK_SIZE });
  assert.strictEqual(store.stat(f, 7n), undefined);
  assert.deepStrictEqual(store.stat(f, 8n), { kind: "file", size_bytes: 0 });
  assert.deepStrictEqual(store.stat("base/1", 100n), { kind: "dir" });
  assert.deepStrictEqual(store.readdir("base/1", 2n), []);
  assert.deepStrictEqual(store.readdir("base/1", 6n), ["100", "200"]);
  assert.deepStrictEqual(store.readdir("base/1", 7n), ["200"]);
  assert.deepStrictEqual(store.readdir("base/1", 8n), ["100", "200"]);
  assert.deepStrictEqual(store.readdir("base", 9n), ["1", "2"]);
  assert.deepStrictEqual(store.readdir("base", 10n), ["1"]);
  assert.deepStrictEqual(store.readdir(f, 8n), [], "a file has no children");
  assert.deepStrictEqual(store.getPage(f, 1, 4n), page(2));
  assert.deepStrictEqual(store.getPage(f, 1, 5n), ZEROS, "truncated away");
  assert.deepStrictEqual(store.getPage(f, 0, 6n), page(1));
  assert.strictEqual(store.getPage(f, 0, 7n), undefined, "unlinked");
  assert.deepStrictEqual(store.getPage(f, 0, 8n), ZEROS, "recreated: old versions are dead");
  assert.strictEqual(store.getPage("base/1", 0, 8n), undefined, "a directory has no pages");
  await store.close();
});

Deno.test("flush persists a prefix, keeps the rest in memory, and a reopen reads it all back", async () => {
  await withTempDir(async (dir) => {
    const store = await PageStore.open({ dir, timeline_id: TIMELINE });
    const expected = writeHistory(store);
    const before = store.in_memory_bytes;
    await store.flush(35n);
    assert.strictEqual(store.disk_consistent_lsn, 35n);
    assert(store.in_memory_bytes > 0 && store.in_memory_bytes < before, `${store.in_memory_bytes} of ${before}`);
    assert.deepStrictEqual(layerFiles(dir), ["0000000000000001_0000000000000005_0000000000000023.layer"]);
    const layer = LayerReader.open(`${layerDir(dir)}/${layerFiles(dir)[0]}`);
    assert(layer.entries.every((e) => e.lsn <= 35n) && layer.entries.length === 3);
    assert.strictEqual(layer.events.length, 3);
    layer.close();
    checkHistory(store, expected);
    // A late write at an already flushed LSN goes to a newer layer and wins there.
    const late = page(99);
    store.putPage("base/5/16384", 0, 30n, { kind: "image", bytes: late });
    expected[expected.findIndex(([p, b, lsn]) => p === "base/5/16384" && b === 0 && lsn === 30n)][3] = late;
    await store.flush(1000n);
    assert.strictEqual(store.in_memory_bytes, 0);
    await store.flush(1000n);
    assert.strictEqual(layerFiles(dir).length, 2, "a flush with nothing new writes nothing");
    checkHistory(store, expected);
    await store.close();

    const reopened = await PageStore.open({ dir, timeline_id: TIMELINE });
    assert.deepStrictEqual(reopened.warnings, []);
    assert.strictEqual(reopened.disk_consistent_lsn, 1000n);
    assert.strictEqual(reopened.in_memory_bytes, 0);
    checkHistory(reopened, expected);
    assert.deepStrictEqual(reopened.readdir("", 1000n), ["base", "global"]);
    assert.deepStrictEqual(reopened.stat("base/5/16384", 1000n), { kind: "file", size_bytes: 2 * BLOCK_SIZE });
    // Writes after a reopen go to a third generation and still win at equal LSN.
    reopened.putPage("global/pg_control", 0, 70n, { kind: "image", bytes: page(8) });
    await reopened.flush(70n);
    assert.deepStrictEqual(reopened.getPage("global/pg_control", 0, 70n), page(8));
    await reopened.close();
    const third = await PageStore.open({ dir, timeline_id: TIMELINE });
    assert.deepStrictEqual(third.getPage("global/pg_control", 0, 70n), page(8));
    assert.strictEqual(third.disk_consistent_lsn, 1000n);
    await third.close();
  });
});

Deno.test("late writes below a flushed LSN merge in LSN order across layers and memory", async () => {
  await withTempDir(async (dir) => {
    const store = await PageStore.open({ dir, timeline_id: TIMELINE });
    store.putEvent("f", 1n, { kind: "create" });
    store.putPage("f", 0, 10n, { kind: "image", bytes: page(1) });
    store.putPage("f", 0, 33n, { kind: "image", bytes: page(2) });
    await store.flush(35n);
    store.putPage("f", 0, 20n, { kind: "image", bytes: page(3) }); // late: in memory, below the layer's 33
    const check = (s: PageStore) => {
      assert.deepStrictEqual(s.getPage("f", 0, 15n), page(1));
      assert.deepStrictEqual(s.getPage("f", 0, 25n), page(3));
      assert.deepStrictEqual(s.getPage("f", 0, 40n), page(2));
    };
    check(store);
    await store.flush(20n); // a second layer whose LSNs lie inside the first's
    check(store);
    await store.close();
    const reopened = await PageStore.open({ dir, timeline_id: TIMELINE });
    check(reopened);
    assert.strictEqual(reopened.disk_consistent_lsn, 35n);
    await reopened.close();
  });
});

Deno.test("memory-only store writes no files and flush only advances disk_consistent_lsn", async () => {
  const store = await PageStore.open({ timeline_id: TIMELINE });
  const expected = writeHistory(store);
  await store.flush(40n);
  assert.strictEqual(store.disk_consistent_lsn, 40n);
  assert(store.in_memory_bytes > 0);
  await store.compact();
  assert.deepStrictEqual([store.layer_count, store.disk_bytes], [0, 0]);
  checkHistory(store, expected);
  await store.close();
});

Deno.test("a torn newest layer is set aside with a warning; a corrupt older layer throws", async () => {
  await withTempDir(async (dir) => {
    const store = await PageStore.open({ dir, timeline_id: TIMELINE });
    const expected = writeHistory(store);
    await store.flush(35n);
    await store.flush(100n);
    await store.close();
    const [older, newer] = layerFiles(dir);
    await Deno.writeTextFile(`${layerDir(dir)}/leftover.layer.tmp`, "partial");
    const newer_bytes = await Deno.readFile(`${layerDir(dir)}/${newer}`);
    await Deno.writeFile(`${layerDir(dir)}/${newer}`, newer_bytes.subarray(0, newer_bytes.length - 7));

    const torn = await PageStore.open({ dir, timeline_id: TIMELINE });
    assert.strictEqual(torn.warnings.length, 1);
    assert.match(torn.warnings[0], new RegExp(newer));
    assert.deepStrictEqual(layerFiles(dir), [older, `${newer}.corrupt`]);
    assert.strictEqual(torn.disk_consistent_lsn, 35n);
    checkHistory(torn, expected.filter(([, , lsn]) => lsn <= 35n));
    assert.deepStrictEqual(torn.getPage("base/5/16384", 0, 1000n), expected.find(([, , l]) => l === 30n)![3]);
    // The next layer takes a fresh generation, never the set-aside one's.
    torn.putPage("base/5/16384", 0, 36n, { kind: "image", bytes: page(5) });
    await torn.flush(36n);
    assert.strictEqual(layerFiles(dir)[2].slice(0, 16), "0000000000000003");
    await torn.close();

    const older_path = `${layerDir(dir)}/${older}`;
    const bytes = await Deno.readFile(older_path);
    bytes[bytes.length - 70] ^= 1;
    await Deno.writeFile(older_path, bytes);
    await assert.rejects(() => PageStore.open({ dir, timeline_id: TIMELINE }), (err) => {
      assert(err instanceof CorruptLayerError);
      assert.strictEqual(err.file_path, older_path);
      return true;
    });
  });
});

Deno.test("delta chains stay bounded: the 17th delta is stored as an image", async () => {
  await withTempDir(async (dir) => {
    const store = await PageStore.open({ dir, timeline_id: TIMELINE });
    store.putEvent("f", 1n, { kind: "create" });
    let current = page(3);
    store.putPage("f", 0, 1n, { kind: "image", bytes: current });
    const all: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) {
      const d = delta(current, (i * 397) % (BLOCK_SIZE - 10), i + 1);
      store.putPage("f", 0, BigInt(10 + i), d.value);
      current = d.next;
      all.push(current);
    }
    const replayed = page(3);
    for (const want of all) applyDelta(replayed, computeDelta(replayed, want));
    assert.deepStrictEqual(store.getPage("f", 0, 100n), current);
    assert.deepStrictEqual(store.getPage("f", 0, 100n), replayed);
    for (let i = 0; i < 20; i++) assert.deepStrictEqual(store.getPage("f", 0, BigInt(10 + i)), all[i]);
    await store.flush(100n);
    const layer = LayerReader.open(`${layerDir(dir)}/${layerFiles(dir)[0]}`);
    const kinds = layer.entries.map((e) => (e.image ? "I" : "D")).join("");
    layer.close();
    assert.strictEqual(kinds, "I" + "D".repeat(MAX_DELTA_CHAIN) + "I" + "DDD");
    for (let i = 0; i < 20; i++) assert.deepStrictEqual(store.getPage("f", 0, BigInt(10 + i)), all[i]);
    await store.close();
  });
});

Deno.test("random histories match a replay model across flushes and reopens", async () => {
  await withTempDir(async (dir) => {
    let x = 12345;
    const rand = (n: number) => {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      return x % n;
    };
    type Op = { lsn: bigint; path: string; blkno?: number; value?: PageValue; event?: FileEvent };
    const ops: Op[] = [];
    const replay = (path: string, blkno: number, lsn: bigint): Uint8Array | undefined => {
      let exists = false;
      let current: Uint8Array | undefined;
      for (const op of ops.filter((o) => o.lsn <= lsn && o.path === path)) {
        if (op.event?.kind === "create" || op.event?.kind === "unlink") current = undefined;
        if (op.event) exists = op.event.kind !== "unlink";
        if (op.event?.kind === "resize" && op.event.size_bytes <= blkno * BLOCK_SIZE) current = undefined;
        if (op.blkno !== blkno || op.value === undefined) continue;
        if (op.value.kind === "image") current = op.value.bytes.slice();
        else applyDelta(current ??= new Uint8Array(BLOCK_SIZE), op.value.ranges);
      }
      return exists ? current ?? new Uint8Array(BLOCK_SIZE) : undefined;
    };
    let store = await PageStore.open({ dir, timeline_id: TIMELINE, memory_limit_bytes: 1 });
    let lsn = 1n;
    const check = () => {
      for (let probe = 0; probe < 20; probe++) {
        const at = BigInt(rand(Number(lsn) + 2));
        const path = `f${rand(3)}`;
        const blkno = rand(4);
        assert.deepStrictEqual(store.getPage(path, blkno, at), replay(path, blkno, at), `${path}/${blkno}@${at}`);
      }
    };
    for (let step = 0; step < 600; step++) {
      lsn += BigInt(rand(3));
      const path = `f${rand(3)}`;
      const r = rand(100);
      if (r < 8) {
        const kinds: FileEvent[] = [{ kind: "create" }, { kind: "unlink" }, {
          kind: "resize",
          size_bytes: rand(5) * BLOCK_SIZE,
        }];
        const event = kinds[rand(3)];
        store.putEvent(path, lsn, event);
        ops.push({ lsn, path, event });
      } else if (r < 90) {
        const blkno = rand(4);
        const bytes = new Uint8Array(1 + rand(30)).fill(rand(256));
        const value: PageValue = r < 20
          ? { kind: "image", bytes: page(rand(1000)) }
          : { kind: "delta", ranges: [{ offset: rand(BLOCK_SIZE - bytes.length), bytes }] };
        store.putPage(path, blkno, lsn, value);
        ops.push({ lsn, path, blkno, value });
      } else if (r < 97) {
        await store.flush(lsn - BigInt(rand(5)) < 0n ? 0n : lsn - BigInt(rand(5)));
      } else {
        await store.flush(lsn);
        await store.close();
        store = await PageStore.open({ dir, timeline_id: TIMELINE, memory_limit_bytes: 1 });
      }
      if (step % 25 === 0) check();
    }
    check();
    await store.close();
  });
});
