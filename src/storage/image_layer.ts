/**
 * Image generation: a timeline's state at one LSN written as a layer of whole pages, so that the versions below
 * that LSN can go. The layer holds, at exactly that LSN, a snapshot of every path this timeline has events for (a
 * `resize` to its size for a file, `mkdir`, or the `unlink`/`rmdir` that hides an ancestor's path) and an image of
 * every page that exists then and that this timeline ever wrote or owns (every block of a file it has events for).
 * Pages it never touched keep falling through to its ancestor. Snapshot events take the lowest seqs, so that each
 * image sorts after the snapshot event that would otherwise reset its block.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";
import { BLOCK_SIZE, type FileEvent, type PathMeta } from "./page_api.ts";
import { type LayerEvent, type LayerHandleCache, LayerReader, LayerWriter } from "./layer_file.ts";
import { layerFileName } from "./layer_compaction.ts";

/** What an image of a timeline is made from: its own history and its reads (ancestor included). */
export type ImageSource = {
  timeline_id: string;
  /** Every path this timeline has file events for. */
  ownPaths(): Iterable<string>;
  /** The newest event of the timeline itself on `path` at or before `lsn`. */
  latestOwnEvent(path: string, lsn: Lsn): FileEvent | undefined;
  /** Every (path, blkno) the timeline holds a version of at or before `lsn` (repeats allowed). */
  ownKeysUpTo(lsn: Lsn): Iterable<{ path: string; blkno: number }>;
  stat(path: string, lsn: Lsn): PathMeta | undefined;
  /** The page as of `lsn` (the file exists). */
  materialise(path: string, blkno: number, lsn: Lsn): Uint8Array;
};

/** Writes the image of `source` at `lsn` as a layer in `layer_dir` with `generation`, and opens it. */
export async function writeImageLayer(
  source: ImageSource,
  lsn: Lsn,
  layer_dir: string,
  generation: number,
  handles: LayerHandleCache,
): Promise<LayerReader> {
  const events: LayerEvent[] = [];
  const keys = new Map<string, Set<number>>();
  const add = (path: string, blkno: number) => {
    let blocks = keys.get(path);
    if (blocks === undefined) keys.set(path, blocks = new Set());
    blocks.add(blkno);
  };
  for (const path of [...source.ownPaths()].sort()) {
    const event = source.latestOwnEvent(path, lsn);
    if (event === undefined) continue;
    const meta = source.stat(path, lsn);
    const snapshot: FileEvent = meta === undefined
      ? { kind: event.kind === "rmdir" || event.kind === "mkdir" ? "rmdir" : "unlink" }
      : meta.kind === "dir"
      ? { kind: "mkdir" }
      : { kind: "resize", size_bytes: meta.size_bytes };
    events.push({ path, lsn, seq: events.length, event: snapshot });
    if (meta?.kind === "file") { for (let b = 0; b * BLOCK_SIZE < meta.size_bytes; b++) add(path, b); }
  }
  for (const { path, blkno } of source.ownKeysUpTo(lsn)) {
    const meta = source.stat(path, lsn);
    if (meta?.kind === "file" && blkno * BLOCK_SIZE < meta.size_bytes) add(path, blkno);
  }
  const file_path = `${layer_dir}/${layerFileName(generation, lsn, lsn)}`;
  const writer = await LayerWriter.create(file_path, {
    timeline_id: source.timeline_id,
    lsn_start: lsn,
    lsn_end: lsn,
    generation,
    covers_from: generation,
  });
  try {
    let seq = events.length;
    for (const path of [...keys.keys()].sort()) {
      for (const blkno of [...keys.get(path)!].sort((a, b) => a - b)) {
        const bytes = source.materialise(path, blkno, lsn);
        await writer.add({ path, blkno, lsn, seq: seq++, value: { kind: "image", bytes } });
      }
    }
    await writer.finish(events);
  } catch (error) {
    await writer.abort();
    throw error;
  }
  return LayerReader.open(file_path, handles);
}
