/**
 * Immutable delta layer files, format version 2 (byte layout in `docs/layer_file_format.md`): page versions sorted
 * by (path, blkno, lsn, seq) in zstd-compressed blocks with a CRC32C each, the layer's file events, an index of
 * every entry's key and block, and a checksummed footer. Written once and streamed block by block (tmp file, fsync,
 * rename, directory fsync); read synchronously, one block at a time, through a bounded set of open handles.
 *
 * @module
 */
import assert from "node:assert";
import { dirname } from "node:path";
import { crc32c } from "../crc32c.ts";
import {
  assertValidEntry,
  type BlockInfo,
  ByteReader,
  ByteWriter,
  compareEntryKeys,
  CorruptLayerError,
  decodeEvents,
  decodeFooter,
  decodeHeader,
  decodeIndex,
  encodeFooter,
  encodeHeader,
  type EntryKey,
  FLAG_ZSTD,
  FOOTER_BYTES,
  HEADER_BYTES,
  type LayerEntry,
  type LayerEntryKey,
  type LayerEvent,
  type LayerHeader,
  readEntry,
  writeEntry,
  writeEvent,
} from "./layer_codec.ts";
import { zstdCompress, zstdDecompress } from "./zstd.ts";
import { syncDir } from "../checked_json.ts";

export { compareEntryKeys, CorruptLayerError, type LayerEntry, type LayerEntryKey, type LayerEvent, type LayerHeader };

/** The format version this module writes; it also reads version 1 (which has no cover record). */
export const LAYER_FORMAT_VERSION = 2;
/**
 * Raw size this writer fills blocks to. Smaller than the format's maximum because a cold random read decompresses a
 * whole block: 64 KiB blocks read ~4x faster than 256 KiB ones and compress about as well.
 */
export const LAYER_BLOCK_RAW_LIMIT_BYTES = 64 * 1024;

/** What {@linkcode writeLayerFile} writes: a flushed layer (it covers only itself), entries in any order. */
export type LayerContents = Omit<LayerHeader, "covers_from"> & { entries: LayerEntry[]; events: LayerEvent[] };

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}

/**
 * Writes one layer file from entries given in key order, compressing and writing each block as it fills, so memory
 * holds one block plus the index however large the layer. Durable: via `file_path + ".tmp"`, fsync, rename, then
 * fsync of the directory.
 */
export class LayerWriter {
  private readonly paths = new Map<string, number>();
  private readonly path_table = new ByteWriter();
  private readonly block_table = new ByteWriter();
  private readonly keys = new ByteWriter();
  private readonly pending = new ByteWriter();
  private readonly scratch = new ByteWriter();
  private pending_keys: EntryKey[] = [];
  private last: EntryKey | undefined;
  private offset = HEADER_BYTES;
  private block_count = 0;
  private entry_count = 0;

  private constructor(readonly file_path: string, readonly header: LayerHeader, private readonly file: Deno.FsFile) {}

  /** Starts `file_path + ".tmp"` and writes the header. */
  static async create(file_path: string, header: LayerHeader): Promise<LayerWriter> {
    assert(/^[0-9a-f]{32}$/.test(header.timeline_id), `layer: timeline id must be 32 hex digits`);
    assert(header.lsn_start >= 0n && header.lsn_start <= header.lsn_end, "layer: need 0 <= lsn_start <= lsn_end");
    assert(Number.isSafeInteger(header.generation) && header.generation >= 0, "layer: bad generation");
    assert(
      Number.isSafeInteger(header.covers_from) && header.covers_from >= 0 && header.covers_from <= header.generation,
      "layer: need 0 <= covers_from <= generation",
    );
    const file = await Deno.open(file_path + ".tmp", { write: true, create: true, truncate: true });
    try {
      await writeAll(file, encodeHeader(header, LAYER_FORMAT_VERSION));
    } catch (err) {
      file.close();
      throw err;
    }
    return new LayerWriter(file_path, header, file);
  }

  /** Adds the next entry; keys must strictly increase. Its bytes are copied. */
  async add(e: LayerEntry): Promise<void> {
    assertValidEntry(e, this.header.lsn_start, this.header.lsn_end);
    assert(this.last === undefined || compareEntryKeys(this.last, e) < 0, "layer: entries out of key order");
    this.last = { path: e.path, blkno: e.blkno, lsn: e.lsn, seq: e.seq };
    if (!this.paths.has(e.path)) {
      this.paths.set(e.path, this.paths.size); // keys arrive in path order, so the table comes out sorted
      this.path_table.str(e.path);
    }
    this.scratch.length = 0;
    writeEntry(this.scratch, e);
    if (this.pending_keys.length > 0 && this.pending.length + this.scratch.length > LAYER_BLOCK_RAW_LIMIT_BYTES) {
      await this.writeBlock();
    }
    this.pending.bytes(this.scratch.done());
    this.pending_keys.push(this.last);
    this.writeKey(this.keys, this.last);
    this.keys.u8(e.value.kind === "image" ? 0 : 1);
  }

  private writeKey(w: ByteWriter, k: EntryKey): void {
    w.u32(this.paths.get(k.path)!);
    w.u32(k.blkno);
    w.u64(k.lsn);
    w.u64(k.seq);
  }

  private async writeBlock(): Promise<void> {
    const raw = this.pending.done();
    const compressed = zstdCompress(raw);
    const stored = compressed.length < raw.length ? compressed : raw;
    const t = this.block_table;
    t.u64(this.offset);
    t.u32(stored.length);
    t.u32(raw.length);
    t.u32(crc32c(stored));
    t.u32(this.pending_keys.length);
    t.u32(stored === compressed ? FLAG_ZSTD : 0);
    this.writeKey(t, this.pending_keys[0]);
    this.writeKey(t, this.pending_keys[this.pending_keys.length - 1]);
    await writeAll(this.file, stored);
    this.offset += stored.length;
    this.block_count++;
    this.entry_count += this.pending_keys.length;
    this.pending.length = 0;
    this.pending_keys = [];
  }

  /** Writes the last block, `events` (in write order), the index and the footer; then makes the file durable. */
  async finish(events: LayerEvent[]): Promise<void> {
    if (this.pending_keys.length > 0) await this.writeBlock();
    const ev = new ByteWriter();
    for (const e of events) {
      assert(e.lsn >= this.header.lsn_start && e.lsn <= this.header.lsn_end, `layer: event lsn ${e.lsn} outside`);
      writeEvent(ev, e);
    }
    const index = new ByteWriter();
    index.u32(this.paths.size);
    index.bytes(this.path_table.done());
    index.bytes(this.block_table.done());
    index.bytes(this.keys.done());
    index.u64(this.header.covers_from);
    const footer = encodeFooter({
      events_offset: this.offset,
      events_len: ev.length,
      index_offset: this.offset + ev.length,
      index_len: index.length,
      events_crc: crc32c(ev.done()),
      index_crc: crc32c(index.done()),
      block_count: this.block_count,
      entry_count: this.entry_count,
      event_count: events.length,
    });
    try {
      for (const part of [ev.done(), index.done(), footer]) await writeAll(this.file, part);
      await this.file.sync();
    } finally {
      this.file.close();
    }
    await Deno.rename(this.file_path + ".tmp", this.file_path);
    await syncDir(dirname(this.file_path));
  }

  /** Gives up: closes and deletes the temporary file. */
  async abort(): Promise<void> {
    try {
      this.file.close();
    } catch {
      // finish() closed it already
    }
    await Deno.remove(this.file_path + ".tmp").catch(() => {});
  }
}

/** Writes a flushed layer to `file_path` durably (see {@linkcode LayerWriter}); sorts the entries first. */
export async function writeLayerFile(file_path: string, layer: LayerContents): Promise<void> {
  const { entries, events, ...header } = layer;
  const writer = await LayerWriter.create(file_path, { ...header, covers_from: header.generation });
  try {
    for (const e of [...entries].sort(compareEntryKeys)) await writer.add(e);
    await writer.finish(events);
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/**
 * Bounds how many layer files hold an open handle at once: past the limit, the least recently read layer closes
 * its handle and reopens it on its next read.
 */
export class LayerHandleCache {
  private readonly open = new Set<LayerReader>();

  /** @param max_handles most handles open at once (>= 1) */
  constructor(readonly max_handles: number) {
    assert(Number.isInteger(max_handles) && max_handles >= 1, "layer: max_handles must be >= 1");
  }

  /** Layers holding a handle now. */
  get open_count(): number {
    return this.open.size;
  }

  /** Marks `reader`'s handle most recently used and closes the least recently used beyond the limit. */
  touch(reader: LayerReader): void {
    this.open.delete(reader);
    this.open.add(reader);
    for (const r of this.open) {
      if (this.open.size <= this.max_handles) break;
      this.open.delete(r);
      r.releaseHandle();
    }
  }

  /** Stops tracking `reader` (it closed). */
  forget(reader: LayerReader): void {
    this.open.delete(reader);
  }
}

/** An open layer file: header, events and entry index in memory; blocks read on demand (synchronously). */
export class LayerReader {
  /** The layer's identity from its header (and, from version 2 on, the cover record of its index). */
  readonly header: LayerHeader;
  /** File events in write order. */
  readonly events: LayerEvent[];
  /** Every entry's key and location, in (path, blkno, lsn, seq) order. */
  readonly entries: LayerEntryKey[];
  /** Size of the file in bytes. */
  readonly size_bytes: number;
  private readonly blocks: BlockInfo[];
  private file: Deno.FsFile | undefined;
  private closed = false;
  private handles: LayerHandleCache | undefined;

  private constructor(readonly file_path: string, file: Deno.FsFile) {
    this.file = file;
    this.size_bytes = file.statSync().size;
    const corrupt = (reason: string) => new CorruptLayerError(file_path, reason);
    if (this.size_bytes < HEADER_BYTES + FOOTER_BYTES) throw corrupt(`only ${this.size_bytes} bytes long`);
    const head = decodeHeader(this.readAt(0, HEADER_BYTES));
    if (typeof head === "string") throw corrupt(head);
    if (head.version !== 1 && head.version !== 2) throw corrupt(`unsupported format version ${head.version}`);
    const f = decodeFooter(this.readAt(this.size_bytes - FOOTER_BYTES, FOOTER_BYTES));
    if (typeof f === "string") throw corrupt(f);
    const { events_offset, events_len, index_offset, index_len } = f;
    if (
      events_offset < HEADER_BYTES || index_offset !== events_offset + events_len ||
      index_offset + index_len !== this.size_bytes - FOOTER_BYTES
    ) throw corrupt("footer section offsets do not match the file size");
    const events = this.readAt(events_offset, events_len);
    if (crc32c(events) !== f.events_crc) throw corrupt("events checksum mismatch");
    const index = this.readAt(index_offset, index_len);
    if (crc32c(index) !== f.index_crc) throw corrupt("index checksum mismatch");
    let covers_from = head.header.generation;
    try {
      this.events = decodeEvents(new ByteReader(events), f.event_count);
      const r = new ByteReader(index);
      [this.blocks, this.entries] = decodeIndex(r, f.block_count, f.entry_count, events_offset);
      if (head.version >= 2) covers_from = Number(r.u64());
      if (r.pos !== r.buf.length) throw new RangeError("trailing bytes after the index");
    } catch (err) {
      if (err instanceof CorruptLayerError) throw err;
      throw corrupt(`malformed index or events (${(err as Error).message})`);
    }
    if (covers_from > head.header.generation) throw corrupt(`covers generations from ${covers_from}, above its own`);
    this.header = { ...head.header, covers_from };
  }

  /**
   * Opens and validates `file_path` (header, footer, events and index checksums); throws CorruptLayerError. With
   * `handles`, the file handle is closed when other layers are read more recently, and reopened on demand.
   */
  static open(file_path: string, handles?: LayerHandleCache): LayerReader {
    const file = Deno.openSync(file_path, { read: true });
    let reader: LayerReader;
    try {
      reader = new LayerReader(file_path, file);
    } catch (err) {
      file.close();
      throw err;
    }
    reader.handles = handles;
    handles?.touch(reader);
    return reader;
  }

  private readAt(offset: number, length: number): Uint8Array {
    assert(!this.closed, `layer ${this.file_path} is closed`);
    this.file ??= Deno.openSync(this.file_path, { read: true });
    this.handles?.touch(this);
    const out = new Uint8Array(length);
    this.file.seekSync(offset, Deno.SeekMode.Start);
    for (let done = 0; done < length;) {
      const n = this.file.readSync(out.subarray(done));
      if (n === null || n === 0) throw new CorruptLayerError(this.file_path, `short read at ${offset + done}`);
      done += n;
    }
    return out;
  }

  /** The index range `[start, end)` of {@linkcode entries} that holds versions of (path, blkno), oldest first. */
  keyRange(path: string, blkno: number): [number, number] {
    const compare = (i: number) => {
      const e = this.entries[i];
      return e.path !== path ? (e.path < path ? -1 : 1) : e.blkno - blkno;
    };
    return [this.lowerBound((i) => compare(i) < 0), this.lowerBound((i) => compare(i) <= 0)];
  }

  /** First index where `before(i)` turns false (it must be true for a prefix of the entries). */
  private lowerBound(before: (i: number) => boolean): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (before(mid)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Number of data blocks. */
  get block_count(): number {
    return this.blocks.length;
  }

  /** Reads block `block`, checks its CRC, decompresses it and decodes its entries (in index order). */
  readBlock(block: number): LayerEntry[] {
    const info = this.blocks[block];
    assert(info !== undefined, `layer ${this.file_path} has no block ${block}`);
    const stored = this.readAt(info.offset, info.stored_len);
    if (crc32c(stored) !== info.crc) throw new CorruptLayerError(this.file_path, `block ${block} checksum mismatch`);
    let raw = stored;
    try {
      if (info.zstd) raw = zstdDecompress(stored, info.raw_len);
      const r = new ByteReader(raw);
      const out: LayerEntry[] = [];
      for (let slot = 0; slot < info.entry_count; slot++) {
        const e = readEntry(r);
        const key = this.entries[info.first_entry + slot];
        if (compareEntryKeys(e, key) !== 0 || (e.value.kind === "image") !== key.image) {
          throw new RangeError(`entry ${slot} does not match the index`);
        }
        out.push(e);
      }
      if (r.pos !== raw.length) throw new RangeError("trailing bytes");
      return out;
    } catch (err) {
      throw new CorruptLayerError(this.file_path, `block ${block} is malformed (${(err as Error).message})`);
    }
  }

  /** Closes the file handle for now; the next read reopens it. */
  releaseHandle(): void {
    this.file?.close();
    this.file = undefined;
  }

  /** Releases the file handle for good. */
  close(): void {
    this.releaseHandle();
    this.handles?.forget(this);
    this.closed = true;
  }
}
