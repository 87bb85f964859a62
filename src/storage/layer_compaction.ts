/**
 * Compaction of delta layers: picks the newest run of layers to merge (binary-counter style, so the total work of
 * n flushes stays O(n log n)), merges it into one layer block by block, and on open recognises the source layers
 * that a crash left behind next to their merged layer. Scheme in `docs/layer_file_format.md` ("Compaction").
 *
 * @module
 */
import { dirname } from "node:path";
import type { Lsn } from "../lsn.ts";
import {
  CorruptLayerError,
  type LayerEntry,
  type LayerEntryKey,
  type LayerEvent,
  type LayerHandleCache,
  LayerReader,
  LayerWriter,
} from "./layer_file.ts";
import { syncDir } from "../checked_json.ts";

const LAYER_NAME = /^([0-9a-f]{16})_([0-9a-f]{16})_([0-9a-f]{16})\.layer(\.corrupt)?$/;

function hex16(n: number | bigint): string {
  return n.toString(16).padStart(16, "0");
}

/** The file name of a layer: `<generation>_<lsn_start>_<lsn_end>.layer`, each 16 lower-case hex digits. */
export function layerFileName(generation: number, lsn_start: Lsn, lsn_end: Lsn): string {
  return `${hex16(generation)}_${hex16(lsn_start)}_${hex16(lsn_end)}.layer`;
}

/**
 * How many of the newest layers to merge, given every layer's size oldest first: the run grows from the newest
 * layer while the next older one is at most twice the run's total. Any layer but the newest thus lands in a merged
 * layer at least 1.5x its size, so a byte is rewritten O(log n) times. Returns 0 when the run is a single layer.
 */
export function pickMergeRun(sizes_bytes: number[]): number {
  let i = sizes_bytes.length - 1;
  if (i < 1) return 0;
  let total = sizes_bytes[i];
  while (i > 0 && sizes_bytes[i - 1] <= 2 * total) total += sizes_bytes[--i];
  const run = sizes_bytes.length - i;
  return run >= 2 ? run : 0;
}

/** A source layer being read in key order: one decoded block at a time. */
type Cursor = {
  reader: LayerReader;
  /** The source's seqs, sorted: an entry's new seq is `base` + the rank of its seq here. */
  seqs: Float64Array;
  base: number;
  pos: number;
  head: LayerEntryKey | undefined;
  block: number;
  decoded: LayerEntry[];
  /** Whether an entry at this LSN goes into the merged layer (GC drops what no read needs any more). */
  keep: (lsn: Lsn) => boolean;
};

function rank(seqs: Float64Array, seq: number): number {
  let lo = 0;
  let hi = seqs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (seqs[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function advance(c: Cursor): void {
  let e = c.reader.entries[c.pos++];
  while (e !== undefined && !c.keep(e.lsn)) e = c.reader.entries[c.pos++];
  c.head = e === undefined ? undefined : { ...e, seq: c.base + rank(c.seqs, e.seq) };
}

/** Orders cursor heads by key; seqs are already renumbered, so ties at equal LSN go to the newer generation. */
function before(a: LayerEntryKey, b: LayerEntryKey): boolean {
  if (a.path !== b.path) return a.path < b.path;
  if (a.blkno !== b.blkno) return a.blkno < b.blkno;
  if (a.lsn !== b.lsn) return a.lsn < b.lsn;
  return a.seq < b.seq;
}

/**
 * Writes `sources` (oldest generation first) as one layer in `layer_dir` with `generation` (above all of theirs):
 * every version and event that `keep` accepts (default all), their seqs renumbered in (generation, seq) order so
 * that reads, ties at equal LSN included, come out the same. Streams: holds one decoded block per source and one output block. Resolves, once
 * the new file is durable, to it opened; the sources are left alone (see {@linkcode deleteLayers}).
 */
export async function mergeLayers(
  sources: LayerReader[],
  layer_dir: string,
  generation: number,
  handles: LayerHandleCache,
  keep: (lsn: Lsn, source: LayerReader) => boolean = () => true,
): Promise<LayerReader> {
  let base = 0;
  const cursors: Cursor[] = [];
  const events: LayerEvent[] = [];
  for (const reader of sources) {
    const seqs = new Float64Array(reader.entries.length + reader.events.length);
    reader.entries.forEach((e, i) => seqs[i] = e.seq);
    reader.events.forEach((e, i) => seqs[reader.entries.length + i] = e.seq);
    seqs.sort();
    const c: Cursor = { reader, seqs, base, pos: 0, head: undefined, block: -1, decoded: [], keep: () => true };
    for (const e of reader.events) if (keep(e.lsn, reader)) events.push({ ...e, seq: base + rank(seqs, e.seq) });
    c.keep = (lsn) => keep(lsn, reader);
    advance(c);
    cursors.push(c);
    base += seqs.length;
  }
  const header = {
    timeline_id: sources[0].header.timeline_id,
    lsn_start: sources.reduce(
      (min, r) => r.header.lsn_start < min ? r.header.lsn_start : min,
      sources[0].header.lsn_start,
    ),
    lsn_end: sources.reduce((max, r) => r.header.lsn_end > max ? r.header.lsn_end : max, 0n),
    generation,
    covers_from: Math.min(...sources.map((r) => r.header.covers_from)),
  };
  const file_path = `${layer_dir}/${layerFileName(generation, header.lsn_start, header.lsn_end)}`;
  const writer = await LayerWriter.create(file_path, header);
  try {
    for (;;) {
      let next: Cursor | undefined;
      for (const c of cursors) if (c.head !== undefined && (next === undefined || before(c.head, next.head!))) next = c;
      if (next === undefined) break;
      const head = next.head!;
      if (next.block !== head.block) {
        next.decoded = next.reader.readBlock(head.block);
        next.block = head.block;
      }
      const { path, blkno, lsn, seq } = head;
      await writer.add({ path, blkno, lsn, seq, value: next.decoded[head.slot].value });
      advance(next);
    }
    await writer.finish(events);
  } catch (err) {
    await writer.abort();
    throw err;
  }
  return LayerReader.open(file_path, handles);
}

/** Closes and deletes merged source layers, then fsyncs their directory. */
export async function deleteLayers(sources: LayerReader[]): Promise<void> {
  for (const layer of sources) layer.close();
  // The merged layer is durable by now: a crash part-way leaves sources that open recognises and deletes.
  for (const layer of sources) await Deno.remove(layer.file_path);
  if (sources.length > 0) await syncDir(dirname(sources[0].file_path));
}

/** What {@linkcode openLayerDir} found. */
export type LayerDir = {
  /** Open layers, oldest generation first. */
  readers: LayerReader[];
  /** Problems survived: a torn newest layer set aside, merge leftovers deleted. */
  warnings: string[];
  /** The lowest generation no file has used, not even a set-aside one. */
  next_generation: number;
};

/**
 * Opens a timeline's layer directory: deletes leftover `*.tmp` files and source layers that a finished merge
 * covers (a crash between writing a merged layer and deleting its sources), sets aside a newest layer that fails
 * validation as `<name>.corrupt` (a torn write) and throws {@linkcode CorruptLayerError} for any other bad layer.
 */
export async function openLayerDir(
  layer_dir: string,
  timeline_id: string,
  handles: LayerHandleCache,
): Promise<LayerDir> {
  await Deno.mkdir(layer_dir, { recursive: true });
  const found: { name: string; gen: number; lsn_start: bigint; lsn_end: bigint }[] = [];
  const out: LayerDir = { readers: [], warnings: [], next_generation: 1 };
  for await (const entry of Deno.readDir(layer_dir)) {
    if (entry.name.endsWith(".tmp")) {
      await Deno.remove(`${layer_dir}/${entry.name}`);
      continue;
    }
    const m = LAYER_NAME.exec(entry.name);
    if (m === null) continue;
    const gen = parseInt(m[1], 16);
    out.next_generation = Math.max(out.next_generation, gen + 1);
    if (m[4] !== undefined) continue; // set aside earlier; its generation stays taken
    found.push({ name: entry.name, gen, lsn_start: BigInt("0x" + m[2]), lsn_end: BigInt("0x" + m[3]) });
  }
  // Newest first: a merged layer is read before the sources it covers, whose generations are all lower.
  found.sort((a, b) => b.gen - a.gen);
  const leftovers: string[] = [];
  for (const [i, f] of found.entries()) {
    const file_path = `${layer_dir}/${f.name}`;
    const cover = out.readers.find((r) => f.gen >= r.header.covers_from && f.gen < r.header.generation);
    if (cover !== undefined) {
      leftovers.push(f.name);
      continue;
    }
    let reader: LayerReader | undefined;
    try {
      reader = LayerReader.open(file_path, handles);
      const h = reader.header;
      if (h.generation !== f.gen || h.lsn_start !== f.lsn_start || h.lsn_end !== f.lsn_end) {
        throw new CorruptLayerError(file_path, "header generation or LSN range differs from the file name");
      }
      if (h.timeline_id !== timeline_id) {
        throw new CorruptLayerError(file_path, `header names timeline ${h.timeline_id}`);
      }
    } catch (err) {
      reader?.close();
      if (!(err instanceof CorruptLayerError) || i > 0) {
        for (const r of out.readers) r.close();
        throw err;
      }
      await Deno.rename(file_path, file_path + ".corrupt");
      await syncDir(layer_dir);
      out.warnings.push(`dropped torn newest layer ${file_path} (${err.reason}); kept as ${f.name}.corrupt`);
      continue;
    }
    out.readers.push(reader);
  }
  for (const name of leftovers) await Deno.remove(`${layer_dir}/${name}`);
  if (leftovers.length > 0) {
    await syncDir(layer_dir);
    out.warnings.push(`deleted ${leftovers.length} layer(s) already merged into newer ones: ${leftovers.join(", ")}`);
  }
  out.readers.reverse();
  return out;
}
