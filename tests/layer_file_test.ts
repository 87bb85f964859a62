import assert from "node:assert";
import { BLOCK_SIZE, type FileEvent, type PageValue } from "../src/storage/page_api.ts";
import { applyDelta, computeDelta } from "../src/storage/page_delta.ts";
import { ZSTD_MAX_INPUT_BYTES, zstdCompress, zstdDecompress, ZstdError } from "../src/storage/zstd.ts";
import { crc32c } from "../src/crc32c.ts";
import {
  compareEntryKeys,
  CorruptLayerError,
  type LayerContents,
  type LayerEntry,
  LayerReader,
  LayerWriter,
  writeLayerFile,
} from "../src/storage/layer_file.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const TIMELINE = "0123456789abcdef0123456789abcdef";

/** Deterministic xorshift32: tests reproduce exactly. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

function randomPage(next: () => number, fill = 1): Uint8Array {
  const page = new Uint8Array(BLOCK_SIZE);
  for (let i = 0; i < BLOCK_SIZE; i++) page[i] = next() < fill ? Math.floor(next() * 256) : 0;
  return page;
}

function mutate(page: Uint8Array, next: () => number): Uint8Array {
  const out = page.slice();
  for (let n = Math.floor(next() * 12); n > 0; n--) {
    const at = Math.floor(next() * BLOCK_SIZE);
    const len = Math.min(BLOCK_SIZE - at, 1 + Math.floor(next() * 40));
    for (let i = at; i < at + len; i++) out[i] = (out[i] + 1 + Math.floor(next() * 255)) & 0xff;
  }
  return out;
}

Deno.test("computeDelta/applyDelta round-trip random pages, aligned and not", () => {
  const next = rng(7);
  for (let round = 0; round < 200; round++) {
    const old = randomPage(next, round % 2 ? 1 : 0.1);
    const changed = mutate(old, next);
    // Odd offsets force the byte-by-byte path.
    const shift = round % 3;
    const a = new Uint8Array(BLOCK_SIZE + shift).subarray(shift);
    const b = new Uint8Array(BLOCK_SIZE + shift).subarray(shift);
    a.set(old);
    b.set(changed);
    const ranges = computeDelta(a, b);
    const rebuilt = old.slice();
    applyDelta(rebuilt, ranges);
    assert.deepStrictEqual(rebuilt, changed);
    for (let i = 1; i < ranges.length; i++) {
      assert(ranges[i].offset - (ranges[i - 1].offset + ranges[i - 1].bytes.length) >= 16, "gaps under 16 merged");
    }
  }
});

Deno.test("computeDelta coalesces close runs, keeps far ones apart, owns its bytes", () => {
  const old = new Uint8Array(BLOCK_SIZE);
  assert.deepStrictEqual(computeDelta(old, old.slice()), []);
  const next = old.slice();
  next[100] = 1;
  next[110] = 2; // 9 equal bytes between: merged
  next[200] = 3; // far: separate
  next[BLOCK_SIZE - 1] = 4;
  const ranges = computeDelta(old, next);
  assert.deepStrictEqual(ranges.map((r) => [r.offset, r.bytes.length]), [[100, 11], [200, 1], [BLOCK_SIZE - 1, 1]]);
  next[100] = 9;
  assert.strictEqual(ranges[0].bytes[0], 1);
  assert.throws(() => applyDelta(old, [{ offset: BLOCK_SIZE - 1, bytes: new Uint8Array(2) }]));
  assert.throws(() => computeDelta(old, new Uint8Array(10)));
});

/** A frame the zstd-codec package wrote (the codec of layer files before node:zlib): 4096 bytes of page-like data. */
const ZSTD_CODEC_FRAME =
  "KLUv/WAAD8ULAFQQAAAYHyYtNDtCSVBXXmVsc3qBiI+WnaSrsrnAx87V3OPq8fj/Bg0UGyIpMDc+RUxTWmFob3Z9hIuSmaAAv8bN1Nvi6fD3/gUMExoh" +
  "KC82PURLUllgZ251fIOKkZifpq20u8LJ0Nfe5ezz+gEIDxYdJCsyOUBHAGZtdHuCiZCXnqWss7rByM/W3eTr8vkABw4VHCMqMTg/Rk1UW2JpcHd+hYyT" +
  "mqGor7a9xMvS2eDn7gCnrrW8w8rR2N/m7fT7AgkQFx4lLDM6QUhPVl1ka3J5gIeOlU5VXGNqcXh/ho2Um6KpsLe+xczT2uHo7/b9BAsSGSAnLjU89fwD" +
  "ChGco6qxuENKUVhfgJ6o0Qdl/0MM4BUNAxKoEKQL/jGCAYKGwBYqMKIPMyyaQVILkrIdg/QpJ9MWoURTLl/VAilpjiG51YnppVDSJKdXakGitO6AlB34" +
  "G4BGTPGA3CbMAuAHcDNwipwfkKdsDxjnsZANAAbFVoqtFLvqZ38=";

Deno.test("zstd reads the frames of layer files the older codec wrote; a damaged frame is a ZstdError", () => {
  const frame = Uint8Array.from(atob(ZSTD_CODEC_FRAME), (c) => c.charCodeAt(0));
  const expected = new Uint8Array(4096).map((_, i) => (i % 97 < 40 ? 0 : (i * 7) & 0xff));
  assert.deepStrictEqual(zstdDecompress(frame, 4096), expected);
  assert.throws(() => zstdDecompress(frame, 4000), ZstdError);
  const damaged = frame.slice();
  damaged[200] ^= 0xff;
  assert.throws(() => zstdDecompress(damaged.subarray(0, 100), 4096), ZstdError);
});

Deno.test("zstd round-trips and refuses inputs above 1 MiB", () => {
  const next = rng(3);
  for (const data of [new Uint8Array(0), new Uint8Array(5000), randomPage(next), randomPage(next, 0.05)]) {
    assert.deepStrictEqual(zstdDecompress(zstdCompress(data), data.length), data);
  }
  assert(zstdCompress(new Uint8Array(ZSTD_MAX_INPUT_BYTES)).length < 1000);
  assert.throws(() => zstdCompress(new Uint8Array(ZSTD_MAX_INPUT_BYTES + 1)));
});

function sampleLayer(): LayerContents {
  const next = rng(11);
  const entries: LayerEntry[] = [];
  let seq = 0;
  for (let blkno = 0; blkno < 90; blkno++) {
    // Half random (stored raw when incompressible), half sparse (compresses).
    const image = randomPage(next, blkno % 2 ? 1 : 0.05);
    entries.push({
      path: `base/5/${16384 + (blkno % 3)}`,
      blkno,
      lsn: 100n,
      seq: seq++,
      value: { kind: "image", bytes: image },
    });
    const ranges = computeDelta(image, mutate(image, next));
    entries.push({
      path: `base/5/${16384 + (blkno % 3)}`,
      blkno,
      lsn: 200n,
      seq: seq++,
      value: { kind: "delta", ranges },
    });
  }
  // Same key at the same LSN twice: both kept, in write order.
  entries.push({ path: "global/pg_control", blkno: 0, lsn: 150n, seq: seq++, value: { kind: "delta", ranges: [] } });
  entries.push({
    path: "global/pg_control",
    blkno: 0,
    lsn: 150n,
    seq: seq++,
    value: { kind: "delta", ranges: [{ offset: 8, bytes: new Uint8Array([1, 2, 3]) }] },
  });
  entries.reverse();
  const events: { path: string; lsn: bigint; seq: number; event: FileEvent }[] = [
    { path: "base", lsn: 100n, seq: seq++, event: { kind: "mkdir" } },
    { path: "base/5/16384", lsn: 100n, seq: seq++, event: { kind: "create" } },
    { path: "base/5/16384", lsn: 120n, seq: seq++, event: { kind: "resize", size_bytes: 3 * 2 ** 40 } },
    { path: "base/5/16385", lsn: 130n, seq: seq++, event: { kind: "unlink" } },
    { path: "base/6", lsn: 140n, seq: seq++, event: { kind: "rmdir" } },
  ];
  return { timeline_id: TIMELINE, lsn_start: 100n, lsn_end: 250n, generation: 7, entries, events };
}

function key(e: { path: string; blkno: number; lsn: bigint; seq: number }): string {
  return `${e.path}#${e.blkno}@${e.lsn}/${e.seq}`;
}

Deno.test("layer file round-trips images, deltas and events over many blocks", async () => {
  await withTempDir(async (dir) => {
    const layer = sampleLayer();
    const path = `${dir}/a.layer`;
    await writeLayerFile(path, layer);
    assert.deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["a.layer"]);
    const reader = LayerReader.open(path);
    try {
      assert.deepStrictEqual(reader.header, {
        timeline_id: TIMELINE,
        lsn_start: 100n,
        lsn_end: 250n,
        generation: 7,
        covers_from: 7,
      });
      assert.deepStrictEqual(reader.events, layer.events);
      assert(reader.block_count > 2, `expected several blocks, got ${reader.block_count}`);
      const expected = new Map<string, PageValue>(layer.entries.map((e) => [key(e), e.value]));
      assert.strictEqual(reader.entries.length, expected.size);
      const sorted = [...reader.entries].map(key);
      assert.deepStrictEqual(sorted, [...layer.entries].sort(compareEntryKeys).map(key));
      for (const k of reader.entries) {
        const got = reader.readBlock(k.block)[k.slot];
        assert.strictEqual(key(got), key(k));
        assert.strictEqual(got.value.kind === "image", k.image);
        assert.deepStrictEqual(got.value, expected.get(key(k)));
      }
      const control = reader.entries.filter((e) => e.path === "global/pg_control").map((e) => e.seq);
      assert.deepStrictEqual(control, [...control].sort((a, b) => a - b));
    } finally {
      reader.close();
    }
    const empty = `${dir}/empty.layer`;
    await writeLayerFile(empty, {
      timeline_id: TIMELINE,
      lsn_start: 5n,
      lsn_end: 5n,
      generation: 1,
      entries: [],
      events: [],
    });
    const r2 = LayerReader.open(empty);
    assert.deepStrictEqual([r2.entries.length, r2.events.length, r2.block_count], [0, 0, 0]);
    assert.strictEqual(r2.header.lsn_end, 5n);
    r2.close();
  });
});

/** Offsets of the events and index sections, read from the footer. */
function sections(bytes: Uint8Array): { events: number; index: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 64, 64);
  return { events: Number(view.getBigUint64(0, true)), index: Number(view.getBigUint64(16, true)) };
}

Deno.test("corruption anywhere is a CorruptLayerError naming the file", async () => {
  await withTempDir(async (dir) => {
    const good = `${dir}/good.layer`;
    await writeLayerFile(good, sampleLayer());
    const bytes = await Deno.readFile(good);
    const { events, index } = sections(bytes);
    const cases: [string, (b: Uint8Array) => Uint8Array, RegExp][] = [
      ["header", (b) => flip(b, 20), /header checksum/],
      ["events", (b) => flip(b, events + 3), /events checksum/],
      ["index", (b) => flip(b, index + 40), /index checksum/],
      ["footer", (b) => flip(b, b.length - 30), /footer checksum/],
      ["truncated", (b) => b.subarray(0, b.length - 100), /footer magic/],
      ["tiny", (b) => b.subarray(0, 10), /only 10 bytes/],
    ];
    for (const [name, damage, reason] of cases) {
      const path = `${dir}/${name}.layer`;
      await Deno.writeFile(path, damage(bytes.slice()));
      assert.throws(() => LayerReader.open(path), (err) => {
        assert(err instanceof CorruptLayerError, `${name}: ${err}`);
        assert.strictEqual(err.file_path, path);
        assert.match(err.message, new RegExp(path.replaceAll("/", "\\/")));
        assert.match(err.reason, reason);
        return true;
      });
    }
    // A damaged block passes open (blocks are read on demand) and fails when read.
    const block = `${dir}/block.layer`;
    await Deno.writeFile(block, flip(bytes.slice(), 64 + 500));
    const reader = LayerReader.open(block);
    assert.throws(() => reader.readBlock(0), (err) => {
      assert(err instanceof CorruptLayerError);
      assert.strictEqual(err.file_path, block);
      assert.match(err.reason, /block 0 checksum/);
      return true;
    });
    assert.strictEqual(reader.readBlock(1).length > 0, true);
    reader.close();
  });
});

function flip(bytes: Uint8Array, at: number): Uint8Array {
  bytes[at] ^= 0x40;
  return bytes;
}

/** Rewrites a version 2 file as version 1 wrote it: version 1 in the header, no cover record in the index. */
function toVersion1(v2: Uint8Array): Uint8Array {
  const { index } = sections(v2);
  const footer = v2.slice(v2.length - 64);
  const fv = new DataView(footer.buffer);
  const index_len = Number(fv.getBigUint64(24, true)) - 8;
  const out = new Uint8Array(index + index_len + 64);
  out.set(v2.subarray(0, index + index_len));
  const hv = new DataView(out.buffer);
  hv.setUint32(8, 1, true);
  hv.setUint32(60, crc32c(out.subarray(0, 60)), true);
  fv.setBigUint64(24, BigInt(index_len), true);
  fv.setUint32(36, crc32c(out.subarray(index, index + index_len)), true);
  fv.setUint32(52, crc32c(footer.subarray(0, 52)), true);
  out.set(footer, index + index_len);
  return out;
}

Deno.test("version 2 records covers_from; version 1 files still read, covering their own generation", async () => {
  await withTempDir(async (dir) => {
    const layer = sampleLayer();
    const v2 = `${dir}/v2.layer`;
    await writeLayerFile(v2, layer);
    const v1 = `${dir}/v1.layer`;
    await Deno.writeFile(v1, toVersion1(await Deno.readFile(v2)));
    const [r1, r2] = [LayerReader.open(v1), LayerReader.open(v2)];
    assert.deepStrictEqual(r1.header, r2.header);
    assert.strictEqual(r1.header.covers_from, 7);
    assert.deepStrictEqual(r1.entries, r2.entries);
    assert.deepStrictEqual(r1.events, r2.events);
    assert.deepStrictEqual(r1.readBlock(r1.block_count - 1), r2.readBlock(r2.block_count - 1));
    r1.close();
    r2.close();
    // A merged layer covers its sources' generations; it must not claim ones above its own.
    const header = { timeline_id: TIMELINE, lsn_start: 1n, lsn_end: 9n, generation: 12 };
    const merged = await LayerWriter.create(`${dir}/merged.layer`, { ...header, covers_from: 4 });
    await merged.add({ path: "a", blkno: 0, lsn: 2n, seq: 0, value: { kind: "delta", ranges: [] } });
    await assert.rejects(() =>
      merged.add({ path: "a", blkno: 0, lsn: 1n, seq: 1, value: { kind: "delta", ranges: [] } })
    );
    await merged.finish([{ path: "a", lsn: 9n, seq: 1, event: { kind: "create" } }]);
    const r3 = LayerReader.open(`${dir}/merged.layer`);
    assert.deepStrictEqual(r3.header, { ...header, covers_from: 4 });
    assert.deepStrictEqual(r3.events.map((e) => e.seq), [1]);
    r3.close();
    await assert.rejects(() => LayerWriter.create(`${dir}/bad.layer`, { ...header, covers_from: 13 }));
    assert.deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "merged.layer",
      "v1.layer",
      "v2.layer",
    ]);
  });
});
