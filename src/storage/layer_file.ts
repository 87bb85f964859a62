/**
 * Immutable delta layer files, format version 1 (byte layout in `docs/layer_file_format.md`): page versions sorted
 * by (path, blkno, lsn, seq) in zstd-compressed blocks with a CRC32C each, the layer's file events, an index of
 * every entry's key and block, and a checksummed footer. Written once (tmp file, fsync, rename, directory fsync);
 * read synchronously, one block at a time.
 *
 * @module
 */
import assert from "node:assert";
import { dirname } from "node:path";
import { crc32c } from "../crc32c.ts";
import type { Lsn } from "../lsn.ts";
import { BLOCK_SIZE, type FileEvent, type PageValue } from "./page_api.ts";
import { initZstd, zstdCompress, zstdDecompress } from "./zstd.ts";

/** The format version this module writes and reads. */
export const LAYER_FORMAT_VERSION = 1;
/** Largest raw (uncompressed) size of a block that the format allows. */
export const LAYER_BLOCK_RAW_MAX_BYTES = 256 * 1024;
/**
 * Raw size this writer fills blocks to. Smaller than the format's maximum because a cold random read decompresses a
 * whole block: 64 KiB blocks read ~4x faster than 256 KiB ones and compress about as well.
 */
export const LAYER_BLOCK_RAW_LIMIT_BYTES = 64 * 1024;
const MAGIC = new TextEncoder().encode("TARNLAYR");
const END_MAGIC = new TextEncoder().encode("TARNEND1");
const HEADER_BYTES = 64;
const FOOTER_BYTES = 64;
const FLAG_ZSTD = 1;
const EVENT_KINDS = ["create", "resize", "unlink", "mkdir", "rmdir"] as const;

/** One page version as stored: `seq` orders versions of one (path, blkno) at the same LSN (higher wins). */
export type LayerEntry = { path: string; blkno: number; lsn: Lsn; seq: number; value: PageValue };
/** One file event as stored; `seq` comes from the same counter as the entries' so the two interleave. */
export type LayerEvent = { path: string; lsn: Lsn; seq: number; event: FileEvent };
/** The identity of a layer, from its header. */
export type LayerHeader = { timeline_id: string; lsn_start: Lsn; lsn_end: Lsn; generation: number };
/** What {@linkcode writeLayerFile} writes: entries in any order (it sorts them), events in write order. */
export type LayerContents = LayerHeader & { entries: LayerEntry[]; events: LayerEvent[] };
/** Where an entry lives: block number and its position (slot) among that block's entries. */
export type LayerEntryKey = {
  path: string;
  blkno: number;
  lsn: Lsn;
  seq: number;
  image: boolean;
  block: number;
  slot: number;
};

/** A layer file that fails validation; names the file and what is wrong with it. */
export class CorruptLayerError extends Error {
  /**
   * @param file_path the layer file
   * @param reason what failed validation
   */
  constructor(readonly file_path: string, readonly reason: string) {
    super(`layer file ${file_path} is corrupt: ${reason}`);
    this.name = "CorruptLayerError";
  }
}

/** Orders entries by (path, blkno, lsn, seq). */
export function compareEntryKeys(
  a: { path: string; blkno: number; lsn: Lsn; seq: number },
  b: { path: string; blkno: number; lsn: Lsn; seq: number },
): number {
  if (a.path !== b.path) return a.path < b.path ? -1 : 1;
  if (a.blkno !== b.blkno) return a.blkno - b.blkno;
  if (a.lsn !== b.lsn) return a.lsn < b.lsn ? -1 : 1;
  return a.seq - b.seq;
}

/** Appends little-endian fields to a growing buffer (each field reserves room before it touches `buf`). */
class ByteWriter {
  buf = new Uint8Array(4096);
  view = new DataView(this.buf.buffer);
  length = 0;
  private room(n: number): number {
    if (this.length + n > this.buf.length) {
      const grown = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      grown.set(this.buf.subarray(0, this.length));
      this.buf = grown;
      this.view = new DataView(grown.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  u8(v: number) {
    const at = this.room(1);
    this.view.setUint8(at, v);
  }
  u16(v: number) {
    const at = this.room(2);
    this.view.setUint16(at, v, true);
  }
  u32(v: number) {
    const at = this.room(4);
    this.view.setUint32(at, v, true);
  }
  u64(v: bigint | number) {
    const at = this.room(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }
  bytes(b: Uint8Array) {
    const at = this.room(b.length); // grows the buffer first: `this.buf` must be read after
    this.buf.set(b, at);
  }
  str(s: string) {
    const b = new TextEncoder().encode(s);
    assert(b.length <= 0xffff, `layer: path longer than 65535 bytes: ${s.slice(0, 80)}...`);
    this.u16(b.length);
    this.bytes(b);
  }
  done(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** Reads little-endian fields; running off the end throws RangeError, which readers report as corruption. */
class ByteReader {
  readonly view: DataView;
  pos = 0;
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  u8(): number {
    return this.view.getUint8((this.pos += 1) - 1);
  }
  u16(): number {
    return this.view.getUint16((this.pos += 2) - 2, true);
  }
  u32(): number {
    return this.view.getUint32((this.pos += 4) - 4, true);
  }
  u64(): bigint {
    return this.view.getBigUint64((this.pos += 8) - 8, true);
  }
  bytes(n: number): Uint8Array {
    if (this.pos + n > this.buf.length) throw new RangeError("read past the end");
    return this.buf.subarray(this.pos, this.pos += n);
  }
  str(): string {
    return new TextDecoder("utf-8", { fatal: true }).decode(this.bytes(this.u16()));
  }
}

function assertValid(layer: LayerContents): void {
  assert(/^[0-9a-f]{32}$/.test(layer.timeline_id), `layer: timeline id must be 32 hex digits: ${layer.timeline_id}`);
  assert(layer.lsn_start >= 0n && layer.lsn_start <= layer.lsn_end, "layer: need 0 <= lsn_start <= lsn_end");
  assert(Number.isSafeInteger(layer.generation) && layer.generation >= 0, "layer: bad generation");
  for (const e of layer.entries) {
    assert(e.lsn >= layer.lsn_start && e.lsn <= layer.lsn_end, `layer: entry lsn ${e.lsn} outside the layer`);
    assert(Number.isInteger(e.blkno) && e.blkno >= 0 && e.blkno <= 0xffff_ffff, `layer: bad blkno ${e.blkno}`);
    if (e.value.kind === "image") assert(e.value.bytes.length === BLOCK_SIZE, "layer: image is not BLOCK_SIZE");
    else {
      for (const r of e.value.ranges) {
        assert(r.offset >= 0 && r.offset + r.bytes.length <= BLOCK_SIZE, "layer: delta range outside the page");
      }
    }
  }
  for (const e of layer.events) {
    assert(e.lsn >= layer.lsn_start && e.lsn <= layer.lsn_end, `layer: event lsn ${e.lsn} outside the layer`);
  }
}

function writeEntry(w: ByteWriter, e: LayerEntry): void {
  w.str(e.path);
  w.u32(e.blkno);
  w.u64(e.lsn);
  w.u64(e.seq);
  if (e.value.kind === "image") {
    w.u8(0);
    w.bytes(e.value.bytes);
    return;
  }
  w.u8(1);
  w.u16(e.value.ranges.length);
  for (const r of e.value.ranges) {
    w.u16(r.offset);
    w.u16(r.bytes.length);
    w.bytes(r.bytes);
  }
}

/** Encodes a whole layer file in memory, as byte strings to write in order (for remote uploads as well as files). */
export function encodeLayer(layer: LayerContents): Uint8Array[] {
  assertValid(layer);
  const entries = [...layer.entries].sort(compareEntryKeys);
  const paths = [...new Set(entries.map((e) => e.path))].sort();
  const path_index = new Map(paths.map((p, i) => [p, i]));
  const header = new ByteWriter();
  header.bytes(MAGIC);
  header.u32(LAYER_FORMAT_VERSION);
  header.u32(0);
  for (let i = 0; i < 32; i += 2) header.u8(parseInt(layer.timeline_id.slice(i, i + 2), 16));
  header.u64(layer.lsn_start);
  header.u64(layer.lsn_end);
  header.u64(layer.generation);
  header.u32(0);
  header.u32(crc32c(header.done()));
  const parts: Uint8Array[] = [header.done()];
  let offset = HEADER_BYTES;
  const block_table = new ByteWriter();
  const keys = new ByteWriter();
  const writeKey = (w: ByteWriter, e: LayerEntry) => {
    w.u32(path_index.get(e.path)!);
    w.u32(e.blkno);
    w.u64(e.lsn);
    w.u64(e.seq);
  };
  let block_count = 0;
  for (let first = 0; first < entries.length;) {
    const raw = new ByteWriter();
    let end = first;
    while (end < entries.length) {
      const before = raw.length;
      writeEntry(raw, entries[end]);
      if (raw.length > LAYER_BLOCK_RAW_LIMIT_BYTES && end > first) {
        raw.length = before;
        break;
      }
      end++;
    }
    const raw_bytes = raw.done();
    const compressed = zstdCompress(raw_bytes);
    const stored = compressed.length < raw_bytes.length ? compressed : raw_bytes;
    block_table.u64(offset);
    block_table.u32(stored.length);
    block_table.u32(raw_bytes.length);
    block_table.u32(crc32c(stored));
    block_table.u32(end - first);
    block_table.u32(stored === compressed ? FLAG_ZSTD : 0);
    writeKey(block_table, entries[first]);
    writeKey(block_table, entries[end - 1]);
    for (let i = first; i < end; i++) {
      writeKey(keys, entries[i]);
      keys.u8(entries[i].value.kind === "image" ? 0 : 1);
    }
    parts.push(stored);
    offset += stored.length;
    block_count++;
    first = end;
  }
  const events = new ByteWriter();
  for (const e of layer.events) {
    events.str(e.path);
    events.u64(e.lsn);
    events.u64(e.seq);
    events.u8(EVENT_KINDS.indexOf(e.event.kind));
    events.u64(e.event.kind === "resize" ? e.event.size_bytes : 0);
  }
  const index = new ByteWriter();
  index.u32(paths.length);
  for (const p of paths) index.str(p);
  index.bytes(block_table.done());
  index.bytes(keys.done());
  const footer = new ByteWriter();
  footer.u64(offset);
  footer.u64(events.length);
  footer.u64(offset + events.length);
  footer.u64(index.length);
  footer.u32(crc32c(events.done()));
  footer.u32(crc32c(index.done()));
  footer.u32(block_count);
  footer.u32(entries.length);
  footer.u32(layer.events.length);
  footer.u32(crc32c(footer.done()));
  footer.bytes(END_MAGIC);
  parts.push(events.done(), index.done(), footer.done());
  return parts;
}

/** Writes `layer` to `file_path` durably: via `file_path + ".tmp"`, fsync, rename, then fsync of the directory. */
export async function writeLayerFile(file_path: string, layer: LayerContents): Promise<void> {
  await initZstd();
  const parts = encodeLayer(layer);
  const tmp = file_path + ".tmp";
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    for (const part of parts) {
      for (let done = 0; done < part.length;) done += await file.write(part.subarray(done));
    }
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(tmp, file_path);
  await syncDir(dirname(file_path));
}

/** fsync of a directory, so that a rename or unlink in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}

type BlockInfo = {
  offset: number;
  stored_len: number;
  raw_len: number;
  crc: number;
  first_entry: number;
  entry_count: number;
  zstd: boolean;
};

/** An open layer file: header, events and entry index in memory; blocks read on demand (synchronously). */
export class LayerReader {
  /** The layer's identity from its header. */
  readonly header: LayerHeader;
  /** File events in write order. */
  readonly events: LayerEvent[] = [];
  /** Every entry's key and location, in (path, blkno, lsn, seq) order. */
  readonly entries: LayerEntryKey[] = [];
  /** Size of the file in bytes. */
  readonly size_bytes: number;
  private readonly blocks: BlockInfo[] = [];
  private file: Deno.FsFile | undefined;

  private constructor(readonly file_path: string, file: Deno.FsFile) {
    this.file = file;
    this.size_bytes = file.statSync().size;
    const corrupt = (reason: string) => new CorruptLayerError(file_path, reason);
    if (this.size_bytes < HEADER_BYTES + FOOTER_BYTES) throw corrupt(`only ${this.size_bytes} bytes long`);
    const head = this.readAt(0, HEADER_BYTES);
    if (!equalBytes(head.subarray(0, 8), MAGIC)) throw corrupt("bad header magic");
    if (crc32c(head.subarray(0, 60)) !== new DataView(head.buffer).getUint32(60, true)) {
      throw corrupt("header checksum mismatch");
    }
    const h = new ByteReader(head);
    h.pos = 8;
    const version = h.u32();
    if (version !== LAYER_FORMAT_VERSION) throw corrupt(`unsupported format version ${version}`);
    h.pos = 16;
    const timeline_id = [...h.bytes(16)].map((b) => b.toString(16).padStart(2, "0")).join("");
    this.header = { timeline_id, lsn_start: h.u64(), lsn_end: h.u64(), generation: Number(h.u64()) };
    const foot = this.readAt(this.size_bytes - FOOTER_BYTES, FOOTER_BYTES);
    if (!equalBytes(foot.subarray(56), END_MAGIC)) throw corrupt("bad footer magic (truncated?)");
    const f = new ByteReader(foot);
    if (crc32c(foot.subarray(0, 52)) !== f.view.getUint32(52, true)) throw corrupt("footer checksum mismatch");
    const [events_offset, events_len, index_offset, index_len] = [f.u64(), f.u64(), f.u64(), f.u64()].map(Number);
    const [events_crc, index_crc, block_count, entry_count, event_count] = [
      f.u32(),
      f.u32(),
      f.u32(),
      f.u32(),
      f.u32(),
    ];
    if (
      events_offset < HEADER_BYTES || index_offset !== events_offset + events_len ||
      index_offset + index_len !== this.size_bytes - FOOTER_BYTES
    ) throw corrupt("footer section offsets do not match the file size");
    const events = this.readAt(events_offset, events_len);
    if (crc32c(events) !== events_crc) throw corrupt("events checksum mismatch");
    const index = this.readAt(index_offset, index_len);
    if (crc32c(index) !== index_crc) throw corrupt("index checksum mismatch");
    try {
      this.parseEvents(new ByteReader(events), event_count);
      this.parseIndex(new ByteReader(index), block_count, entry_count, events_offset);
    } catch (err) {
      if (err instanceof CorruptLayerError) throw err;
      throw corrupt(`malformed index or events (${(err as Error).message})`);
    }
  }

  /** Opens and validates `file_path` (header, footer, events and index checksums); throws CorruptLayerError. */
  static open(file_path: string): LayerReader {
    const file = Deno.openSync(file_path, { read: true });
    try {
      return new LayerReader(file_path, file);
    } catch (err) {
      file.close();
      throw err;
    }
  }

  private parseEvents(r: ByteReader, count: number): void {
    for (let i = 0; i < count; i++) {
      const path = r.str();
      const lsn = r.u64();
      const seq = Number(r.u64());
      const kind = EVENT_KINDS[r.u8()];
      const size_bytes = Number(r.u64());
      if (kind === undefined) throw new CorruptLayerError(this.file_path, `event ${i} has an unknown kind`);
      const event: FileEvent = kind === "resize" ? { kind, size_bytes } : { kind };
      this.events.push({ path, lsn, seq, event });
    }
    if (r.pos !== r.buf.length) throw new RangeError("trailing bytes after the events");
  }

  private parseIndex(r: ByteReader, block_count: number, entry_count: number, data_end: number): void {
    const paths: string[] = [];
    for (let i = r.u32(); i > 0; i--) paths.push(r.str());
    let first_entry = 0;
    for (let b = 0; b < block_count; b++) {
      const offset = Number(r.u64());
      const info = { offset, stored_len: r.u32(), raw_len: r.u32(), crc: r.u32(), first_entry, entry_count: r.u32() };
      const zstd = (r.u32() & FLAG_ZSTD) !== 0;
      r.pos += 48; // first and last keys: for tools and range scans; the key table below says the same per entry
      if (info.offset < HEADER_BYTES || info.offset + info.stored_len > data_end || info.entry_count === 0) {
        throw new CorruptLayerError(this.file_path, `block ${b} lies outside the data section`);
      }
      if (info.raw_len > LAYER_BLOCK_RAW_MAX_BYTES) {
        throw new CorruptLayerError(this.file_path, `block ${b} claims ${info.raw_len} raw bytes`);
      }
      this.blocks.push({ ...info, zstd });
      first_entry += info.entry_count;
    }
    if (first_entry !== entry_count) throw new RangeError("block entry counts do not add up");
    for (let b = 0; b < block_count; b++) {
      for (let slot = 0; slot < this.blocks[b].entry_count; slot++) {
        const path = paths[r.u32()];
        if (path === undefined) throw new RangeError("entry names an unknown path");
        const blkno = r.u32();
        const lsn = r.u64();
        const seq = Number(r.u64());
        const image = r.u8() === 0;
        this.entries.push({ path, blkno, lsn, seq, image, block: b, slot });
      }
    }
    if (r.pos !== r.buf.length) throw new RangeError("trailing bytes after the index");
  }

  private readAt(offset: number, length: number): Uint8Array {
    assert(this.file !== undefined, `layer ${this.file_path} is closed`);
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
        const e = decodeEntry(r);
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

  /** Releases the file handle. */
  close(): void {
    this.file?.close();
    this.file = undefined;
  }
}

function decodeEntry(r: ByteReader): LayerEntry {
  const path = r.str();
  const blkno = r.u32();
  const lsn = r.u64();
  const seq = Number(r.u64());
  const kind = r.u8();
  if (kind === 0) return { path, blkno, lsn, seq, value: { kind: "image", bytes: r.bytes(BLOCK_SIZE) } };
  if (kind !== 1) throw new RangeError(`unknown value kind ${kind}`);
  const ranges = [];
  for (let i = r.u16(); i > 0; i--) {
    const offset = r.u16();
    ranges.push({ offset, bytes: r.bytes(r.u16()) });
  }
  return { path, blkno, lsn, seq, value: { kind: "delta", ranges } };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
