/**
 * One WAL segment of a {@linkcode WalLog}: the on-disk format (version 1, see `docs/wal_segment_format.md`), the
 * index from WAL offsets to file positions, and the segment's buffered and durable bytes.
 *
 * @module
 */
import { crc32c } from "../crc32c.ts";
import type { Lsn } from "../lsn.ts";

/** The on-disk format version this code writes and reads. */
export const WAL_SEGMENT_FORMAT_VERSION = 1;
/** `TWAL` in ASCII, read as a little-endian u32. */
const FILE_MAGIC = 0x4c415754;
/** `TWFR` in ASCII, read as a little-endian u32. */
const FRAME_MAGIC = 0x52465754;
/** Size of the file header in bytes. */
export const FILE_HEADER_BYTES = 24;
/** Size of a frame header in bytes. */
const FRAME_HEADER_BYTES = 20;
/** Buffers start this small; most flushes carry a few KB. */
const INITIAL_BUFFER_BYTES = 64 * 1024;
/** A buffer grown past this by a large flush is dropped afterwards so idle segments do not pin memory. */
const RETAINED_BUFFER_BYTES = 4 * 1024 * 1024;

/** Thrown when WAL on disk is damaged where damage cannot be a torn write: the data must not be trusted. */
export class CorruptWalError extends Error {
  /**
   * @param path the damaged file
   * @param offset_bytes where in the file the damage starts
   * @param reason what is wrong
   */
  constructor(readonly path: string, readonly offset_bytes: number, reason: string) {
    super(`corrupt WAL in ${path} at byte ${offset_bytes}: ${reason}`);
    this.name = "CorruptWalError";
  }
}

/** A growable byte buffer reused across flushes, so the commit path does not allocate. */
class ByteBuffer {
  bytes: Uint8Array;
  view: DataView;
  length = 0;

  constructor(capacity_bytes: number) {
    this.bytes = new Uint8Array(capacity_bytes);
    this.view = new DataView(this.bytes.buffer);
  }

  /** Makes room for `size_bytes` more and returns where they start. */
  reserve(size_bytes: number): number {
    const at = this.length;
    if (at + size_bytes > this.bytes.length) {
      const grown = new Uint8Array(Math.max(this.bytes.length * 2, at + size_bytes));
      grown.set(this.bytes.subarray(0, at));
      this.bytes = grown;
      this.view = new DataView(grown.buffer);
    }
    this.length = at + size_bytes;
    return at;
  }
}

/**
 * Where each byte of a segment's content lives in its file: sorted, non-overlapping extents
 * (offset_start, offset_end, file position of offset_start), packed in a Float64Array to keep large indexes small.
 */
export class ExtentIndex {
  #data = new Float64Array(3 * 64);
  #count = 0;
  /** The segment offset where the content ends. */
  end_offset = 0;

  /** Applies a frame: drops whatever it supersedes (from `offset_start` on), then records its bytes. */
  push(offset_start: number, offset_end: number, position: number): void {
    while (this.#count > 0 && this.#data[3 * (this.#count - 1)] >= offset_start) this.#count--;
    if (this.#count > 0 && this.#data[3 * (this.#count - 1) + 1] > offset_start) {
      this.#data[3 * (this.#count - 1) + 1] = offset_start;
    }
    if (offset_end > offset_start) {
      if (3 * (this.#count + 1) > this.#data.length) {
        const grown = new Float64Array(this.#data.length * 2);
        grown.set(this.#data);
        this.#data = grown;
      }
      const at = 3 * this.#count++;
      this.#data[at] = offset_start;
      this.#data[at + 1] = offset_end;
      this.#data[at + 2] = position;
    }
    this.end_offset = offset_end;
  }

  /** Calls `visit` for each piece of [offset_start, offset_end) that holds bytes, in order. */
  forEach(
    offset_start: number,
    offset_end: number,
    visit: (offset: number, position: number, size_bytes: number) => void,
  ): void {
    let low = 0;
    let high = this.#count;
    while (low < high) { // first extent ending after offset_start
      const mid = (low + high) >> 1;
      if (this.#data[3 * mid + 1] <= offset_start) low = mid + 1;
      else high = mid;
    }
    for (let i = low; i < this.#count && this.#data[3 * i] < offset_end; i++) {
      const from = Math.max(offset_start, this.#data[3 * i]);
      const to = Math.min(offset_end, this.#data[3 * i + 1]);
      visit(from, this.#data[3 * i + 2] + (from - this.#data[3 * i]), to - from);
    }
  }
}

/** What scanning a segment file's frames found. */
export interface ScanResult {
  /** The extents of every good frame. */
  index: ExtentIndex;
  /** The LSN of the first good frame; undefined when there is none. */
  first_lsn?: Lsn;
  /** Bytes up to the end of the last good frame. */
  valid_bytes: number;
  /** The first bad frame, if any: where it starts and what is wrong with it. */
  bad?: { offset_bytes: number; reason: string };
}

/** Writes the file header of segment `segno` into a new buffer. */
function encodeFileHeader(buffer: ByteBuffer, segno: bigint, segment_size: number): void {
  const at = buffer.reserve(FILE_HEADER_BYTES);
  buffer.view.setUint32(at, FILE_MAGIC, true);
  buffer.view.setUint32(at + 4, WAL_SEGMENT_FORMAT_VERSION, true);
  buffer.view.setUint32(at + 8, segment_size, true);
  buffer.view.setBigUint64(at + 12, segno, true);
  buffer.view.setUint32(at + 20, crc32c(buffer.bytes.subarray(at, at + 20)), true);
}

/** Checks the file header at the start of `bytes`; throws {@linkcode CorruptWalError} when it is not ours. */
function checkFileHeader(bytes: Uint8Array, path: string, segno: bigint, segment_size: number): void {
  if (bytes.length < FILE_HEADER_BYTES) throw new CorruptWalError(path, 0, "file header is truncated");
  const view = new DataView(bytes.buffer, bytes.byteOffset, FILE_HEADER_BYTES);
  if (view.getUint32(0, true) !== FILE_MAGIC) throw new CorruptWalError(path, 0, "bad file magic");
  if (view.getUint32(20, true) !== crc32c(bytes.subarray(0, 20))) {
    throw new CorruptWalError(path, 0, "file header checksum mismatch");
  }
  const version = view.getUint32(4, true);
  if (version !== WAL_SEGMENT_FORMAT_VERSION) throw new CorruptWalError(path, 4, `unknown format version ${version}`);
  if (view.getUint32(8, true) !== segment_size) {
    throw new CorruptWalError(path, 8, `segment size ${view.getUint32(8, true)}, expected ${segment_size}`);
  }
  if (view.getBigUint64(12, true) !== segno) throw new CorruptWalError(path, 12, "segment number does not match name");
}

/**
 * Reads the frames of a whole segment file. `may_start_late` allows the first frame to start after the segment
 * start (the log's first segment); every later frame must start at or before the content end so far.
 */
export function scanSegment(
  bytes: Uint8Array,
  path: string,
  segno: bigint,
  segment_size: number,
  may_start_late: boolean,
): ScanResult {
  checkFileHeader(bytes, path, segno, segment_size);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const base_lsn = segno * BigInt(segment_size);
  const result: ScanResult = { index: new ExtentIndex(), valid_bytes: FILE_HEADER_BYTES };
  let position = FILE_HEADER_BYTES;
  const fail = (reason: string) => {
    result.bad = { offset_bytes: position, reason };
    return result;
  };
  while (position < bytes.length) {
    if (bytes.length - position < FRAME_HEADER_BYTES) return fail("frame header is truncated");
    if (view.getUint32(position, true) !== FRAME_MAGIC) return fail("bad frame magic");
    const lsn_start = view.getBigUint64(position + 8, true);
    const size_bytes = view.getUint32(position + 16, true);
    const payload_end = position + FRAME_HEADER_BYTES + size_bytes;
    if (payload_end > bytes.length) return fail("frame payload is truncated");
    if (view.getUint32(position + 4, true) !== crc32c(bytes.subarray(position + 8, payload_end))) {
      return fail("frame checksum mismatch");
    }
    const offset = lsn_start - base_lsn;
    if (offset < 0n || offset + BigInt(size_bytes) > BigInt(segment_size)) return fail("frame outside its segment");
    const first = result.first_lsn === undefined;
    if (first ? offset !== 0n && !may_start_late : Number(offset) > result.index.end_offset) {
      return fail("frame leaves a gap");
    }
    result.first_lsn ??= lsn_start;
    result.index.push(Number(offset), Number(offset) + size_bytes, position + FRAME_HEADER_BYTES);
    position = payload_end;
    result.valid_bytes = position;
  }
  return result;
}

/** Where a segment file's content starts, read from its header and first frame header without a scan. */
export async function readFirstLsn(path: string, segno: bigint, segment_size: number): Promise<Lsn> {
  const bytes = new Uint8Array(FILE_HEADER_BYTES + FRAME_HEADER_BYTES);
  using file = await Deno.open(path, { read: true });
  let done = 0;
  while (done < bytes.length) {
    const n = await file.read(bytes.subarray(done));
    if (n === null) break;
    done += n;
  }
  checkFileHeader(bytes.subarray(0, done), path, segno, segment_size);
  const view = new DataView(bytes.buffer);
  const lsn = view.getBigUint64(FILE_HEADER_BYTES + 8, true);
  const offset = lsn - segno * BigInt(segment_size);
  if (
    done < bytes.length || view.getUint32(FILE_HEADER_BYTES, true) !== FRAME_MAGIC || offset < 0n ||
    offset >= BigInt(segment_size)
  ) {
    throw new CorruptWalError(path, FILE_HEADER_BYTES, "no readable first frame");
  }
  return lsn;
}

/** Writes `bytes` whole: a write may be short. */
async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
}

/**
 * One segment's frames: those durable in its file, those being written by the flush in progress (`inflight`) and
 * those appended since (`pending`). Positions count file bytes as if all three were already written, in that order.
 * Without a path the segment lives in memory only and everything stays pending.
 */
export class WalSegment {
  /** Extents of the content; undefined until the file of an old segment is first scanned. */
  index: ExtentIndex | undefined;
  /** Bytes of the file known durable. */
  durable_bytes = 0;
  /** True until the file exists under its final name. */
  needs_create: boolean;
  #inflight: ByteBuffer;
  #pending: ByteBuffer;
  #writer: Deno.FsFile | undefined;
  #reader: Deno.FsFile | undefined;

  /**
   * @param segno the PostgreSQL segment number
   * @param segment_size segment size in bytes
   * @param path the segment file, or undefined in memory-only mode
   * @param on_disk whether the file already exists (opened) or is new
   */
  constructor(
    readonly segno: bigint,
    readonly segment_size: number,
    readonly path: string | undefined,
    on_disk: boolean,
  ) {
    this.needs_create = !on_disk && path !== undefined;
    this.#inflight = new ByteBuffer(on_disk ? 0 : INITIAL_BUFFER_BYTES);
    this.#pending = new ByteBuffer(on_disk ? 0 : INITIAL_BUFFER_BYTES);
    if (!on_disk) {
      this.index = new ExtentIndex();
      encodeFileHeader(this.#pending, segno, segment_size);
    }
  }

  /** The LSN of the segment's first byte. */
  get base_lsn(): Lsn {
    return this.segno * BigInt(this.segment_size);
  }

  /** Uses the result of scanning the file (at open, or lazily on first use). */
  adoptScan(scan: ScanResult, writer?: Deno.FsFile): void {
    this.index = scan.index;
    this.durable_bytes = scan.valid_bytes;
    this.#writer = writer;
  }

  /** Buffers a frame holding `payload` at `lsn_start`; the index must be loaded. */
  appendFrame(lsn_start: Lsn, payload: Uint8Array): void {
    const buffer = this.#pending;
    const position = this.durable_bytes + this.#inflight.length + buffer.length;
    const at = buffer.reserve(FRAME_HEADER_BYTES + payload.length);
    buffer.view.setUint32(at, FRAME_MAGIC, true);
    buffer.view.setBigUint64(at + 8, lsn_start, true);
    buffer.view.setUint32(at + 16, payload.length, true);
    buffer.bytes.set(payload, at + FRAME_HEADER_BYTES);
    buffer.view.setUint32(at + 4, crc32c(buffer.bytes.subarray(at + 8, buffer.length)), true);
    const offset = Number(lsn_start - this.base_lsn);
    this.index!.push(offset, offset + payload.length, position + FRAME_HEADER_BYTES);
  }

  /** Copies the content of [offset_start, offset_end) into `into` at `into_offset`; holes stay as they are. */
  readContent(offset_start: number, offset_end: number, into: Uint8Array, into_offset: number): void {
    this.index!.forEach(offset_start, offset_end, (offset, position, size_bytes) => {
      this.#readStream(position, into.subarray(into_offset + offset - offset_start).subarray(0, size_bytes));
    });
  }

  #readStream(position: number, into: Uint8Array): void {
    let done = 0;
    if (position < this.durable_bytes) {
      const part = into.subarray(0, Math.min(into.length, this.durable_bytes - position));
      this.#reader ??= Deno.openSync(this.path!, { read: true });
      this.#reader.seekSync(position, Deno.SeekMode.Start);
      while (done < part.length) {
        const n = this.#reader.readSync(part.subarray(done));
        if (n === null || n === 0) throw new CorruptWalError(this.path!, position + done, "file ends early");
        done += n;
      }
    }
    for (const buffer of [this.#inflight, this.#pending]) {
      const start = this.durable_bytes + (buffer === this.#pending ? this.#inflight.length : 0);
      if (done < into.length && position + done < start + buffer.length) {
        const from = position + done - start;
        const part = buffer.bytes.subarray(from, Math.min(buffer.length, from + into.length - done));
        into.set(part, done);
        done += part.length;
      }
    }
  }

  /** Hands the pending frames to a flush: appends go on into the other buffer meanwhile. */
  beginFlush(): void {
    [this.#inflight, this.#pending] = [this.#pending, this.#inflight];
  }

  /**
   * Writes the handed-over frames with one write and makes them durable. A new file is written under a temporary
   * name and renamed, so a file under its final name always starts with a whole header and a good frame.
   */
  async writeFlush(syncDir: () => Promise<void>): Promise<void> {
    const bytes = this.#inflight.bytes.subarray(0, this.#inflight.length);
    if (this.needs_create) {
      const temporary_path = `${this.path}.partial`;
      const file = await Deno.open(temporary_path, { write: true, create: true, truncate: true });
      this.#writer = file;
      await writeAll(file, bytes);
      await file.syncData();
      await Deno.rename(temporary_path, this.path!);
      await syncDir();
      this.needs_create = false;
    } else {
      // Synchronous calls on the commit path: an async write and fdatasync each cost a trip through the runtime's
      // thread pool (~0.3 ms a commit, measured), and the committing session waits for them either way.
      this.#writer ??= Deno.openSync(this.path!, { append: true });
      for (let done = 0; done < bytes.length;) done += this.#writer.writeSync(bytes.subarray(done));
      this.#writer.syncDataSync();
    }
    this.durable_bytes += this.#inflight.length;
    this.#inflight.length = 0;
    if (this.#inflight.bytes.length > RETAINED_BUFFER_BYTES) this.#inflight = new ByteBuffer(INITIAL_BUFFER_BYTES);
  }

  /** Closes the write handle: nothing more will be appended to this segment. */
  closeWriter(): void {
    this.#writer?.close();
    this.#writer = undefined;
  }

  /** Closes the read handle (reopened on the next read). */
  closeReader(): void {
    this.#reader?.close();
    this.#reader = undefined;
  }

  /** Whether a read handle is open. */
  get has_reader(): boolean {
    return this.#reader !== undefined;
  }
}
