import assert from "node:assert";
import { BLOCK_SIZE, type FileEvent, type PageValue, type PathMeta } from "../src/storage/page_api.ts";
import { applyDelta } from "../src/storage/page_delta.ts";
import { LayerHandleCache, LayerReader, writeLayerFile } from "../src/storage/layer_file.ts";
import { pickMergeRun } from "../src/storage/layer_compaction.ts";
import { PageStore } from "../src/storage/page_store.ts";
import { layerFiles as layerFilesOf, withTempDir } from "./fixtures/temp_dir.ts";

const TIMELINE = "00112233445566778899aabbccddeeff";

function layerDir(dir: string): string {
  return `${dir}/timelines/${TIMELINE}`;
}

const layerFiles = (dir: string) => layerFilesOf(dir, TIMELINE);

function page(fill: number): Uint8Array {
  const p = new Uint8Array(BLOCK_SIZE);
  for (let i = 0; i < BLOCK_SIZE; i++) p[i] = (fill * 31 + i * 7) & 0xff;
  return p;
}

/** Deterministic LCG: runs reproduce exactly. */
function rng(seed: number): (n: number) => number {
  let x = seed;
  return (n) => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x % n;
  };
}

type Op = { lsn: bigint; path: string; blkno?: number; value?: PageValue; event?: FileEvent };

/**
 * The reference model: replays `ops` (in write order; a later write at the same LSN wins) and checks every page of
 * `paths` x `blocks`, every stat and the root listing at every LSN up to `max_lsn` against `store`.
 */
function checkAll(store: PageStore, ops: Op[], paths: string[], blocks: number, max_lsn: bigint): void {
  const by_lsn = [...ops].sort((a, b) => (a.lsn < b.lsn ? -1 : a.lsn > b.lsn ? 1 : 0)); // stable: keeps write order
  const meta = new Map<string, PathMeta | undefined>();
  const pages = new Map<string, Uint8Array | undefined>();
  let i = 0;
  for (let lsn = 0n; lsn <= max_lsn; lsn++) {
    for (; i < by_lsn.length && by_lsn[i].lsn === lsn; i++) {
      const op = by_lsn[i];
      const e = op.event;
      if (e !== undefined) {
        if (e.kind === "create" || e.kind === "unlink") {
          for (let b = 0; b < blocks; b++) pages.delete(`${op.path}#${b}`);
        }
        if (e.kind === "resize") {
          for (let b = 0; b < blocks; b++) if (e.size_bytes <= b * BLOCK_SIZE) pages.delete(`${op.path}#${b}`);
        }
        const kinds: Record<string, PathMeta | undefined> = {
          create: { kind: "file", size_bytes: 0 },
          resize: { kind: "file", size_bytes: e.kind === "resize" ? e.size_bytes : 0 },
          mkdir: { kind: "dir" },
        };
        meta.set(op.path, kinds[e.kind]);
      } else {
        const key = `${op.path}#${op.blkno}`;
        if (op.value!.kind === "image") pages.set(key, op.value!.bytes.slice());
        else {
          const current = pages.get(key) ?? new Uint8Array(BLOCK_SIZE);
          applyDelta(current, op.value!.ranges);
          pages.set(key, current);
        }
      }
    }
    for (const path of paths) {
      const want = meta.get(path);
      assert.deepStrictEqual(store.stat(path, lsn), want, `stat ${path}@${lsn}`);
      for (let b = 0; b < blocks; b++) {
        const got = store.getPage(path, b, lsn);
        const expected = want?.kind === "file" ? pages.get(`${path}#${b}`) ?? new Uint8Array(BLOCK_SIZE) : undefined;
        assert.deepStrictEqual(got, expected, `${path} block ${b} at ${lsn}`);
      }
    }
    const listed = paths.filter((p) => meta.get(p) !== undefined).sort();
    assert.deepStrictEqual(store.readdir("", lsn), listed, `readdir at ${lsn}`);
  }
}

Deno.test("pickMergeRun takes the newest run while each older layer is at most 2x the run", () => {
  assert.strictEqual(pickMergeRun([]), 0);
  assert.strictEqual(pickMergeRun([10]), 0);
  assert.strictEqual(pickMergeRun([10, 10]), 2);
  assert.strictEqual(pickMergeRun([100, 10, 10]), 2, "100 > 2 * 20");
  assert.strictEqual(pickMergeRun([40, 10, 10]), 3, "40 <= 2 * 20");
  assert.strictEqual(pickMergeRun([1000, 100, 30, 1]), 0, "30 > 2 * 1: a lone newest layer");
  assert.strictEqual(pickMergeRun(Array(9).fill(5)), 9);
  assert.strictEqual(pickMergeRun([17, 8, 1, 1, 1, 1, 1, 1, 1]), 9, "7 small ones absorb 8, then 17");
});

Deno.test("100 flushes of random writes: few layers, every page, stat and listing as the model says", async () => {
  await withTempDir(async (dir) => {
    const rand = rng(4242);
    const paths = ["d0", "d1", "f0", "f1", "f2", "f3"];
    const ops: Op[] = [];
    let store = await PageStore.open({ dir, timeline_id: TIMELINE, memory_limit_bytes: 256 * 1024 });
    let lsn = 1n;
    let max_layers = 0;
    let merges = 0;
    for (let flush = 0; flush < 100; flush++) {
      for (let n = 0; n < 25; n++) {
        lsn += BigInt(rand(3)); // 0 now and then: ties at equal LSN, also across flushes
        const r = rand(100);
        if (r < 20) {
          const path = paths[rand(paths.length)];
          const dir_kinds: FileEvent[] = [{ kind: "mkdir" }, { kind: "rmdir" }];
          const file_kinds: FileEvent[] = [{ kind: "create" }, { kind: "unlink" }, {
            kind: "resize",
            size_bytes: rand(5) * BLOCK_SIZE,
          }];
          const event = path.startsWith("d") ? dir_kinds[rand(2)] : file_kinds[rand(3)];
          store.putEvent(path, lsn, event);
          ops.push({ lsn, path, event });
        } else {
          const path = `f${rand(4)}`;
          const blkno = rand(4);
          const bytes = new Uint8Array(1 + rand(30)).fill(rand(256));
          const value: PageValue = r < 40
            ? { kind: "image", bytes: page(rand(1000)) }
            : { kind: "delta", ranges: [{ offset: rand(BLOCK_SIZE - bytes.length), bytes }] };
          store.putPage(path, blkno, lsn, value);
          ops.push({ lsn, path, blkno, value });
        }
      }
      const before = store.layer_count;
      const reopen = flush === 49;
      await store.flush(flush === 99 || reopen ? lsn : lsn - BigInt(rand(3))); // close loses what is not flushed
      if (store.layer_count <= before) merges++;
      max_layers = Math.max(max_layers, store.layer_count);
      assert.strictEqual(layerFiles(dir).length, store.layer_count, "no files left behind");
      if (reopen) {
        await store.close(); // a reopen mid-way: seqs restart, generations do not
        store = await PageStore.open({ dir, timeline_id: TIMELINE });
      }
    }
    assert(max_layers <= 12, `at most 12 layers, saw ${max_layers}`);
    assert(merges >= 5, `compaction ran (${merges} merges)`);
    const disk_bytes = layerFiles(dir).reduce((n, f) => n + Deno.statSync(`${layerDir(dir)}/${f}`).size, 0);
    assert.strictEqual(store.disk_bytes, disk_bytes);
    checkAll(store, ops, paths, 4, lsn + 1n);
    await store.close();
    const reopened = await PageStore.open({ dir, timeline_id: TIMELINE });
    assert.deepStrictEqual(reopened.warnings, []);
    assert.strictEqual(reopened.disk_consistent_lsn, lsn);
    checkAll(reopened, ops, paths, 4, lsn + 1n);
    await reopened.close();
  });
});

Deno.test("ties at equal LSN keep their order across merged generations, against memory too", async () => {
  await withTempDir(async (dir) => {
    const store = await PageStore.open({ dir, timeline_id: TIMELINE });
    const ops: Op[] = [];
    const put = (path: string, lsn: bigint, v: PageValue | FileEvent) => {
      if ("bytes" in v || "ranges" in v) {
        store.putPage(path, 0, lsn, v);
        ops.push({ lsn, path, blkno: 0, value: v });
      } else {
        store.putEvent(path, lsn, v);
        ops.push({ lsn, path, event: v });
      }
    };
    put("f", 10n, { kind: "create" });
    put("f", 10n, { kind: "image", bytes: page(1) });
    await store.flush(10n);
    put("f", 10n, { kind: "image", bytes: page(2) }); // same LSN, newer generation: wins
    await store.flush(10n);
    put("f", 10n, { kind: "delta", ranges: [{ offset: 5, bytes: new Uint8Array([9, 9]) }] }); // on top of page(2)
    put("g", 10n, { kind: "create" });
    await store.flush(10n);
    put("g", 10n, { kind: "unlink" }); // an event tie: the unlink, written later, wins
    put("h", 20n, { kind: "create" });
    await store.flush(20n);
    put("h", 20n, { kind: "unlink" });
    await store.flush(20n);
    put("h", 20n, { kind: "create" });
    put("h", 20n, { kind: "image", bytes: page(3) });
    await store.flush(20n);
    const check = (s: PageStore) => checkAll(s, ops, ["f", "g", "h"], 1, 21n);
    check(store);
    assert.strictEqual(store.layer_count, 6);
    await store.compact();
    assert.strictEqual(store.layer_count, 1, "equal-size layers merge into one");
    check(store);
    put("f", 10n, { kind: "image", bytes: page(4) }); // in memory: wins over the merged layer
    check(store);
    await store.flush(10n);
    await store.compact();
    assert.strictEqual(store.layer_count, 1);
    check(store);
    await store.close();
    const reopened = await PageStore.open({ dir, timeline_id: TIMELINE });
    check(reopened);
    await reopened.close();
  });
});

Deno.test("sources a crash left next to their merged layer are deleted on open, not counted twice", async () => {
  await withTempDir(async (dir) => {
    const store = await PageStore.open({ dir, timeline_id: TIMELINE });
    const ops: Op[] = [];
    const every: Map<string, Uint8Array> = new Map(); // each layer file that ever existed, by name
    const snapshot = () => {
      for (const name of layerFiles(dir)) every.set(name, Deno.readFileSync(`${layerDir(dir)}/${name}`));
    };
    let lsn = 0n;
    const round = async (n: number) => {
      for (let i = 0; i < n; i++) {
        lsn += 1n;
        const path = `f${i % 2}`;
        if (lsn <= 2n) {
          store.putEvent(path, lsn, { kind: "create" });
          ops.push({ lsn, path, event: { kind: "create" } });
        }
        const value: PageValue = { kind: "delta", ranges: [{ offset: Number(lsn) * 3, bytes: new Uint8Array([i]) }] };
        store.putPage(path, 0, lsn, value);
        ops.push({ lsn, path, blkno: 0, value });
        store.putEvent(path, lsn, { kind: "resize", size_bytes: Number(lsn) * 100 });
        ops.push({ lsn, path, event: { kind: "resize", size_bytes: Number(lsn) * 100 } });
        await store.flush(lsn);
        snapshot();
      }
    };
    await round(8); // 8 layers: no merge yet
    assert.strictEqual(store.layer_count, 8);
    await round(1); // the 9th merges them all
    assert.strictEqual(store.layer_count, 1);
    await round(8); // and again: the 8 new ones plus the merged one
    assert.strictEqual(store.layer_count, 1);
    await round(3);
    await store.compact();
    snapshot();
    const after = layerFiles(dir);
    const check = (s: PageStore) => checkAll(s, ops, ["f0", "f1"], 1, lsn + 1n);
    check(store);
    await store.close();
    // The crash: every source of every merge back in place (sources of sources too), and a stray *.tmp.
    for (const [name, bytes] of every) Deno.writeFileSync(`${layerDir(dir)}/${name}`, bytes);
    Deno.writeTextFileSync(`${layerDir(dir)}/${after[0]}.tmp`, "half a merge");
    assert(layerFiles(dir).length > 20, `${layerFiles(dir).length} files`);
    const reopened = await PageStore.open({ dir, timeline_id: TIMELINE });
    assert.strictEqual(reopened.warnings.length, 1);
    assert.match(reopened.warnings[0], /already merged/);
    assert.deepStrictEqual(layerFiles(dir), after);
    assert.strictEqual(reopened.layer_count, after.length);
    check(reopened);
    await reopened.close();
    // A crash after only some sources were deleted: one source of the last merge comes back.
    const source = [...every.keys()].filter((name) => !after.includes(name)).sort().at(-1)!;
    Deno.writeFileSync(`${layerDir(dir)}/${source}`, every.get(source)!);
    const again = await PageStore.open({ dir, timeline_id: TIMELINE });
    assert.match(again.warnings.join(), new RegExp(source));
    assert.deepStrictEqual(layerFiles(dir), after);
    check(again);
    await again.close();
  });
});

Deno.test("at most max_handles layer files stay open; the others reopen on demand", async () => {
  await withTempDir(async (dir) => {
    const handles = new LayerHandleCache(4);
    const readers: LayerReader[] = [];
    for (let g = 1; g <= 10; g++) {
      const path = `${dir}/${g}.layer`;
      await writeLayerFile(path, {
        timeline_id: TIMELINE,
        lsn_start: 1n,
        lsn_end: 1n,
        generation: g,
        entries: [{ path: "f", blkno: g, lsn: 1n, seq: 0, value: { kind: "image", bytes: page(g) } }],
        events: [],
      });
      readers.push(LayerReader.open(path, handles));
      assert(handles.open_count <= 4);
    }
    const fds = () =>
      [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
        try {
          return Deno.readLinkSync(`/proc/self/fd/${e.name}`).startsWith(dir);
        } catch {
          return false;
        }
      }).length;
    for (let round = 0; round < 3; round++) {
      for (const [i, r] of readers.entries()) {
        assert.deepStrictEqual(r.readBlock(0)[0].value, { kind: "image", bytes: page(i + 1) });
        assert.strictEqual(handles.open_count, 4);
        if (Deno.build.os === "linux") assert(fds() <= 4, `${fds()} layer files open`);
      }
    }
    for (const r of readers) r.close();
    assert.strictEqual(handles.open_count, 0);
    if (Deno.build.os === "linux") assert.strictEqual(fds(), 0);
  });
});
