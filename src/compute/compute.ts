/**
 * One compute: PostgreSQL (PGlite) on a {@linkcode TarnFS} over one timeline's page store and WAL, with its session
 * lock and checkpointer. It keeps no state of its own: stop it (or lose it) and a new one recovers the same data.
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { SessionLock, type StatementHooks, TarnClient } from "../client.ts";
import { CorruptDataError } from "../errors.ts";
import { formatLsn, LSN_MAX, segmentFileName, segmentOf } from "../lsn.ts";
import type { TimelineWal } from "../replication/timeline_wal.ts";
import type { PageStore } from "../storage/page_store.ts";
import { Checkpointer } from "./checkpointer.ts";
import { startPostgres } from "./engine.ts";
import { parseControlFile } from "./pg_control.ts";
import { TarnFS } from "./tarn_fs.ts";

/** A timeline's storage as a compute uses it. */
export type TimelineStorage = { pages: PageStore; wal: TimelineWal };

/** How a compute runs. */
export type ComputeOptions = {
  /** WAL segment size in bytes. */
  segment_size: number;
  /** Checkpoint after this much WAL (bytes). */
  checkpoint_wal_bytes: number;
  /** Checkpoint after this long without statements (ms). */
  checkpoint_idle_ms: number;
  /** Persist the page store's in-memory layer above this size (bytes). */
  page_store_memory_bytes: number;
  /** Pages in the compute's page cache. */
  page_cache_pages: number;
  /** Refuse writes (time travel): every transaction is read only, and nothing is persisted. */
  read_only: boolean;
};

/** A running compute. */
export class Compute {
  readonly #pg: PGlite;
  readonly #fs: TarnFS;
  readonly #storage: TimelineStorage;
  readonly #session = new SessionLock();
  readonly #checkpointer: Checkpointer | undefined;
  #stopped = false;

  private constructor(pg: PGlite, fs: TarnFS, storage: TimelineStorage, checkpointer: Checkpointer | undefined) {
    this.#pg = pg;
    this.#fs = fs;
    this.#storage = storage;
    this.#checkpointer = checkpointer;
  }

  /**
   * Starts Postgres on the timeline's newest state: pg_control from the page store, the WAL from its checkpoint's
   * redo point to the end presented as `pg_wal/`; Postgres replays what it needs.
   */
  static async start(storage: TimelineStorage, options: ComputeOptions): Promise<Compute> {
    const { pages, wal } = storage;
    const control_page = pages.getPage("global/pg_control", 0, LSN_MAX);
    if (control_page === undefined) throw new CorruptDataError(`timeline ${pages.timeline_id}`, "no pg_control");
    const control = parseControlFile(control_page);
    if (wal.start_lsn > control.redo_lsn) {
      throw new CorruptDataError(
        `timeline ${pages.timeline_id}`,
        `recovery needs WAL from ${formatLsn(control.redo_lsn)} but it starts at ${formatLsn(wal.start_lsn)}`,
      );
    }
    const segments = [];
    const last = segmentOf(wal.end_lsn, options.segment_size);
    for (let segno = segmentOf(control.redo_lsn, options.segment_size); segno <= last; segno++) {
      segments.push(segmentFileName(1, segno, options.segment_size));
    }
    const fs = new TarnFS({
      pages,
      wal,
      segment_size: options.segment_size,
      wal_segments: segments,
      page_cache_pages: options.page_cache_pages,
      on_sync: async () => {
        if (options.read_only) return;
        const flushed = await wal.flush();
        if (pages.in_memory_bytes > options.page_store_memory_bytes) await pages.flush(flushed);
      },
    });
    const pg = await startPostgres(fs, options.read_only ? ["default_transaction_read_only=on"] : []);
    if (options.read_only) return new Compute(pg, fs, storage, undefined);
    // Persist what start-up wrote (pg_control "in production", the end-of-recovery checkpoint) before any commit,
    // so that a crash from here on always recovers through the WAL written after it.
    await pages.flush(await wal.flush());
    const checkpointer = new Checkpointer({
      pg,
      pages,
      wal,
      checkpoint_wal_bytes: options.checkpoint_wal_bytes,
      idle_ms: options.checkpoint_idle_ms,
    });
    return new Compute(pg, fs, storage, checkpointer);
  }

  /** A client on this compute's session; `extra` names a read-only connection and what its close does. */
  connect(extra: Omit<StatementHooks, "after"> = {}): TarnClient {
    const after = () => this.#checkpointer?.afterStatement(this.#session) ?? Promise.resolve();
    return new TarnClient(this.#pg, this.#session, { ...extra, after });
  }

  /** The timeline's WAL end: where a branch made now starts. */
  async headLsn(): Promise<bigint> {
    return await this.#session.run(() => this.#storage.wal.flush());
  }

  /** Figures for benchmarks and status. */
  stats(): { wal_end_lsn: bigint; wal_flush_lsn: bigint; page_store_memory_bytes: number; cache_hits: number } {
    return {
      wal_end_lsn: this.#storage.wal.end_lsn,
      wal_flush_lsn: this.#storage.wal.flush_lsn,
      page_store_memory_bytes: this.#storage.pages.in_memory_bytes,
      cache_hits: this.#fs.cache.stats.hits,
    };
  }

  /** Shuts Postgres down cleanly after the running statement and persists what it wrote. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#checkpointer?.stop();
    await this.#session.run(async () => {
      await this.#pg.close();
      if (this.#checkpointer === undefined) return;
      await this.#storage.pages.flush(await this.#storage.wal.flush());
    });
  }
}
