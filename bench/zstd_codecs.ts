/**
 * zstd for layer blocks: the `zstd-codec` package (Emscripten WASM, what layer files used first) against
 * Deno's built-in `node:zlib` as `src/storage/zstd.ts` uses it now (native), at the same level.
 *
 * Builds a real database (200k rows of mixed ints, md5 text, padding, timestamps and floats), closes it, and
 * rebuilds the raw bytes of every block of its layer files exactly as `LayerWriter` handed them to the compressor
 * (entries re-encoded with `writeEntry`, up to 64 KiB each). A second data set is the image pages alone, 8 to a
 * 64 KiB chunk. Over each set it measures compress and decompress throughput (median of 3 rounds), the compression
 * ratio (raw / compressed), the median time to decompress one block (a cold read decompresses one), and checks every
 * round trip. It also checks that each codec's frames decompress with the other (existing layers were written by
 * `zstd-codec`).
 *
 * Run: `deno run -A bench/zstd_codecs.ts`
 *
 * @module
 */
import * as zlib from "node:zlib";
import { join } from "node:path";
import { Tarn } from "../mod.ts";
import { ByteWriter, writeEntry } from "../src/storage/layer_codec.ts";
import { LAYER_BLOCK_RAW_LIMIT_BYTES, LayerReader } from "../src/storage/layer_file.ts";
import { ZstdCodec } from "zstd-codec";
import { zstdCompress, zstdDecompress } from "../src/storage/zstd.ts";

/** The level `src/storage/zstd.ts` compresses at (its `LEVEL`, not exported). */
const LEVEL = 3;
const ROWS = 200_000;
const ROUNDS = 3;
const PAGE_BYTES = 8192;

type Codec = {
  name: string;
  compress(raw: Uint8Array): Uint8Array;
  decompress(frame: Uint8Array, raw_len: number): Uint8Array;
};

type Simple = {
  compress(bytes: Uint8Array, level: number): Uint8Array | null;
  decompress(bytes: Uint8Array): Uint8Array | null;
};
const simple = await new Promise<Simple>((resolve) =>
  ZstdCodec.run((zstd: { Simple: new () => Simple }) => resolve(new zstd.Simple()))
);

/** The `zstd-codec` package (Emscripten), which layer files used before `src/storage/zstd.ts` moved to node:zlib. */
const ZSTD_CODEC: Codec = {
  name: "zstd-codec",
  compress: (raw) => simple.compress(raw, LEVEL)!,
  decompress: (frame) => simple.decompress(frame)!,
};

/** What layer files use now: `src/storage/zstd.ts` over node:zlib (frames carry their content size). */
const NODE_ZLIB: Codec = { name: "node:zlib", compress: zstdCompress, decompress: zstdDecompress };

/** node:zlib called without the size: the frame header has no content size. */
const NODE_ZLIB_UNSIZED: Codec = {
  ...NODE_ZLIB,
  name: "node:zlib (no pledgedSrcSize)",
  compress: (raw) => zlib.zstdCompressSync(raw, { params: { [zlib.constants.ZSTD_c_compressionLevel]: LEVEL } }),
};

type Figures = {
  compress_mb_per_s: number;
  decompress_mb_per_s: number;
  ratio: number;
  /** Median over every block of every round. */
  decompress_block_us: number;
};

type DataSet = { name: string; chunks: Uint8Array[] };

async function buildDatabase(dir: string): Promise<void> {
  const tarn = await Tarn.open(dir);
  try {
    const db = await tarn.connect();
    await db.exec("create table t (id int primary key, n bigint, h text, pad text, ts timestamptz, f float8)");
    await db.exec(
      `insert into t select g, g * 7919 % 100003, md5(g::text), repeat('x', 50),
         timestamptz '2024-01-01' - g * interval '1 second', random()
       from generate_series(1, ${ROWS}) g`,
    );
    await db.exec("create index t_h on t (h)");
  } finally {
    await tarn.close();
  }
}

/** Every layer block's raw bytes as the writer compressed them, and the image pages packed 8 to a chunk. */
async function readDataSets(dir: string): Promise<DataSet[]> {
  const blocks: Uint8Array[] = [];
  const pages: Uint8Array[] = [];
  const timelines = join(dir, "timelines");
  for await (const timeline of Deno.readDir(timelines)) {
    if (!timeline.isDirectory) continue;
    for await (const file of Deno.readDir(join(timelines, timeline.name))) {
      if (!file.isFile || !file.name.endsWith(".layer")) continue;
      const reader = LayerReader.open(join(timelines, timeline.name, file.name));
      try {
        for (let i = 0; i < reader.block_count; i++) {
          const w = new ByteWriter();
          for (const e of reader.readBlock(i)) {
            writeEntry(w, e);
            if (e.value.kind === "image") pages.push(e.value.bytes.slice());
          }
          blocks.push(w.done().slice());
        }
      } finally {
        reader.close();
      }
    }
  }
  const per_chunk = LAYER_BLOCK_RAW_LIMIT_BYTES / PAGE_BYTES;
  const page_chunks: Uint8Array[] = [];
  for (let at = 0; at + per_chunk <= pages.length; at += per_chunk) {
    const chunk = new Uint8Array(LAYER_BLOCK_RAW_LIMIT_BYTES);
    for (let k = 0; k < per_chunk; k++) chunk.set(pages[at + k], k * PAGE_BYTES);
    page_chunks.push(chunk);
  }
  return [
    { name: "layer blocks as written", chunks: blocks },
    { name: "image pages, 8 per 64 KiB", chunks: page_chunks },
  ];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Both codecs over `chunks`, their rounds interleaved so drift (GC, CPU clock) hits both alike. Timed loops keep
 * no output (holding 100+ MB of it skews the figures); round trips are checked in an untimed pass.
 */
function measure(codecs: Codec[], chunks: Uint8Array[]): Figures[] {
  const bytes_raw = chunks.reduce((sum, c) => sum + c.length, 0);
  const frames = codecs.map((codec) => chunks.map((c) => codec.compress(c)));
  codecs.forEach((codec, k) =>
    chunks.forEach((c, i) => {
      if (!equalBytes(c, codec.decompress(frames[k][i], c.length))) {
        throw new Error(`${codec.name}: chunk ${i} did not round-trip`);
      }
    })
  );
  const compress_ms: number[][] = codecs.map(() => []);
  const decompress_ms: number[][] = codecs.map(() => []);
  const block_us: number[][] = codecs.map(() => []);
  let bytes_seen = 0;
  for (let round = 0; round < ROUNDS; round++) {
    codecs.forEach((codec, k) => {
      const started = performance.now();
      for (const c of chunks) bytes_seen += codec.compress(c).length;
      compress_ms[k].push(performance.now() - started);
      let round_ms = 0;
      frames[k].forEach((f, i) => {
        const block_started = performance.now();
        bytes_seen += codec.decompress(f, chunks[i].length).length;
        const block_ms = performance.now() - block_started;
        block_us[k].push(block_ms * 1000);
        round_ms += block_ms;
      });
      decompress_ms[k].push(round_ms);
    });
  }
  if (bytes_seen === 0) throw new Error("nothing measured");
  const mb = bytes_raw / 1e6;
  return codecs.map((_, k) => ({
    compress_mb_per_s: mb / (median(compress_ms[k]) / 1000),
    decompress_mb_per_s: mb / (median(decompress_ms[k]) / 1000),
    ratio: bytes_raw / frames[k].reduce((sum, f) => sum + f.length, 0),
    decompress_block_us: median(block_us[k]),
  }));
}

/** Whether every frame `from` writes decompresses with `to` to the original bytes. */
function compatible(from: Codec, to: Codec, chunks: Uint8Array[]): boolean {
  try {
    return chunks.every((c) => equalBytes(c, to.decompress(from.compress(c), c.length)));
  } catch {
    return false;
  }
}

function warmUp(codec: Codec, chunks: Uint8Array[]): void {
  for (const c of chunks.slice(0, 50)) codec.decompress(codec.compress(c), c.length);
}

function report(set: DataSet, a: Figures, b: Figures): void {
  const bytes_raw = set.chunks.reduce((sum, c) => sum + c.length, 0);
  console.log(`\n${set.name}: ${set.chunks.length} chunks, ${(bytes_raw / 1e6).toFixed(1)} MB raw, level ${LEVEL}`);
  const row = (label: string, x: number, y: number, unit: string, digits = 0) =>
    console.log(
      `  ${label.padEnd(18)} ${ZSTD_CODEC.name} ${x.toFixed(digits).padStart(6)} ${unit}, ` +
        `${NODE_ZLIB.name} ${y.toFixed(digits).padStart(6)} ${unit}, ${(y / x).toFixed(2)}x`,
    );
  row("compress:", a.compress_mb_per_s, b.compress_mb_per_s, "MB/s");
  row("decompress:", a.decompress_mb_per_s, b.decompress_mb_per_s, "MB/s");
  row("ratio:", a.ratio, b.ratio, "", 2);
  row("decompress block:", a.decompress_block_us, b.decompress_block_us, "us", 1); // a time: lower is better
}

if (typeof zlib.zstdCompressSync !== "function") {
  console.error("node:zlib has no zstdCompressSync in this Deno; nothing to compare");
  Deno.exit(1);
}
const dir = await Deno.makeTempDir({ prefix: "tarn-bench-zstd-" });
try {
  const build_started = performance.now();
  await buildDatabase(dir);
  const sets = await readDataSets(dir);
  console.log(`built and read the database in ${((performance.now() - build_started) / 1000).toFixed(1)} s`);
  for (const set of sets) {
    warmUp(ZSTD_CODEC, set.chunks);
    warmUp(NODE_ZLIB, set.chunks);
    const [codec, node] = measure([ZSTD_CODEC, NODE_ZLIB], set.chunks);
    report(set, codec, node);
  }
  const all = sets.flatMap((s) => s.chunks);
  const yes = (ok: boolean) => ok ? "yes" : "no";
  console.log("\nframe compatibility (every chunk of both sets):");
  console.log(`  zstd-codec frames -> node:zlib decompress:  ${yes(compatible(ZSTD_CODEC, NODE_ZLIB, all))}`);
  console.log(`  node:zlib frames  -> zstd-codec decompress: ${yes(compatible(NODE_ZLIB, ZSTD_CODEC, all))}`);
  console.log(
    `  node:zlib frames without pledgedSrcSize -> zstd-codec decompress: ` +
      yes(compatible(NODE_ZLIB_UNSIZED, ZSTD_CODEC, all)),
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
