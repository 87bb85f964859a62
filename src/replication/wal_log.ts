/**
 * The embedded stand-in for a safekeeper quorum: keeps the exact WAL bytes PostgreSQL wrote, durable on local disk
 * (one file per PostgreSQL WAL segment, format in `docs/wal_segment_format.md`) or in memory only.
 *
 * @module
 */
import { formatLsn, type Lsn, parseSegmentFileName, segmentFileName } from "../lsn.ts";
import type { WalSink, WalSource } from "./wal_api.ts";
import { CorruptWalError, FILE_HEADER_BYTES, readFirstLsn, scanSegment, WalSegment } from "./wal_segment_file.ts";

export { CorruptWalError };

/** The WAL log is a single timeline; branches get their own log. */
const TIMELINE_ID = 1;
const FILE_SUFFIX = ".tarnwal";
/** Read handles kept open at once: reads of old segments are rare, file descriptors are not free. */
const MAX_OPEN_READERS = 16;
const NO_BYTES = new Uint8Array(0);

/** Thrown when a range of WAL is asked for that the log does not hold (or that is not a range). */
export class WalRangeError extends RangeError {
  /**
   * @param lsn_start start of the range asked for
   * @param lsn_end end of the range asked for
   * @param held_start_lsn the first LSN the log holds
   * @param held_end_lsn the end of what the log holds
   */
  constructor(
    readonly lsn_start: Lsn,
    readonly lsn_end: Lsn,
    readonly held_start_lsn: Lsn,
    readonly held_end_lsn: Lsn,
  ) {
    super(
      `WAL [${formatLsn(lsn_start)}, ${formatLsn(lsn_end)}) is not held: ` +
        `the log holds [${formatLsn(held_start_lsn)}, ${formatLsn(held_end_lsn)})`,
    );
    this.name = "WalRangeError";
  }
}

/** Options of {@linkcode WalLog.open}. */
export interface WalLogOptions {
  /** Directory whose `wal/` subdirectory holds the segment files; memory only when absent. */
  dir?: string;
  /** PostgreSQL's WAL segment size in bytes (a power of two). */
  segment_size: number;
}

/** A durable, append-only log of WAL bytes with truncation: implements {@linkcode WalSink} and {@linkcode WalSource}. */
export class WalLog implements WalSink, WalSource {
  /** What opening had to repair (a torn tail dropped, leftover files removed). */
  readonly warnings: string[] = [];
  readonly #segment_size: number;
  readonly #wal_dir: string | undefined;
  #dir_handle: Deno.FsFile | undefined;
  /** Held segments by number, in ascending order. */
  readonly #segments = new Map<bigint, WalSegment>();
  #empty = true;
  #start_lsn = 0n;
  #end_lsn = 0n;
  #flush_lsn = 0n;
  /** What the flush in progress will make durable, lowered by truncations made meanwhile. */
  #flushing_to = 0n;
  readonly #dirty = new Set<WalSegment>();
  /** Segments cut off by a truncation whose files are still to be deleted. */
  #doomed_tail: WalSegment[] = [];
  /** Segments given up by retention whose files are still to be deleted. */
  #doomed_head: WalSegment[] = [];
  /** Segments whose write handle is open: the tail, and segments a flush wrote to. */
  readonly #writing = new Set<WalSegment>();
  /** Flushes and deletions run one at a time, in call order. */
  #chain: Promise<unknown> = Promise.resolve();
  #queued_tasks = 0;
  #failure: unknown;
  #closed = false;
  /** Segments with an open read handle, least recently read first. */
  readonly #readers = new Set<WalSegment>();

  private constructor(segment_size: number, wal_dir: string | undefined) {
    this.#segment_size = segment_size;
    this.#wal_dir = wal_dir;
  }

  /** Opens (or creates) a log; with `dir`, finds the end by scanning the newest segment file only. */
  static async open(opts: WalLogOptions): Promise<WalLog> {
    const size = opts.segment_size;
    if (!Number.isInteger(size) || size < 4096 || size > 2 ** 30 || (size & (size - 1)) !== 0) {
      throw new RangeError(`segment_size ${size} must be a power of two between 4 KiB and 1 GiB`);
    }
    const log = new WalLog(size, opts.dir === undefined ? undefined : `${opts.dir}/wal`);
    if (log.#wal_dir !== undefined) await log.#load(log.#wal_dir);
    return log;
  }

  /** The first LSN still held (0 while the log is empty). */
  get start_lsn(): Lsn {
    return this.#start_lsn;
  }

  /** The end of everything appended, durable or not. */
  get end_lsn(): Lsn {
    return this.#end_lsn;
  }

  /** The end of what is durable. */
  get flush_lsn(): Lsn {
    return this.#flush_lsn;
  }

  async #load(wal_dir: string): Promise<void> {
    await Deno.mkdir(wal_dir, { recursive: true });
    this.#dir_handle = await Deno.open(wal_dir, { read: true });
    const segnos: bigint[] = [];
    for await (const entry of Deno.readDir(wal_dir)) {
      if (entry.name.endsWith(`${FILE_SUFFIX}.partial`)) {
        // A segment being created when the process died: its flush never completed, so nothing in it was promised.
        await Deno.remove(`${wal_dir}/${entry.name}`);
        this.warnings.push(`removed ${entry.name}, a segment file whose creation did not complete`);
        continue;
      }
      if (!entry.name.endsWith(FILE_SUFFIX)) continue;
      const parsed = parseSegmentFileName(entry.name.slice(0, -FILE_SUFFIX.length), this.#segment_size);
      if (parsed?.timeline_id === TIMELINE_ID) segnos.push(parsed.segno);
    }
    segnos.sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
    for (let i = 1; i < segnos.length; i++) {
      // Deletion order (see #deleteDoomed) never leaves a hole, so a missing file is damage.
      if (segnos[i] !== segnos[i - 1] + 1n) {
        throw new CorruptWalError(this.#path(segnos[i - 1] + 1n), 0, "file is missing");
      }
    }
    if (segnos.length === 0) return;
    const newest = await this.#openNewest(segnos.at(-1)!, segnos.length === 1);
    for (const segno of segnos.slice(0, -1)) {
      this.#segments.set(segno, new WalSegment(segno, this.#segment_size, this.#path(segno), true));
    }
    this.#segments.set(newest.segno, newest);
    this.#writing.add(newest);
    this.#empty = false;
    this.#end_lsn = newest.base_lsn + BigInt(newest.index!.end_offset);
    this.#flush_lsn = this.#end_lsn;
    if (segnos.length > 1) {
      this.#start_lsn = await readFirstLsn(this.#path(segnos[0]), segnos[0], this.#segment_size);
    }
  }

  /** Scans the newest segment file, dropping a torn tail: only the last flush's write can be torn. */
  async #openNewest(segno: bigint, only: boolean): Promise<WalSegment> {
    const path = this.#path(segno);
    const bytes = await Deno.readFile(path);
    const scan = scanSegment(bytes, path, segno, this.#segment_size, only);
    if (scan.first_lsn === undefined) {
      // Files are renamed into place only after their first frame is durable, so this is damage, not a torn write.
      throw new CorruptWalError(
        path,
        scan.bad?.offset_bytes ?? FILE_HEADER_BYTES,
        "the newest segment has no good frame",
      );
    }
    const writer = await Deno.open(path, { append: true });
    if (scan.bad !== undefined) {
      await writer.truncate(scan.valid_bytes);
      await writer.sync();
      this.warnings.push(
        `dropped a torn tail of ${path}: ${scan.bad.reason} at byte ${scan.bad.offset_bytes}, ` +
          `${bytes.length - scan.valid_bytes} bytes`,
      );
    }
    if (only) this.#start_lsn = scan.first_lsn;
    const segment = new WalSegment(segno, this.#segment_size, path, true);
    segment.adoptScan(scan, writer);
    return segment;
  }

  /**
   * Buffers `bytes` at `lsn_start` (copied). A `lsn_start` below the end truncates the log there first; above the
   * end is a caller bug (zero-fill gaps); below {@linkcode start_lsn} throws {@linkcode WalRangeError}.
   */
  append(lsn_start: Lsn, bytes: Uint8Array): void {
    this.#checkUsable();
    if (this.#empty) {
      this.#empty = false;
      this.#start_lsn = this.#end_lsn = this.#flush_lsn = lsn_start;
    }
    if (lsn_start > this.#end_lsn) {
      throw new Error(`append at ${formatLsn(lsn_start)} leaves a gap after the end ${formatLsn(this.#end_lsn)}`);
    }
    if (lsn_start < this.#start_lsn) {
      throw new WalRangeError(lsn_start, lsn_start + BigInt(bytes.length), this.#start_lsn, this.#end_lsn);
    }
    if (lsn_start < this.#end_lsn) this.#truncate(lsn_start, bytes.length === 0);
    const size = BigInt(this.#segment_size);
    for (let done = 0; done < bytes.length;) {
      const lsn = lsn_start + BigInt(done);
      const segno = lsn / size;
      const piece_bytes = Math.min(bytes.length - done, Number((segno + 1n) * size - lsn));
      const segment = this.#segmentForAppend(segno);
      segment.appendFrame(lsn, bytes.subarray(done, done + piece_bytes));
      this.#dirty.add(segment);
      done += piece_bytes;
    }
    this.#end_lsn = lsn_start + BigInt(bytes.length);
  }

  #truncate(lsn: Lsn, needs_marker: boolean): void {
    const segno = lsn / BigInt(this.#segment_size);
    const at_boundary = lsn % BigInt(this.#segment_size) === 0n;
    for (const segment of [...this.#segments.values()]) {
      if (segment.segno > segno || (segment.segno === segno && at_boundary)) this.#drop(segment, this.#doomed_tail);
    }
    if (needs_marker && !at_boundary) {
      // An empty frame: a reader applying frames in order cuts the content there.
      const segment = this.#segmentForAppend(segno);
      segment.appendFrame(lsn, NO_BYTES);
      this.#dirty.add(segment);
    }
    this.#end_lsn = lsn;
    if (this.#flush_lsn > lsn) this.#flush_lsn = lsn;
    if (this.#flushing_to > lsn) this.#flushing_to = lsn;
  }

  /** Removes a segment from the log; its file is deleted by the next flush, after any flush still writing it. */
  #drop(segment: WalSegment, doomed: WalSegment[]): void {
    this.#segments.delete(segment.segno);
    this.#dirty.delete(segment);
    this.#readers.delete(segment);
    segment.closeReader();
    if (segment.path !== undefined) doomed.push(segment);
  }

  #segmentForAppend(segno: bigint): WalSegment {
    const held = this.#segments.get(segno);
    if (held !== undefined) return this.#loaded(held);
    const path = this.#wal_dir === undefined ? undefined : this.#path(segno);
    const segment = new WalSegment(segno, this.#segment_size, path, false);
    this.#segments.set(segno, segment);
    return segment;
  }

  /** Scans an old segment's file on first use; any damage there is corruption, never a torn write. */
  #loaded(segment: WalSegment): WalSegment {
    if (segment.index !== undefined) return segment;
    const path = segment.path!;
    const first = segment.segno === this.#segments.keys().next().value;
    const scan = scanSegment(Deno.readFileSync(path), path, segment.segno, this.#segment_size, first);
    if (scan.bad !== undefined) throw new CorruptWalError(path, scan.bad.offset_bytes, scan.bad.reason);
    if (scan.index.end_offset !== this.#segment_size) {
      throw new CorruptWalError(path, scan.valid_bytes, "segment ends early although a later segment exists");
    }
    segment.adoptScan(scan);
    return segment;
  }

  /** Makes everything appended so far durable: one write and one fdatasync per touched segment file. */
  flush(): Promise<Lsn> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    this.#checkUsable();
    if (this.#wal_dir === undefined) {
      this.#flush_lsn = this.#end_lsn;
      return Promise.resolve(this.#flush_lsn);
    }
    if (this.#dirty.size === 0 && this.#doomed_tail.length === 0 && this.#queued_tasks === 0) {
      return Promise.resolve(this.#flush_lsn);
    }
    return this.#serially(() => this.#flushOnce());
  }

  #serially<T>(task: () => Promise<T>): Promise<T> {
    this.#queued_tasks++;
    const run = this.#chain.then(task).finally(() => this.#queued_tasks--);
    this.#chain = run.catch(() => {});
    return run;
  }

  async #flushOnce(): Promise<Lsn> {
    if (this.#failure !== undefined) throw this.#failure;
    const dirty = [...this.#dirty].sort((a, b) => a.segno < b.segno ? -1 : 1);
    this.#dirty.clear();
    this.#flushing_to = this.#end_lsn;
    try {
      // Deleting truncated-away segments first means a crash leaves a prefix of the old log, never a mix.
      await this.#deleteDoomed();
      for (const segment of dirty) segment.beginFlush();
      // In order: a later segment must never be durable while an earlier one misses its tail.
      for (const segment of dirty) await segment.writeFlush(() => this.#syncDir());
    } catch (error) {
      // What reached the disk is unknown now; refuse to go on rather than acknowledge around a hole.
      this.#failure = error;
      throw error;
    }
    // Appends go to the segment holding the end; writers of the others are closed so handles do not pile up.
    const tail = this.#segments.get((this.#end_lsn > 0n ? this.#end_lsn - 1n : 0n) / BigInt(this.#segment_size));
    for (const segment of dirty) this.#writing.add(segment);
    for (const segment of this.#writing) {
      if (segment === tail) continue;
      segment.closeWriter();
      this.#writing.delete(segment);
    }
    this.#flush_lsn = this.#flushing_to;
    return this.#flush_lsn;
  }

  /**
   * Deletes dropped segment files one at a time, syncing the directory after each, in an order that keeps the files
   * left after a crash contiguous: truncated-away segments newest first, then retained-away segments oldest first.
   */
  async #deleteDoomed(): Promise<void> {
    const doomed = [
      ...this.#doomed_tail.sort((a, b) => a.segno > b.segno ? -1 : 1),
      ...this.#doomed_head.sort((a, b) => a.segno < b.segno ? -1 : 1),
    ];
    this.#doomed_tail = [];
    this.#doomed_head = [];
    for (const segment of doomed) {
      segment.closeWriter();
      this.#writing.delete(segment);
      try {
        await Deno.remove(segment.path!);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
      await this.#syncDir();
    }
  }

  async #syncDir(): Promise<void> {
    await this.#dir_handle!.sync();
  }

  /**
   * The bytes of [lsn_start, lsn_end): zeros where nothing was written and past the end. Throws
   * {@linkcode WalRangeError} when the range starts before {@linkcode start_lsn}, {@linkcode CorruptWalError} when
   * a segment file it touches is damaged.
   */
  read(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    this.#checkUsable();
    if (lsn_end < lsn_start || lsn_start < this.#start_lsn) {
      throw new WalRangeError(lsn_start, lsn_end, this.#start_lsn, this.#end_lsn);
    }
    const out = new Uint8Array(Number(lsn_end - lsn_start));
    const size = BigInt(this.#segment_size);
    const to = lsn_end < this.#end_lsn ? lsn_end : this.#end_lsn;
    for (let lsn = lsn_start; lsn < to;) {
      const segno = lsn / size;
      const piece_end = to < (segno + 1n) * size ? to : (segno + 1n) * size;
      const segment = this.#segments.get(segno);
      if (segment !== undefined) {
        const base = segno * size;
        this.#loaded(segment).readContent(Number(lsn - base), Number(piece_end - base), out, Number(lsn - lsn_start));
        this.#noteReader(segment);
      }
      lsn = piece_end;
    }
    return out;
  }

  #noteReader(segment: WalSegment): void {
    this.#readers.delete(segment);
    if (!segment.has_reader) return;
    this.#readers.add(segment);
    if (this.#readers.size <= MAX_OPEN_READERS) return;
    const least_recent = this.#readers.values().next().value!;
    least_recent.closeReader();
    this.#readers.delete(least_recent);
  }

  /**
   * Drops whole segments that end at or before `lsn` (never the newest), deleting their files in the background;
   * {@linkcode start_lsn} moves to the first byte still held.
   */
  retainFrom(lsn: Lsn): void {
    this.#checkUsable();
    const segments = [...this.#segments.values()];
    for (const segment of segments.slice(0, -1)) {
      if (segment.base_lsn + BigInt(this.#segment_size) > lsn) break;
      this.#drop(segment, this.#doomed_head);
    }
    const first = this.#segments.values().next().value;
    if (first !== undefined && first.base_lsn > this.#start_lsn) this.#start_lsn = first.base_lsn;
    if (this.#doomed_head.length === 0) return;
    this.#serially(() => this.#deleteDoomed()).catch((error) => {
      this.warnings.push(`retention could not delete every segment file: ${error}`);
    });
  }

  /** Waits for flushes and deletions under way, then closes every file; unflushed appends are dropped. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#chain;
    for (const segment of [...this.#segments.values(), ...this.#doomed_tail, ...this.#doomed_head]) {
      segment.closeWriter();
      segment.closeReader();
    }
    this.#readers.clear();
    this.#dir_handle?.close();
  }

  #checkUsable(): void {
    if (this.#closed) throw new Error("the WAL log is closed");
  }

  #path(segno: bigint): string {
    return `${this.#wal_dir}/${segmentFileName(TIMELINE_ID, segno, this.#segment_size)}${FILE_SUFFIX}`;
  }
}
