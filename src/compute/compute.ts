/**
 * One compute: PostgreSQL (PGlite) on a {@linkcode TarnFS} over one timeline's page store and WAL, with its session
 * lock and checkpointer. It keeps no state of its own: stop it (or lose it) and a new one recovers the same data.
 * A compute on memory-only storage (a fork) can also be rewound to a snapshot of itself in milliseconds.
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { SessionLock, type StatementHooks, TarnClient } from "../client.ts";
import { CorruptDataError } from "../errors.ts";
import { formatLsn, type Lsn, LSN_MAX, segmentFileName, segmentOf } from "../lsn.ts";
import type { TimelineWal } from "../replication/timeline_wal.ts";
import type { ComputePages } from "../storage/page_api.ts";
import { Checkpointer } from "./checkpointer.ts";
import { enginePool, startPostgres } from "./engine_pool.ts";
import { type CopyInput, EngineGuard } from "./engine_guard.ts";
import type { CallIdentity } from "./engine_identity.ts";
import { parseControlFile } from "./pg_control.ts";
import type { PageCacheStats } from "./page_cache.ts";
import type { TarnFS, TarnFsState } from "./tarn_fs.ts";
import type { WasmSnapshot } from "./wasm_snapshot.ts";
import type { Logger } from "../logger.ts";

/** A timeline's storage as a compute uses it. */
export type TimelineStorage = {
  pages: ComputePages;
  wal: TimelineWal;
  /** Whether the storage can no longer be used (its pageserver connection was lost): then it is reopened. */
  failed?: () => boolean;
};

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
  /** Extra PostgreSQL settings (`name=value`), after Tarn's own. */
  settings?: readonly string[];
  /**
   * Opens the timeline's storage again after it failed (`TimelineStorage.failed`), before Postgres restarts on it;
   * the failed storage is closed first. Without it, a compute restarts on the storage it has.
   */
  reopen_storage?: (failed: TimelineStorage) => Promise<TimelineStorage>;
  /** Structured log (an engine restart is logged). */
  log?: Logger;
};

/**
 * Where Postgres's interrupt flags live in a compute's shared WASM memory: another thread sets both to 1 to cancel
 * the running statement (see `shared_memory.ts`).
 */
export type InterruptFlags = { memory: SharedArrayBuffer; query_cancel_pending: number; interrupt_pending: number };

/** A compute and its storage at one moment, for {@linkcode Compute.rewind}. */
export type ComputeSnapshot = { wasm: WasmSnapshot; fs: TarnFsState; page_mark: number; wal_mark: Lsn };

/** A running compute. */
export class Compute {
  #storage: TimelineStorage;
  readonly #options: ComputeOptions;
  readonly #session = new SessionLock(() => this.#reviveIfCrashed());
  #pg!: PGlite;
  #engine!: EngineGuard;
  /** Times Postgres failed and was restarted from storage. */
  restarts = 0;
  #fs!: TarnFS;
  #checkpointer: Checkpointer | undefined;
  #stopped = false;
  /** Why the last rewind restarted Postgres instead (undefined when it rewound in place). */
  last_rewind_fallback: string | undefined;

  /** The page cache's counters since Postgres last started. */
  get page_cache(): PageCacheStats {
    return { ...this.#fs.cache.stats };
  }

  private constructor(storage: TimelineStorage, options: ComputeOptions) {
    this.#storage = storage;
    this.#options = options;
  }

  /**
   * Starts Postgres on the timeline's newest state: pg_control from the page store, the WAL from its checkpoint's
   * redo point to the end presented as `pg_wal/`; Postgres replays what it needs.
   */
  static async start(storage: TimelineStorage, options: ComputeOptions): Promise<Compute> {
    const compute = new Compute(storage, options);
    const booted = compute.#boot();
    enginePool.refill(booted);
    await booted;
    return compute;
  }

  async #boot(): Promise<void> {
    const { pages, wal } = this.#storage;
    const options = this.#options;
    const settings = [...options.read_only ? ["default_transaction_read_only=on"] : [], ...options.settings ?? []];
    const { pg, fs } = await startPostgres({
      pages,
      wal,
      segment_size: options.segment_size,
      wal_segments: this.#recoverySegments(),
      page_cache_pages: options.page_cache_pages,
      on_sync: async () => {
        if (options.read_only) return;
        pages.walDurable(await wal.flush(), options.page_store_memory_bytes);
      },
    }, settings);
    this.#engine = new EngineGuard(pg, fs.wasm.instance?.exports);
    this.#pg = pg;
    this.#fs = fs;
    if (options.read_only) return;
    // Persist what start-up wrote (pg_control "in production", the end-of-recovery checkpoint) before any commit,
    // so that a crash from here on always recovers through the WAL written after it.
    await pages.flush(await wal.flush());
    const engine = this.#engine;
    this.#checkpointer = new Checkpointer({
      checkpoint: () => engine.asSuperuser(() => pg.exec("CHECKPOINT")),
      pages,
      wal,
      checkpoint_wal_bytes: options.checkpoint_wal_bytes,
      idle_ms: options.checkpoint_idle_ms,
    });
  }

  /**
   * Restarts Postgres from storage when it failed in the last call: crash recovery, as after a SIGKILL of the
   * process, on the storage as it is (what the failed engine wrote stays, as a kernel keeps a dead process's
   * writes), so every acknowledged commit is there.
   */
  async #reviveIfCrashed(): Promise<void> {
    const cause = this.#engine.crashed;
    if (cause === undefined || this.#stopped) return;
    const started_ms = performance.now();
    this.#checkpointer?.stop();
    this.#checkpointer = undefined;
    const reopen = this.#options.reopen_storage;
    if (reopen !== undefined && this.#storage.failed?.()) this.#storage = await reopen(this.#storage);
    await this.#boot();
    this.restarts++;
    this.#options.log?.("engine_restarted", {
      timeline: this.#storage.pages.timeline_id,
      cause: String((cause as Error)?.message ?? cause).slice(0, 300),
      restart_ms: Math.round(performance.now() - started_ms),
    });
  }

  /** The WAL segments recovery reads: from the redo point of the newest checkpoint to the end. */
  #recoverySegments(): string[] {
    const { pages, wal } = this.#storage;
    const control_page = pages.getPage("global/pg_control", 0, LSN_MAX);
    if (control_page === undefined) throw new CorruptDataError(`timeline ${pages.timeline_id}`, "no pg_control");
    const control = parseControlFile(control_page);
    if (wal.start_lsn > control.redo_lsn) {
      throw new CorruptDataError(
        `timeline ${pages.timeline_id}`,
        `recovery needs WAL from ${formatLsn(control.redo_lsn)} but it starts at ${formatLsn(wal.start_lsn)}`,
      );
    }
    const size = this.#options.segment_size;
    const segments = [];
    const last = segmentOf(wal.end_lsn, size);
    for (let segno = segmentOf(control.redo_lsn, size); segno <= last; segno++) {
      segments.push(segmentFileName(1, segno, size));
    }
    return segments;
  }

  /** The running Postgres, for a client that holds this compute alone (a replica's read-only compute). */
  get postgres(): PGlite {
    return this.#pg;
  }

  /** A client on this compute's session; `extra` names a read-only connection and what its close does. */
  connect(extra: Omit<StatementHooks, "after"> = {}): TarnClient {
    const after = () => this.#checkpointer?.afterStatement(this.#session) ?? Promise.resolve();
    return new TarnClient(() => this.#pg, this.#session, { ...extra, after });
  }

  /**
   * Runs `fn` with the backend to itself (other clients wait): `exec` passes raw protocol messages to Postgres
   * and resolves with its replies once the WAL they wrote is durable; `idle` runs the checkpoint policy, for when
   * the backend is outside a transaction.
   */
  exclusive<T>(
    fn: (
      exec: (message: Uint8Array, identity?: CallIdentity, copy_input?: CopyInput) => Promise<Uint8Array>,
      idle: () => Promise<void>,
    ) => Promise<T>,
  ): Promise<T> {
    return this.#session.run(() =>
      fn(
        (message, identity, copy_input) => this.#engine.execRaw(message, copy_input, identity),
        () => this.#checkpointer?.afterStatement(this.#session) ?? Promise.resolve(),
      )
    );
  }

  /** Declares the engine failed (its storage went away): Postgres restarts before the next session runs. */
  failStorage(cause: unknown): void {
    this.#engine.fail(cause);
  }

  /** Fault injection for tests: Postgres aborts in the middle of the next statement (see `EngineGuard.armFault`). */
  injectEngineFault(): void {
    this.#engine.armFault();
  }

  /** The addresses of Postgres's interrupt flags, when its memory is shared (else a cancel cannot reach it). */
  interruptFlags(): InterruptFlags | undefined {
    const memory = this.#fs.wasm.module.HEAPU8.buffer;
    if (!(memory instanceof SharedArrayBuffer)) return undefined;
    const exports = this.#fs.wasm.instance!.exports as Record<string, WebAssembly.Global>;
    return {
      memory,
      query_cancel_pending: exports.QueryCancelPending.value as number,
      interrupt_pending: exports.InterruptPending.value as number,
    };
  }

  /**
   * CHECKPOINT now (when no transaction is open) if WAL was written since the last one, so that a compute started
   * from this timeline's storage next replays little WAL: a replica's next generation asks for one.
   */
  async checkpoint(): Promise<void> {
    await this.#session.run(async () => await this.#checkpointer?.checkpointIfWritten());
  }

  /** The timeline's WAL end: where a branch made now starts. */
  async headLsn(): Promise<bigint> {
    return await this.#session.run(() => this.#storage.wal.flush());
  }

  /** Snapshots the idle compute and its (memory-only) storage. */
  snapshot(): Promise<ComputeSnapshot> {
    return this.#session.run(() => {
      const { pages, wal } = this.#storage;
      return Promise.resolve({
        wasm: this.#fs.wasm.take(),
        fs: this.#fs.saveState(),
        page_mark: pages.mark(),
        wal_mark: wal.mark(),
      });
    });
  }

  /**
   * Puts the compute and its storage back to `snapshot`: in place when that is safe, else by restarting Postgres
   * on the rewound storage (the reason is in {@linkcode last_rewind_fallback}). Resolves with a snapshot to use for
   * the next rewind (the same one after an in-place rewind). A `restart_reason` forces the restart.
   */
  rewind(snapshot: ComputeSnapshot, restart_reason?: string): Promise<ComputeSnapshot> {
    return this.#session.run(async () => {
      this.#checkpointer?.stop();
      // A failed engine was restarted before this runs (the session lock's prepare step).
      const reason = restart_reason ??
        (this.#pg.isInTransaction() ? "a transaction is open" : this.#fs.wasm.checkRewindable(snapshot.wasm));
      const { pages, wal } = this.#storage;
      if (reason === undefined) {
        pages.rewindTo(snapshot.page_mark);
        await wal.rewindTo(snapshot.wal_mark);
        this.#fs.restoreState(snapshot.fs);
        this.#fs.wasm.restore(snapshot.wasm);
        this.#checkpointer?.restart();
        this.last_rewind_fallback = undefined;
        return snapshot;
      }
      this.last_rewind_fallback = reason;
      await this.#pg.close();
      pages.rewindTo(snapshot.page_mark);
      await wal.rewindTo(snapshot.wal_mark);
      await this.#boot();
      const { pages: p, wal: w } = this.#storage;
      return { wasm: this.#fs.wasm.take(), fs: this.#fs.saveState(), page_mark: p.mark(), wal_mark: w.mark() };
    });
  }

  /** Shuts Postgres down cleanly after the running statement and persists what it wrote. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#checkpointer?.stop();
    await this.#session.run(async () => {
      if (this.#engine.crashed === undefined) await this.#pg.close();
      if (this.#options.read_only) return;
      await this.#storage.pages.flush(await this.#storage.wal.flush());
    });
  }
}
