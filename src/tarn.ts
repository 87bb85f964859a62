/**
 * The embedded composition: page stores, WAL logs and computes in one process, on one directory (or memory), with
 * branches: copy-on-write timelines made from metadata only, at the head of a branch or any point of its history.
 *
 * @module
 */
import type { TarnClient } from "./client.ts";
import { clusterTemplate, importTemplate } from "./compute/cluster_template.ts";
import { Compute, type ComputeOptions, type TimelineStorage } from "./compute/compute.ts";
import { loadArtifacts } from "./compute/engine.ts";
import { type Fork, ForkPool } from "./fork_pool.ts";
import { DirLock } from "./dir_lock.ts";
import { type BranchInfo, BranchManager, type BranchStart, MAIN } from "./branch_manager.ts";
import { ClosedError, ConfigurationError } from "./errors.ts";
import { formatLsn, type Lsn } from "./lsn.ts";
import { connectReplica } from "./embedded_replica.ts";
import { type BranchAt, READ_ONLY_HEAD } from "./replication/branch_point.ts";
import { BranchCatalog } from "./storage/branch_catalog.ts";
import {
  newTimelineId,
  readTenantFile,
  TENANT_FORMAT_VERSION,
  type TenantFile,
  writeTenantFile,
} from "./tenant_file.ts";
import { closeStorage, Timelines, walQuorum } from "./timelines.ts";
import type { Logger } from "./logger.ts";
import { EmbeddedLake } from "./embedded_lake.ts";
import { openRemoteStorage, type RemoteStorage } from "./remote_storage/mod.ts";

/** Tuning knobs; the defaults suit tests and small databases. */
export type TarnOptions = {
  /** Checkpoint after this much WAL (bytes). Default 16 MiB. */
  checkpoint_wal_bytes?: number;
  /** Checkpoint after this long without statements, if WAL was written (ms). Default 1000. */
  checkpoint_idle_ms?: number;
  /** Persist the page store's in-memory layer above this size (bytes). Default 16 MiB. */
  page_store_memory_bytes?: number;
  /** Pages in each compute's page cache. Default 1024 (8 MiB). */
  page_cache_pages?: number;
  /**
   * Each branch's cache of decompressed storage blocks (64 KiB, several pages each): what a page cache miss
   * reads from. Default 4 MiB; a server reading much more than its page cache holds wants more.
   */
  block_cache_bytes?: number;
  /**
   * A branch other than `main` stops its compute this long after its last client left (scale to zero); 0, the
   * default, stops it at once.
   */
  compute_idle_ms?: number;
  /**
   * Safekeepers (`HOST:PORT`) that make the WAL durable: a commit returns once a majority has fsynced it. Needs a
   * directory. Default: none, the WAL is fsynced locally.
   */
  safekeepers?: string[];
  /** How long opening a branch waits for a majority of safekeepers (ms). Default 30 s. */
  election_timeout_ms?: number;
  /** Structured events (safekeeper connections, elections, commits waiting for a majority). Default: none. */
  log?: Logger;
  /**
   * The lake (`file:///path` or `s3://bucket/prefix`, S3 configured by the AWS environment variables): layers,
   * indexes and the WAL are uploaded as they are written, and a directory opened empty is filled from it. Needs a
   * directory. Default: none, the directory is the only copy.
   */
  remote?: string;
};

export type { BranchInfo, BranchStart };

/** How {@linkcode Tarn.connect} reaches a branch: its head (read-write), or read-only at a past point. */
export type ConnectOptions = {
  at?: BranchAt;
  readOnly?: boolean;
  /** A read replica: read-only, following the branch's newest commits (docs/replicas.md). */
  replica?: boolean;
  /** With `replica`: a statement never reads a state older than this (ms). Default 1,000. */
  max_lag_ms?: number;
};

const quiet: Logger = () => {};

/** The lake `options.remote` names, if any; it needs a directory. */
function openLake(
  dir: string | undefined,
  options: TarnOptions,
): { store: RemoteStorage; sync: EmbeddedLake } | undefined {
  if (options.remote === undefined) return undefined;
  if (dir === undefined) {
    throw new ConfigurationError("an in-memory database cannot have a remote: give Tarn.open a directory");
  }
  const store = openRemoteStorage(options.remote, { log: options.log });
  return { store, sync: new EmbeddedLake(store, dir, options.log ?? quiet) };
}

/** Each page store's cache of decompressed blocks, by default. */
const BLOCK_CACHE_BYTES = 4 * 1024 * 1024;

/** An open Tarn database. */
export class Tarn {
  readonly #dir: string | undefined;
  readonly #lock: DirLock | undefined;
  readonly #branches: BranchManager;
  readonly #timelines: Timelines;
  readonly #options: ComputeOptions;
  readonly #computes = new Map<string, Promise<Compute>>();
  readonly #read_only = new Set<Compute>();
  readonly #clients = new Map<string, number>();
  readonly #idle_timers = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #compute_idle_ms: number;
  readonly #forks: ForkPool;
  #closed = false;
  readonly #lake: { store: RemoteStorage; sync: EmbeddedLake } | undefined;

  private constructor(
    parts: {
      dir?: string;
      lock?: DirLock;
      catalog: BranchCatalog;
      timelines: Timelines;
      options: ComputeOptions;
      compute_idle_ms: number;
      lake?: { store: RemoteStorage; sync: EmbeddedLake };
    },
  ) {
    this.#lake = parts.lake;
    this.#compute_idle_ms = parts.compute_idle_ms;
    this.#dir = parts.dir;
    this.#lock = parts.lock;
    this.#branches = new BranchManager(parts.catalog, parts.timelines, {
      head: async (branch) => await (await this.#computes.get(branch.name))?.headLsn(),
      stop: (name) => this.#stopCompute(name),
    });
    this.#timelines = parts.timelines;
    this.#options = parts.options;
    this.#forks = new ForkPool(parts.timelines, parts.options);
  }

  /**
   * Opens the database in `dir` (created if missing), or an in-memory one when `dir` is omitted. An existing
   * directory never runs initdb: each branch's compute recovers from its last checkpoint and the WAL after it.
   */
  static async open(dir?: string, options: TarnOptions = {}): Promise<Tarn> {
    // Compiling PGlite's WASM and loading zstd take tens of ms: overlap them with opening the storage. Their
    // errors, if any, surface where they are awaited.
    loadArtifacts().catch(() => {});
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
    const lake = openLake(dir, options);
    try {
      return await Tarn.#openWithLake(dir, options, lock, lake);
    } catch (error) {
      lake?.store.close();
      throw error;
    }
  }

  static async #openWithLake(
    dir: string | undefined,
    options: TarnOptions,
    lock: DirLock | undefined,
    lake: { store: RemoteStorage; sync: EmbeddedLake } | undefined,
  ): Promise<Tarn> {
    let tenant = dir === undefined ? undefined : await readTenantFile(dir);
    if (
      tenant === undefined && lake !== undefined && await EmbeddedLake.restore(lake.store, dir!, options.log ?? quiet)
    ) {
      tenant = await readTenantFile(dir!);
    }
    const fresh = tenant === undefined;
    if (tenant === undefined) {
      if (dir !== undefined) await removeUnfinished(dir, []);
      tenant = {
        format_version: TENANT_FORMAT_VERSION,
        timeline_id: newTimelineId(),
        segment_size: (await clusterTemplate()).segment_size,
        created_at: new Date().toISOString(),
      };
    }
    const config: TenantFile = tenant;
    const catalog = await BranchCatalog.open(dir, config.timeline_id, new Date(config.created_at));
    const block_cache_bytes = options.block_cache_bytes ?? BLOCK_CACHE_BYTES;
    const quorum = walQuorum(dir, config.timeline_id, options.safekeepers, options.election_timeout_ms, options.log);
    if (fresh) {
      // The initial cluster goes to the local log first: the safekeepers' log of a new database starts after it.
      const bootstrap = new Timelines(dir, config.segment_size, catalog, block_cache_bytes);
      const { pages, wal } = await bootstrap.open(config.timeline_id);
      importTemplate(await clusterTemplate(), pages, wal);
      await pages.flush(await wal.flush());
      if (quorum !== undefined) await bootstrap.closeAll();
      if (dir !== undefined) await writeTenantFile(dir, config);
      if (quorum === undefined) return await Tarn.#start(dir, lock, catalog, bootstrap, config, options, lake);
    } else if (dir !== undefined) {
      await removeUnfinished(dir, catalog.list().map((b) => b.timeline_id));
    }
    const timelines = new Timelines(dir, config.segment_size, catalog, block_cache_bytes, quorum);
    return await Tarn.#start(dir, lock, catalog, timelines, config, options, lake);
  }

  static async #start(
    dir: string | undefined,
    lock: DirLock | undefined,
    catalog: BranchCatalog,
    timelines: Timelines,
    config: TenantFile,
    options: TarnOptions,
    lake: { store: RemoteStorage; sync: EmbeddedLake } | undefined,
  ): Promise<Tarn> {
    lake?.sync.attach(timelines, catalog, config.timeline_id, config.segment_size);
    const compute_options: ComputeOptions = {
      segment_size: config.segment_size,
      checkpoint_wal_bytes: options.checkpoint_wal_bytes ?? 16 * 1024 * 1024,
      checkpoint_idle_ms: options.checkpoint_idle_ms ?? 1000,
      page_store_memory_bytes: options.page_store_memory_bytes ?? 16 * 1024 * 1024,
      page_cache_pages: options.page_cache_pages ?? 1024,
      read_only: false,
      log: options.log,
    };
    const compute_idle_ms = options.compute_idle_ms ?? 0;
    const tarn = new Tarn({ dir, lock, catalog, timelines, options: compute_options, compute_idle_ms, lake });
    try {
      await tarn.#compute(MAIN);
    } catch (error) {
      await lake?.sync.close().catch(() => {});
      await timelines.closeAll(); // the caller releases the lock; nothing stays open
      throw error;
    }
    return tarn;
  }

  /**
   * A client on `branch` (default `main`), whose compute starts on first use and, for other branches than `main`,
   * stops when its last client closes. With `at` (an LSN or a time) or
   * `readOnly`, a read-only client on the branch as it was then (time travel): writes fail with `ReadOnlyError`.
   */
  async connect(branch: string = MAIN, options: ConnectOptions = {}): Promise<TarnClient> {
    this.#assertOpen();
    if (options.replica) {
      if (options.at !== undefined) throw new RangeError("a replica follows the head: it takes no `at`");
      const source = {
        attach: () => this.attachCompute(branch, READ_ONLY_HEAD),
        headLsn: () => this.headLsn(branch),
      };
      return await connectReplica(source, branch, options.max_lag_ms ?? 1000);
    }
    if (options.at === undefined && !options.readOnly) {
      const compute = await this.#compute(branch);
      this.#clients.set(branch, (this.#clients.get(branch) ?? 0) + 1);
      return compute.connect({ on_close: () => this.#release(branch) });
    }
    const { compute, storage, lsn } = await this.#readOnlyCompute(branch, options.at);
    return compute.connect({
      read_only_label: `branch "${branch}" at ${formatLsn(lsn)}`,
      on_close: () => this.#stopReadOnly(compute, storage),
    });
  }

  /**
   * A branch's compute for a server session, started on first use, and the release that lets it stop (for other
   * branches than `main`) when its last user is gone.
   */
  async attachCompute(
    branch: string,
    at?: BranchAt,
  ): Promise<{ compute: Compute; release: () => Promise<void>; lsn?: Lsn }> {
    this.#assertOpen();
    if (at !== undefined) {
      // A replica's next compute replays the WAL since the primary's last checkpoint: make that little.
      if (at === READ_ONLY_HEAD) await (await this.#computes.get(branch)?.catch(() => undefined))?.checkpoint();
      const { compute, storage, lsn } = await this.#readOnlyCompute(branch, at === READ_ONLY_HEAD ? undefined : at);
      return { compute, release: () => this.#stopReadOnly(compute, storage), lsn };
    }
    const compute = await this.#compute(branch);
    this.#clients.set(branch, (this.#clients.get(branch) ?? 0) + 1);
    let released = false;
    return {
      compute,
      release: async () => {
        if (released) return;
        released = true;
        await this.#release(branch);
      },
    };
  }

  /** The head of `branch` now: the end of its durable WAL, above every acknowledged commit. */
  async headLsn(branch: string): Promise<Lsn> {
    this.#assertOpen();
    return (await this.#timelines.open(this.#branches.get(branch).timeline_id)).wal.flush_lsn;
  }

  async #readOnlyCompute(branch: string, at: BranchAt | undefined) {
    const known = this.#branches.get(branch);
    const lsn = await this.#branches.branchPoint(known, at);
    const storage = await this.#timelines.ephemeral(known.timeline_id, lsn);
    const settings = [...this.#options.settings ?? [], `tarn.replay_lsn=${formatLsn(lsn)}`];
    const compute = await Compute.start(storage, { ...this.#options, read_only: true, settings });
    this.#read_only.add(compute);
    return { compute, storage, lsn };
  }

  async #stopReadOnly(compute: Compute, storage: TimelineStorage): Promise<void> {
    if (!this.#read_only.delete(compute)) return;
    await compute.stop();
    await closeStorage(storage);
  }

  /** Makes branch `name` of `from` (default `main`) at `at` (default its head). Writes metadata only. */
  async createBranch(name: string, start: BranchStart = {}): Promise<BranchInfo> {
    this.#assertOpen();
    return this.#branches.info(await this.#branches.create(name, start));
  }

  /** Every branch: name, timeline, parent, branch point, creation time, protection. */
  branches(): BranchInfo[] {
    this.#assertOpen();
    return this.#branches.list();
  }

  /**
   * Deletes a branch and frees its storage. Refuses `main`, a protected branch, and a branch with children unless
   * `recursive` (then its descendants go too).
   */
  async deleteBranch(name: string, options: { recursive?: boolean } = {}): Promise<void> {
    this.#assertOpen();
    await this.#branches.delete(name, options);
  }

  /** Points a branch at its parent's head again: its own changes are discarded and its storage freed. */
  async resetBranch(name: string): Promise<BranchInfo> {
    this.#assertOpen();
    return this.#branches.info(await this.#branches.reset(name));
  }

  /** Protects a branch from deletion and reset (or lifts the protection). */
  async protectBranch(name: string, on: boolean): Promise<void> {
    this.#assertOpen();
    await this.#branches.protect(name, on);
  }

  /**
   * An ephemeral branch of `from` (default `main`) at `at` (default its head) and a client on it, kept in memory
   * only; `close()` or `await using` drops it. Forks of one database may run side by side. Closed forks are
   * rewound and reused for the next fork at the same point, and {@linkcode rewind} puts one back on demand.
   */
  async fork(start: BranchStart = {}): Promise<Fork> {
    this.#assertOpen();
    const parent = this.#branches.get(start.from ?? MAIN);
    return await this.#forks.fork(parent, await this.#branches.branchPoint(parent, start.at));
  }

  /**
   * Puts a fork back to the moment it was made: its writes are gone, its session is as new. In place (a few ms)
   * when it is safe; otherwise Postgres restarts on the rewound storage and {@linkcode Tarn.lastRewindFallback}
   * says why (a transaction left open, a library loaded since the fork).
   */
  async rewind(fork: Fork): Promise<void> {
    this.#assertOpen();
    await this.#forks.rewind(fork);
  }

  /** Why the last rewind of `fork` restarted Postgres instead of rewinding in place; undefined if it did not. */
  lastRewindFallback(fork: Fork): string | undefined {
    return this.#forks.lastRewindFallback(fork);
  }

  /** Bytes a branch's own storage takes on disk (its layers and WAL; what deleting it frees). */
  async branchDiskBytes(name: string): Promise<number> {
    return await this.#timelines.diskBytes(this.#branches.get(name).timeline_id);
  }

  /** Shuts every compute down cleanly, persists everything and releases the directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#idle_timers.values()) clearTimeout(timer);
    for (const compute of this.#read_only) await compute.stop();
    await this.#forks.close();
    for (const name of [...this.#computes.keys()]) await this.#stopCompute(name);
    // A clean close leaves the lake holding everything durable here.
    await this.#lake?.sync.close().catch((error) => this.#options.log?.("upload_failed", { error: String(error) }));
    await this.#timelines.closeAll();
    this.#lake?.store.close();
    await this.#lock?.release();
  }

  /** `await using tarn = await Tarn.open(dir)` closes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #compute(name: string): Promise<Compute> {
    let compute = this.#computes.get(name);
    if (compute === undefined) {
      const branch = this.#branches.get(name);
      compute = this.#timelines.open(branch.timeline_id).then((storage) => Compute.start(storage, this.#options));
      this.#computes.set(name, compute);
      compute.catch(() => this.#computes.delete(name));
    }
    return compute;
  }

  /** A branch other than `main` whose last client closed stops its compute: memory comes back at once. */
  async #release(name: string): Promise<void> {
    const left = (this.#clients.get(name) ?? 1) - 1;
    this.#clients.set(name, left);
    if (left > 0 || name === MAIN || this.#closed) return;
    if (this.#compute_idle_ms === 0) return await this.#stopCompute(name);
    clearTimeout(this.#idle_timers.get(name));
    const timer = setTimeout(() => {
      this.#idle_timers.delete(name);
      if ((this.#clients.get(name) ?? 0) === 0 && !this.#closed) {
        this.#stopCompute(name).catch((error) => console.error(`tarn: stopping branch ${name}'s compute:`, error));
      }
    }, this.#compute_idle_ms);
    Deno.unrefTimer(timer);
    this.#idle_timers.set(name, timer);
  }

  async #stopCompute(name: string): Promise<void> {
    const compute = this.#computes.get(name);
    if (compute === undefined) return;
    this.#computes.delete(name);
    await (await compute).stop();
  }

  #assertOpen(): void {
    if (this.#closed) throw new ClosedError(`the Tarn database${this.#dir === undefined ? "" : " in " + this.#dir}`);
  }
}

/**
 * Removes what a crash left half made: every timeline directory no branch names (a branch creation that never
 * reached the catalog, a deleted branch whose files were not all removed, or a creation of the database itself).
 */
async function removeUnfinished(dir: string, keep: string[]): Promise<void> {
  const timelines = `${dir}/timelines`;
  try {
    for await (const entry of Deno.readDir(timelines)) {
      if (!keep.includes(entry.name)) await Deno.remove(`${timelines}/${entry.name}`, { recursive: true });
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
