/**
 * The byte-level pieces of the delta layer file format (`docs/layer_file_format.md`): the record types, key order,
 * little-endian readers and writers, and the encodings of one entry and one event. `layer_file.ts` assembles them
 * into files.
 *
 * @module
 */
import assert from "node:assert";
import { crc32c } from "../crc32c.ts";
import type { Lsn } from "../lsn.ts";
import { BLOCK_SIZE, type FileEvent, type PageValue } from "./page_api.ts";

/** One page version as stored: `seq` orders versions of one (path, blkno) at the same LSN (higher wins). */
export type LayerEntry = { path: string; blkno: number; lsn: Lsn; seq: number; value: PageValue };
/** One file event as stored; `seq` comes from the same counter as the entries' so the two interleave. */
export type LayerEvent = { path: string; lsn: Lsn; seq: number; event: FileEvent };
/**
 * The identity of a layer, from its header and index. The layer holds every version and event of the layers with
 * generations `covers_from..generation` (only its own for a flushed layer, its sources' too for a merged one).
 */
export type LayerHeader = {
  timeline_id: string;
  lsn_start: Lsn;
  lsn_end: Lsn;
  generation: number;
  covers_from: number;
};
/** The fields of an entry that order it: (path, blkno, lsn, seq). */
export type EntryKey = { path: string; blkno: number; lsn: Lsn; seq: number };

/** Bytes of the fixed header at the start of a layer file. */
export const HEADER_BYTES = 64;
/** Bytes of the fixed footer at the end of a layer file. */
export const FOOTER_BYTES = 64;
const MAGIC = new TextEncoder().encode("TARNLAYR");
const END_MAGIC = new TextEncoder().encode("TARNEND1");

/** What the footer says: where the sections lie, their checksums and how many records they hold. */
export type LayerFooter = {
  events_offset: number;
  events_len: number;
  index_offset: number;
  index_len: number;
  events_crc: number;
  index_crc: number;
  block_count: number;
  entry_count: number;
  event_count: number;
};

/** Largest raw (uncompressed) size of a block that the format allows. */
export const LAYER_BLOCK_RAW_MAX_BYTES = 256 * 1024;
/** Block flag: the stored bytes are one zstd frame. */
export const FLAG_ZSTD = 1;

/** Where an entry lives: block number and its position (slot) among that block's entries. */
export type LayerEntryKey = EntryKey & { image: boolean; block: number; slot: number };
/** One row of the block table, with the index of the block's first entry in the key table. */
export type BlockInfo = {
  offset: number;
  stored_len: number;
  raw_len: number;
  crc: number;
  first_entry: number;
  entry_count: number;
  zstd: boolean;
};

/** Event kinds by their code in the file. */
export const EVENT_KINDS = ["create", "resize", "unlink", "mkdir", "rmdir"] as const;

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
export function compareEntryKeys(a: EntryKey, b: EntryKey): number {
  if (a.path !== b.path) return a.path < b.path ? -1 : 1;
  if (a.blkno !== b.blkno) return a.blkno - b.blkno;
  if (a.lsn !== b.lsn) return a.lsn < b.lsn ? -1 : 1;
  return a.seq - b.seq;
}

/** Appends little-endian fields to a growing buffer (each field reserves room before it touches `buf`). */
export class ByteWriter {
  /** Backing store; only the first {@linkcode ByteWriter.length} bytes are written. */
  buf: Uint8Array = new Uint8Array(4096);
  private view = new DataView(this.buf.buffer);
  /** Bytes written so far; may be lowered to drop a tail. */
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
  /** Appends a byte. */
  u8(v: number): void {
    const at = this.room(1);
    this.view.setUint8(at, v);
  }
  /** Appends a 16-bit integer. */
  u16(v: number): void {
    const at = this.room(2);
    this.view.setUint16(at, v, true);
  }
  /** Appends a 32-bit integer. */
  u32(v: number): void {
    const at = this.room(4);
    this.view.setUint32(at, v, true);
  }
  /** Appends a 64-bit integer. */
  u64(v: bigint | number): void {
    const at = this.room(8);
    this.view.setBigUint64(at, BigInt(v), true);
  }
  /** Appends raw bytes. */
  bytes(b: Uint8Array): void {
    const at = this.room(b.length); // grows the buffer first: `this.buf` must be read after
    this.buf.set(b, at);
  }
  /** Appends `u16 length` + UTF-8 bytes. */
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    assert(b.length <= 0xffff, `layer: path longer than 65535 bytes: ${s.slice(0, 80)}...`);
    this.u16(b.length);
    this.bytes(b);
  }
  /** The bytes written (a view: later writes may change or move it). */
  done(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** Reads little-endian fields; running off the end throws RangeError, which readers report as corruption. */
export class ByteReader {
  private readonly view: DataView;
  private last_str_bytes: Uint8Array | undefined;
  private last_str: string | undefined;
  /** Offset of the next field. */
  pos = 0;
  /** @param buf the bytes to read */
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  /** Reads a byte. */
  u8(): number {
    return this.view.getUint8((this.pos += 1) - 1);
  }
  /** Reads a 16-bit integer. */
  u16(): number {
    return this.view.getUint16((this.pos += 2) - 2, true);
  }
  /** Reads a 32-bit integer. */
  u32(): number {
    return this.view.getUint32((this.pos += 4) - 4, true);
  }
  /** Reads a 64-bit integer. */
  u64(): bigint {
    return this.view.getBigUint64((this.pos += 8) - 8, true);
  }
  /** A view of the next `n` bytes. */
  bytes(n: number): Uint8Array {
    if (this.pos + n > this.buf.length) throw new RangeError("read past the end");
    return this.buf.subarray(this.pos, this.pos += n);
  }
  /**
   * Reads `u16 length` + UTF-8 bytes. Entries are sorted by path, so a block repeats one path many times: the
   * previous string is reused when the bytes are the same (decoding each one showed as a tenth of a read's time).
   */
  str(): string {
    const bytes = this.bytes(this.u16());
    const last = this.last_str_bytes;
    if (last !== undefined && last.length === bytes.length && last.every((byte, i) => byte === bytes[i])) {
      return this.last_str!;
    }
    this.last_str_bytes = bytes;
    return this.last_str = UTF8.decode(bytes);
  }
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** Asserts that `e` can be stored in a layer covering `lsn_start..lsn_end`. */
export function assertValidEntry(e: LayerEntry, lsn_start: Lsn, lsn_end: Lsn): void {
  assert(e.lsn >= lsn_start && e.lsn <= lsn_end, `layer: entry lsn ${e.lsn} outside the layer`);
  assert(Number.isInteger(e.blkno) && e.blkno >= 0 && e.blkno <= 0xffff_ffff, `layer: bad blkno ${e.blkno}`);
  if (e.value.kind === "image") assert(e.value.bytes.length === BLOCK_SIZE, "layer: image is not BLOCK_SIZE");
  else {
    for (const r of e.value.ranges) {
      assert(r.offset >= 0 && r.offset + r.bytes.length <= BLOCK_SIZE, "layer: delta range outside the page");
    }
  }
}

/** Appends one entry as it is stored in a block. */
export function writeEntry(w: ByteWriter, e: LayerEntry): void {
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

/** Reads one entry written by {@linkcode writeEntry}; its bytes are views into the reader's buffer. */
export function readEntry(r: ByteReader): LayerEntry {
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

/** Appends one event as it is stored in the events section. */
export function writeEvent(w: ByteWriter, e: LayerEvent): void {
  w.str(e.path);
  w.u64(e.lsn);
  w.u64(e.seq);
  w.u8(EVENT_KINDS.indexOf(e.event.kind));
  w.u64(e.event.kind === "resize" ? e.event.size_bytes : 0);
}

/** Reads one event written by {@linkcode writeEvent}; undefined `event` means an unknown kind code. */
export function readEvent(r: ByteReader): LayerEvent | undefined {
  const path = r.str();
  const lsn = r.u64();
  const seq = Number(r.u64());
  const kind = EVENT_KINDS[r.u8()];
  const size_bytes = Number(r.u64());
  if (kind === undefined) return undefined;
  return { path, lsn, seq, event: kind === "resize" ? { kind, size_bytes } : { kind } };
}

/** Decodes the events section (`count` events); throws RangeError when it is malformed. */
export function decodeEvents(r: ByteReader, count: number): LayerEvent[] {
  const events: LayerEvent[] = [];
  for (let i = 0; i < count; i++) {
    const e = readEvent(r);
    if (e === undefined) throw new RangeError(`event ${i} has an unknown kind`);
    events.push(e);
  }
  if (r.pos !== r.buf.length) throw new RangeError("trailing bytes after the events");
  return events;
}

/**
 * Decodes the path, block and key tables of the index section, leaving `r` after them. Throws RangeError when they
 * are malformed or a block lies outside the data area (`data_end` is the events section's offset).
 */
export function decodeIndex(
  r: ByteReader,
  block_count: number,
  entry_count: number,
  data_end: number,
): [BlockInfo[], LayerEntryKey[]] {
  const paths: string[] = [];
  for (let i = r.u32(); i > 0; i--) paths.push(r.str());
  const blocks: BlockInfo[] = [];
  let first_entry = 0;
  for (let b = 0; b < block_count; b++) {
    const offset = Number(r.u64());
    const info = { offset, stored_len: r.u32(), raw_len: r.u32(), crc: r.u32(), first_entry, entry_count: r.u32() };
    const zstd = (r.u32() & FLAG_ZSTD) !== 0;
    r.pos += 48; // first and last keys: for tools and range scans; the key table below says the same per entry
    if (info.offset < HEADER_BYTES || info.offset + info.stored_len > data_end || info.entry_count === 0) {
      throw new RangeError(`block ${b} lies outside the data section`);
    }
    if (info.raw_len > LAYER_BLOCK_RAW_MAX_BYTES) throw new RangeError(`block ${b} claims ${info.raw_len} raw bytes`);
    blocks.push({ ...info, zstd });
    first_entry += info.entry_count;
  }
  if (first_entry !== entry_count) throw new RangeError("block entry counts do not add up");
  const entries: LayerEntryKey[] = [];
  for (let b = 0; b < block_count; b++) {
    for (let slot = 0; slot < blocks[b].entry_count; slot++) {
      const path = paths[r.u32()];
      if (path === undefined) throw new RangeError("entry names an unknown path");
      const blkno = r.u32();
      const lsn = r.u64();
      const seq = Number(r.u64());
      const image = r.u8() === 0;
      entries.push({ path, blkno, lsn, seq, image, block: b, slot });
    }
  }
  return [blocks, entries];
}

/** Whether two byte strings are equal. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The header of a layer written in format `version` (the cover record lives in the index, not here). */
export function encodeHeader(h: Omit<LayerHeader, "covers_from">, version: number): Uint8Array {
  const w = new ByteWriter();
  w.bytes(MAGIC);
  w.u32(version);
  w.u32(0);
  for (let i = 0; i < 32; i += 2) w.u8(parseInt(h.timeline_id.slice(i, i + 2), 16));
  w.u64(h.lsn_start);
  w.u64(h.lsn_end);
  w.u64(h.generation);
  w.u32(0);
  w.u32(crc32c(w.done()));
  return w.done();
}

/** Decodes and checks a header; returns a reason string when it is not valid. */
export function decodeHeader(
  bytes: Uint8Array,
): { version: number; header: Omit<LayerHeader, "covers_from"> } | string {
  if (!equalBytes(bytes.subarray(0, 8), MAGIC)) return "bad header magic";
  const r = new ByteReader(bytes);
  r.pos = 60;
  if (crc32c(bytes.subarray(0, 60)) !== r.u32()) return "header checksum mismatch";
  r.pos = 8;
  const version = r.u32();
  r.pos = 16;
  const timeline_id = [...r.bytes(16)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return { version, header: { timeline_id, lsn_start: r.u64(), lsn_end: r.u64(), generation: Number(r.u64()) } };
}

/** The footer bytes for `f`. */
export function encodeFooter(f: LayerFooter): Uint8Array {
  const w = new ByteWriter();
  for (const v of [f.events_offset, f.events_len, f.index_offset, f.index_len]) w.u64(v);
  for (const v of [f.events_crc, f.index_crc, f.block_count, f.entry_count, f.event_count]) w.u32(v);
  w.u32(crc32c(w.done()));
  w.bytes(END_MAGIC);
  return w.done();
}

/** Decodes and checks a footer; returns a reason string when it is not valid. */
export function decodeFooter(bytes: Uint8Array): LayerFooter | string {
  if (!equalBytes(bytes.subarray(56), END_MAGIC)) return "bad footer magic (truncated?)";
  const r = new ByteReader(bytes);
  r.pos = 52;
  if (crc32c(bytes.subarray(0, 52)) !== r.u32()) return "footer checksum mismatch";
  r.pos = 0;
  const [events_offset, events_len, index_offset, index_len] = [r.u64(), r.u64(), r.u64(), r.u64()].map(Number);
  const [events_crc, index_crc, block_count, entry_count, event_count] = [r.u32(), r.u32(), r.u32(), r.u32(), r.u32()];
  return {
    events_offset,
    events_len,
    index_offset,
    index_len,
    events_crc,
    index_crc,
    block_count,
    entry_count,
    event_count,
  };
}
