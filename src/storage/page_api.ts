/**
 * The interfaces between a compute and the page store: versioned file contents keyed by (path, block, LSN).
 * Paths are relative to PGDATA without a leading slash (`base/5/16384`, `global/pg_control`). Every durable file
 * is a sequence of {@linkcode BLOCK_SIZE}-byte blocks plus a size in bytes (a file's last block may be partial).
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";

/** Bytes in one page (PostgreSQL's BLCKSZ). */
export const BLOCK_SIZE = 8192;

/** A change to one page: byte ranges to overwrite in the previous version. */
export type PageRange = { offset: number; bytes: Uint8Array };

/** A new version of one page: a whole image, or ranges applied to the version before it. */
export type PageValue =
  | { kind: "image"; bytes: Uint8Array }
  | { kind: "delta"; ranges: PageRange[] };

/** A versioned event on a file or directory. */
export type FileEvent =
  | { kind: "create" }
  | { kind: "resize"; size_bytes: number }
  | { kind: "unlink" }
  | { kind: "mkdir" }
  | { kind: "rmdir" };

/** What is known of a path at an LSN. */
export type PathMeta = { kind: "file"; size_bytes: number } | { kind: "dir" };

/** Where a compute reads pages and file metadata at an LSN. Synchronous: the compute's file calls are. */
export interface PageSource {
  /** The page at the newest version <= lsn, zero-filled if never written; undefined if the file does not exist. */
  getPage(path: string, blkno: number, lsn: Lsn): Uint8Array | undefined;
  /** File or directory metadata at lsn; undefined when the path does not exist then. */
  stat(path: string, lsn: Lsn): PathMeta | undefined;
  /** Names (not paths) of the direct children of a directory at lsn. */
  readdir(path: string, lsn: Lsn): string[];
}

/** Where a compute sends new page versions and file events. */
export interface PageSink {
  /** A new version of a page at `lsn` (the WAL end the compute observed when it wrote the page). */
  putPage(path: string, blkno: number, lsn: Lsn, value: PageValue): void;
  /** A versioned file or directory event at `lsn`. */
  putEvent(path: string, lsn: Lsn, event: FileEvent): void;
}

/** A timeline's page store as a compute drives it: the embedded `PageStore`, or a pageserver over the network. */
export interface ComputePages extends PageSource, PageSink {
  /** The timeline: 32 hex digits. */
  readonly timeline_id: string;
  /**
   * The WAL up to `lsn` is durable: versions up to it may now be made durable too (the store decides when; an
   * embedded one when it holds more than `memory_limit_bytes` in memory).
   */
  walDurable(lsn: Lsn, memory_limit_bytes: number): void;
  /** Makes every version at or below `durable_lsn` durable, now. */
  flush(durable_lsn: Lsn): Promise<void>;
  /** Starts making versions at or below `durable_lsn` durable, without waiting. */
  flushSoon(durable_lsn: Lsn): void;
  /** A point to {@linkcode rewindTo} later (memory-only stores). */
  mark(): number;
  /** Drops every version written since `mark`. */
  rewindTo(mark: number): void;
  /** Releases what the store holds. */
  close(): Promise<void>;
}
