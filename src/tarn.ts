/**
 * The embedded composition: a page store, a WAL log and one compute in one process, on one directory (or memory).
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { SessionLock, type StatementHooks, TarnClient } from "./client.ts";
import { Checkpointer } from "./compute/checkpointer.ts";
import { clusterTemplate, importTemplate } from "./compute/cluster_template.ts";
import { startPostgres } from "./compute/engine.ts";
import { parseControlFile } from "./compute/pg_control.ts";
import { TarnFS } from "./compute/tarn_fs.ts";
import { DirLock } from "./dir_lock.ts";
import { ClosedError, CorruptDataError } from "./errors.ts";
import { formatLsn, LSN_MAX, segmentFileName, segmentOf } from "./lsn.ts";
import { WalLog } from "./replication/wal_log.ts";
import { PageStore } from "./storage/page_store.ts";
import {
  newTimelineId,
  readTenantFile,
  TENANT_FORMAT_VERSION,
  type TenantFile,
  writeTenantFile,
} from "./tenant_file.ts";

/** Tuning knobs; the defaults suit tests and small databases. */
export type TarnOptions = {
  /** Checkpoint after this much WAL (bytes). Default 16 MiB. */
  checkpoint_wal_bytes?: number;
  /** Checkpoint after this long without statements, if WAL was written (ms). Default 1000. */
  checkpoint_idle_ms?: number;
  /** Persist the page store's in-memory layer above this size (bytes). Default 16 MiB. */
  page_store_memory_bytes?: number;
  /** Pages in the compute's page cache. Default 1024 (8 MiB). */
  page_cache_pages?: number;
};

/** An open Tarn database. */
export class Tarn {
  readonly #pg: PGlite;
  readonly #fs: TarnFS;
  readonly #pages: PageStore;
  readonly #wal: WalLog;
  readonly #lock: DirLock | undefined;
  readonly #session = new SessionLock();
  readonly #checkpointer: Checkpointer;
  #closed = false;

  private constructor(parts: {
    pg: PGlite;
    fs: TarnFS;
    pages: PageStore;
    wal: WalLog;
    lock: DirLock | undefined;
    checkpointer: Checkpointer;
  }) {
    this.#pg = parts.pg;
    this.#fs = parts.fs;
    this.#pages = parts.pages;
    this.#wal = parts.wal;
    this.#lock = parts.lock;
    this.#checkpointer = parts.checkpointer;
  }

  /**
   * Opens the database in `dir` (created if missing), or an in-memory one when `dir` is omitted. An existing
   * directory never runs initdb: Postgres recovers from its last checkpoint and the WAL after it.
   */
  static async open(dir?: string, options: TarnOptions = {}): Promise<Tarn> {
    let lock: DirLock | undefined;
    if (dir !== undefined) {
      await Deno.mkdir(dir, { recursive: true });
      lock = await DirLock.acquire(dir);
    }
    try {
      return await Tarn.#openLocked(dir, options, lock);
    } catch (error) {
      await lock?.release();
      throw error;
    }
  }

  static async #openLocked(dir: string | undefined, options: TarnOptions, lock: DirLock | undefined): Promise<Tarn> {
    let tenant = dir === undefined ? undefined : await readTenantFile(dir);
    const fresh = tenant === undefined;
    if (fresh) {
      if (dir !== undefined) await removeUnfinishedCreation(dir);
      const template = await clusterTemplate();
      tenant = {
        format_version: TENANT_FORMAT_VERSION,
        timeline_id: newTimelineId(),
        segment_size: template.segment_size,
        created_at: new Date().toISOString(),
      };
    }
    const config = tenant as TenantFile;
    const pages = await PageStore.open({ dir, timeline_id: config.timeline_id });
    const wal = await WalLog.open({ dir: timelineDir(dir, config.timeline_id), segment_size: config.segment_size });
    if (fresh) {
      importTemplate(await clusterTemplate(), pages, wal);
      await pages.flush(await wal.flush());
      if (dir !== undefined) await writeTenantFile(dir, config);
    }
    const control_page = pages.getPage("global/pg_control", 0, LSN_MAX);
    if (control_page === undefined) throw new CorruptDataError(`${dir}/timelines`, "no global/pg_control");
    const control = parseControlFile(control_page);
    if (wal.start_lsn > control.redo_lsn) {
      throw new CorruptDataError(
        `${timelineDir(dir, config.timeline_id)}/wal`,
        `recovery needs WAL from ${formatLsn(control.redo_lsn)} but it starts at ${formatLsn(wal.start_lsn)}`,
      );
    }
    const segments = [];
    const first = segmentOf(control.redo_lsn, config.segment_size);
    const last = segmentOf(wal.end_lsn, config.segment_size);
    for (let segno = first; segno <= last; segno++) segments.push(segmentFileName(1, segno, config.segment_size));
    const memory_limit = options.page_store_memory_bytes ?? 16 * 1024 * 1024;
    const fs = new TarnFS({
      pages,
      wal,
      segment_size: config.segment_size,
      wal_segments: segments,
      page_cache_pages: options.page_cache_pages ?? 1024,
      on_sync: async () => {
        const flushed = await wal.flush();
        if (pages.in_memory_bytes > memory_limit) await pages.flush(flushed);
      },
    });
    const pg = await startPostgres(fs);
    // Persist what start-up wrote (pg_control "in production", the end-of-recovery checkpoint) before any commit,
    // so that a crash from here on always recovers through the WAL written after it.
    await pages.flush(await wal.flush());
    const checkpointer = new Checkpointer({
      pg,
      pages,
      wal,
      checkpoint_wal_bytes: options.checkpoint_wal_bytes ?? 16 * 1024 * 1024,
      idle_ms: options.checkpoint_idle_ms ?? 1000,
    });
    return new Tarn({ pg, fs, pages, wal, lock, checkpointer });
  }

  /** A client on this database's session. */
  connect(): Promise<TarnClient> {
    if (this.#closed) return Promise.reject(new ClosedError("this Tarn database"));
    const hooks: StatementHooks = { after: () => this.#checkpointer.afterStatement(this.#session) };
    return Promise.resolve(new TarnClient(this.#pg, this.#session, hooks));
  }

  /** Figures for benchmarks and status: WAL positions, page store and cache sizes. */
  stats(): { wal_end_lsn: bigint; wal_flush_lsn: bigint; page_store_memory_bytes: number; cache_hits: number } {
    return {
      wal_end_lsn: this.#wal.end_lsn,
      wal_flush_lsn: this.#wal.flush_lsn,
      page_store_memory_bytes: this.#pages.in_memory_bytes,
      cache_hits: this.#fs.cache.stats.hits,
    };
  }

  /** Shuts Postgres down cleanly, persists everything and releases the directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#checkpointer.stop();
    await this.#session.run(async () => {
      await this.#pg.close();
      await this.#pages.flush(await this.#wal.flush());
      await this.#wal.close();
      await this.#pages.close();
    });
    await this.#lock?.release();
  }

  /** `await using db = await Tarn.open(dir)` closes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Where a timeline's layers and WAL live; undefined in memory. */
function timelineDir(dir: string | undefined, timeline_id: string): string | undefined {
  return dir === undefined ? undefined : `${dir}/timelines/${timeline_id}`;
}

/** A directory without `tarn.json` may hold a creation that crashed half way: start it again from nothing. */
async function removeUnfinishedCreation(dir: string): Promise<void> {
  for (const leftover of ["wal", "timelines"]) {
    await Deno.remove(`${dir}/${leftover}`, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
}
