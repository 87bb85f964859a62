/**
 * A timeline's pages on a pageserver, as a compute's file system reads and writes them. Writes are batched and sent
 * one way, in order, ahead of any later read, so the pageserver always has what this compute wrote before it reads
 * it back; each read still says how new a version it needs (`not_modified_since`, from a bounded last-written-LSN
 * cache with a per-file fallback, as Neon's), and the pageserver refuses rather than answer with an older one.
 * A sequential read fetches the blocks after it in one request (read-ahead). Once this compute owns its timeline (it
 * holds the term, so it is the only writer), it holds the whole file tree, listed once, and keeps it current with its
 * own events: stat and readdir cost no round trip (crash recovery alone stats every file of the data directory).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Lsn } from "../../lsn.ts";
import { LSN_MAX } from "../../lsn.ts";
import type { WalSource } from "../../replication/wal_api.ts";
import {
  type FileEntry,
  MAX_PAGES_PER_REQUEST,
  type PageKey,
  type PageReply,
  type PutRecord,
} from "../../pageserver/messages.ts";
import type { ComputePages, FileEvent, PageValue, PathMeta } from "../../storage/page_api.ts";
import { BLOCK_SIZE } from "../../storage/page_api.ts";
import type { PageChannel } from "./page_channel.ts";

/** Put records are sent once this many bytes wait. */
const SEND_BATCH_BYTES = 256 * 1024;
/** Pages in the last-written-LSN cache; older entries fold into their file's entry. */
const LAST_WRITTEN_PAGES = 64 * 1024;
/** A sequential read's first read-ahead, in pages; each further one doubles, up to the most. */
const READ_AHEAD_FIRST_PAGES = 16;
const READ_AHEAD_MAX_PAGES = 128;
/** Files of at most this many pages are read whole at their first miss. */
const SMALL_FILE_PAGES = 16;
/** Files with a window asked for ahead at once. */
const MAX_AHEAD = 4;
/** The most read-ahead pages held, not yet read. */
const PREFETCHED_PAGES = 1024;
/** WAL sent to the pageserver in pieces of at most this many bytes. */
const WAL_PIECE_BYTES = 1024 * 1024;

/** Counters for `/metrics`. */
export type RemotePageStats = { requests: number; pages: number; prefetched_hits: number; request_ms: number };

/** A timeline's pages, read from and written to a pageserver. */
export class RemotePages implements ComputePages {
  readonly timeline_id: string;
  readonly #channel: PageChannel;
  #term = 0n;
  #wal: WalSource | undefined;
  #records: PutRecord[] = [];
  #record_bytes = 0;
  readonly #last_written = new Map<string, Lsn>();
  readonly #file_written = new Map<string, Lsn>();
  readonly #prefetched = new Map<string, Uint8Array | "zero">();
  readonly #last_read = new Map<string, number>();
  /** The read-ahead of each file read sequentially now (pages): a long scan pays fewer, larger round trips. */
  readonly #windows = new Map<string, number>();
  /** Windows asked for ahead of a sequential read, by file; claimed by the read that reaches them. */
  readonly #ahead = new Map<string, { start: number; count: number; id: number; stale: boolean }>();
  /** Paths' metadata: before the listing, what was asked (null: absent); after it, every path there is. */
  readonly #meta = new Map<string, PathMeta | null>();
  /** Each directory's names, from the listing on. */
  readonly #children = new Map<string, Set<string>>();
  #listed = false;
  /** Why the pageserver refused this compute's writes: a newer compute took the timeline over. */
  fenced: string | undefined;
  #shipped_lsn: Lsn;
  /** The LSN every read asks for: the newest version for the timeline's writer, a fixed point for a reader. */
  readonly #read_lsn: Lsn;
  /** Requests, pages and time spent waiting for the pageserver. */
  readonly stats: RemotePageStats = { requests: 0, pages: 0, prefetched_hits: 0, request_ms: 0 };

  /**
   * @param channel the connection to the pageserver
   * @param timeline_id the timeline
   * @param shipped_lsn the end of the WAL the pageserver already holds
   * @param read_lsn the point a read-only reader reads the timeline at (it never writes); default: the newest
   */
  constructor(channel: PageChannel, timeline_id: string, shipped_lsn: Lsn, read_lsn: Lsn = LSN_MAX) {
    this.#channel = channel;
    this.timeline_id = timeline_id;
    this.#shipped_lsn = shipped_lsn;
    this.#read_lsn = read_lsn;
  }

  /**
   * Makes this compute the timeline's writer: `term` is what its election gave it, `wal` where committed WAL is
   * read to send it on, `files` the timeline's whole tree as the pageserver listed it after the compute took the
   * timeline. Reads work before; writes only after.
   */
  own(term: bigint, wal: WalSource, files: FileEntry[]): void {
    this.#term = term;
    this.#wal = wal;
    this.#meta.clear();
    this.#prefetched.clear();
    for (const ahead of this.#ahead.values()) this.#channel.forget(ahead.id);
    this.#ahead.clear();
    this.#children.set("", new Set());
    for (const { path, meta } of files) {
      this.#meta.set(path, meta);
      if (meta.kind === "dir" && !this.#children.has(path)) this.#children.set(path, new Set());
      this.#childrenOf(parentOf(path)).add(path.slice(path.lastIndexOf("/") + 1));
    }
    this.#listed = true;
  }

  #childrenOf(dir: string): Set<string> {
    let names = this.#children.get(dir);
    if (names === undefined) this.#children.set(dir, names = new Set());
    return names;
  }

  getPage(path: string, blkno: number, lsn: Lsn): Uint8Array | undefined {
    assert(lsn === this.#read_lsn, "a compute reads its timeline at one point: the newest, or a reader's");
    const key = `${path}#${blkno}`;
    const ready = this.#prefetched.get(key);
    const sequential = this.#last_read.get(path) === blkno - 1;
    this.#last_read.set(path, blkno);
    if (ready !== undefined) {
      this.#prefetched.delete(key);
      this.stats.prefetched_hits++;
      return ready === "zero" ? new Uint8Array(BLOCK_SIZE) : ready;
    }
    const meta = this.stat(path, lsn);
    if (meta?.kind !== "file") return undefined;
    const blocks = Math.ceil(meta.size_bytes / BLOCK_SIZE);
    // A small file (a catalog, most indexes' upper levels) is read whole on its first miss: Postgres's start and
    // a cold session read dozens of them a block or two at a time.
    const whole = blkno === 0 && blocks <= SMALL_FILE_PAGES;
    let window = 1;
    if (sequential) {
      window = Math.min(READ_AHEAD_MAX_PAGES, 2 * (this.#windows.get(path) ?? READ_AHEAD_FIRST_PAGES / 2));
      this.#windows.set(path, window);
    } else {
      this.#windows.delete(path);
      if (whole) window = SMALL_FILE_PAGES;
    }
    let pages = this.#claimAhead(path, blkno);
    if (pages === undefined) {
      pages = this.#getPages(this.#keys(path, blkno, Math.max(1, Math.min(window, blocks - blkno))));
    }
    const count = pages.length;
    // The next window is asked for now: the pageserver reads it while Postgres goes through this one.
    if (sequential && blkno + count < blocks) {
      this.#prefetchAhead(path, blkno + count, Math.min(window, blocks - blkno - count));
    }
    if (this.#prefetched.size + count > PREFETCHED_PAGES) this.#prefetched.clear();
    for (let i = 1; i < count; i++) {
      const page = pages[i];
      if (page !== "absent") this.#prefetched.set(`${path}#${blkno + i}`, page);
    }
    const first = pages[0];
    return first === "absent" ? undefined : first === "zero" ? new Uint8Array(BLOCK_SIZE) : first;
  }

  #keys(path: string, blkno: number, count: number): PageKey[] {
    const keys: PageKey[] = [];
    for (let b = blkno; b < blkno + count; b++) {
      keys.push({ path, blkno: b, not_modified_since: this.#lastWritten(path, b) });
    }
    return keys;
  }

  #prefetchAhead(path: string, start: number, count: number): void {
    if (this.#ahead.has(path) || this.#ahead.size >= MAX_AHEAD) return;
    this.#sendRecords();
    const keys = this.#keys(path, start, count);
    const id = this.#channel.prefetch({ type: "get_pages", timeline_id: this.timeline_id, lsn: this.#read_lsn, keys });
    this.#ahead.set(path, { start, count, id, stale: false });
  }

  /** The pages of the window prefetched at `blkno` of `path`, if that is what was prefetched and still true. */
  #claimAhead(path: string, blkno: number): PageReply[] | undefined {
    const ahead = this.#ahead.get(path);
    if (ahead === undefined) return undefined;
    this.#ahead.delete(path);
    if (ahead.start !== blkno || ahead.stale) {
      this.#channel.forget(ahead.id);
      return undefined;
    }
    const started_ms = performance.now();
    const reply = this.#channel.claimSync(ahead.id);
    assert(reply.type === "pages" && reply.pages.length === ahead.count, `get_pages answered with ${reply.type}`);
    this.stats.requests++;
    this.stats.pages += ahead.count;
    this.stats.request_ms += performance.now() - started_ms;
    return reply.pages;
  }

  /** A write to `path` (at `blkno`; undefined: the file itself) makes a prefetch that covers it stale. */
  #invalidateAhead(path: string, blkno?: number): void {
    const ahead = this.#ahead.get(path);
    if (ahead !== undefined && (blkno === undefined || (blkno >= ahead.start && blkno < ahead.start + ahead.count))) {
      ahead.stale = true;
    }
  }

  #getPages(keys: PageKey[]): PageReply[] {
    assert(keys.length <= MAX_PAGES_PER_REQUEST);
    this.#sendRecords();
    const started_ms = performance.now();
    const reply = this.#channel.requestSync({
      type: "get_pages",
      timeline_id: this.timeline_id,
      lsn: this.#read_lsn,
      keys,
    });
    assert(reply.type === "pages" && reply.pages.length === keys.length, `get_pages answered with ${reply.type}`);
    this.stats.requests++;
    this.stats.pages += keys.length;
    this.stats.request_ms += performance.now() - started_ms;
    return reply.pages;
  }

  stat(path: string, lsn: Lsn): PathMeta | undefined {
    assert(lsn === this.#read_lsn, "a compute reads its timeline at one point: the newest, or a reader's");
    if (path === "") return { kind: "dir" };
    const known = this.#meta.get(path);
    if (known !== undefined || this.#listed) return known ?? undefined;
    this.#sendRecords();
    const reply = this.#channel.requestSync({ type: "stat", timeline_id: this.timeline_id, lsn, path });
    assert(reply.type === "stat_ok", `stat answered with ${reply.type}`);
    this.#meta.set(path, reply.meta ?? null);
    return reply.meta;
  }

  readdir(path: string, lsn: Lsn): string[] {
    assert(lsn === this.#read_lsn, "a compute reads its timeline at one point: the newest, or a reader's");
    if (this.#listed) return this.stat(path, lsn)?.kind === "dir" ? [...this.#childrenOf(path)].sort() : [];
    const reply = this.#channel.requestSync({ type: "readdir", timeline_id: this.timeline_id, lsn, path });
    assert(reply.type === "readdir_ok", `readdir answered with ${reply.type}`);
    return reply.names;
  }

  putPage(path: string, blkno: number, lsn: Lsn, value: PageValue): void {
    assert(this.#read_lsn === LSN_MAX, "a reader at a fixed point never writes");
    const copy: PageValue = value.kind === "image"
      ? { kind: "image", bytes: value.bytes.slice() }
      : { kind: "delta", ranges: value.ranges.map((r) => ({ offset: r.offset, bytes: r.bytes.slice() })) };
    this.#records.push({ kind: "page", path, blkno, lsn, value: copy });
    this.#record_bytes += copy.kind === "image" ? BLOCK_SIZE : copy.ranges.reduce((n, r) => n + r.bytes.length + 4, 0);
    this.#prefetched.delete(`${path}#${blkno}`);
    this.#invalidateAhead(path, blkno);
    this.#noteWritten(`${path}#${blkno}`, lsn);
    if (this.#record_bytes >= SEND_BATCH_BYTES) this.#sendRecords();
  }

  putEvent(path: string, lsn: Lsn, event: FileEvent): void {
    this.#records.push({ kind: "event", path, lsn, event: { ...event } });
    this.#record_bytes += path.length + 32;
    this.#applyEvent(path, event);
    this.#invalidateAhead(path);
    this.#file_written.set(path, lsn);
    for (const key of [...this.#prefetched.keys()]) if (key.startsWith(path + "#")) this.#prefetched.delete(key);
  }

  #applyEvent(path: string, event: FileEvent): void {
    assert(this.#listed, "a compute writes only after it owns the timeline");
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (event.kind === "create") this.#meta.set(path, { kind: "file", size_bytes: 0 });
    else if (event.kind === "resize") this.#meta.set(path, { kind: "file", size_bytes: event.size_bytes });
    else if (event.kind === "mkdir") this.#meta.set(path, { kind: "dir" });
    else this.#meta.delete(path);
    if (event.kind === "create" || event.kind === "mkdir") this.#childrenOf(parentOf(path)).add(name);
    if (event.kind === "unlink" || event.kind === "rmdir") this.#childrenOf(parentOf(path)).delete(name);
    if (event.kind === "rmdir") this.#children.delete(path);
  }

  #noteWritten(key: string, lsn: Lsn): void {
    this.#last_written.delete(key);
    this.#last_written.set(key, lsn);
    if (this.#last_written.size > LAST_WRITTEN_PAGES) {
      const [oldest_key, oldest_lsn] = this.#last_written.entries().next().value!;
      this.#last_written.delete(oldest_key);
      const file = oldest_key.slice(0, oldest_key.lastIndexOf("#"));
      if ((this.#file_written.get(file) ?? 0n) < oldest_lsn) this.#file_written.set(file, oldest_lsn);
    }
  }

  /** The LSN of the newest version this compute wrote of the page (or, forgotten, of any page of its file). */
  #lastWritten(path: string, blkno: number): Lsn {
    return this.#last_written.get(`${path}#${blkno}`) ?? this.#file_written.get(path) ?? 0n;
  }

  #sendRecords(): void {
    if (this.#records.length === 0) return;
    if (this.fenced !== undefined) {
      // The pageserver refuses them: the engine fails at its next statement (ComputeFencedError).
      this.#records = [];
      this.#record_bytes = 0;
      return;
    }
    const records = this.#records;
    this.#records = [];
    this.#record_bytes = 0;
    this.#channel.send({ type: "put", timeline_id: this.timeline_id, term: this.#term, records });
  }

  /** Sends the writes made so far and the WAL committed up to `lsn`, which the pageserver may now persist up to. */
  walDurable(lsn: Lsn, _memory_limit_bytes: number): void {
    this.#sendRecords();
    const wal = this.#wal;
    assert(wal !== undefined, "a compute writes only after it owns the timeline");
    while (this.#shipped_lsn < lsn) {
      const end = lsn - this.#shipped_lsn > BigInt(WAL_PIECE_BYTES) ? this.#shipped_lsn + BigInt(WAL_PIECE_BYTES) : lsn;
      this.#channel.send({
        type: "wal",
        timeline_id: this.timeline_id,
        term: this.#term,
        lsn_start: this.#shipped_lsn,
        commit_lsn: end,
        bytes: wal.read(this.#shipped_lsn, end),
      });
      this.#shipped_lsn = end;
    }
  }

  async flush(durable_lsn: Lsn): Promise<void> {
    this.walDurable(durable_lsn, 0);
    await this.#channel.request({ type: "persist", timeline_id: this.timeline_id, term: this.#term });
  }

  flushSoon(durable_lsn: Lsn): void {
    this.walDurable(durable_lsn, 0);
    this.#channel.request({ type: "persist", timeline_id: this.timeline_id, term: this.#term }).catch(() => {});
  }

  mark(): number {
    throw new Error("a compute on a pageserver does not take snapshots for rewinds");
  }

  rewindTo(_mark: number): void {
    throw new Error("a compute on a pageserver does not rewind");
  }

  close(): Promise<void> {
    if (this.#channel.failure === undefined) this.#sendRecords();
    return Promise.resolve();
  }
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "" : path.slice(0, slash);
}
