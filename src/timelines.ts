/**
 * The open timelines of one database: each one's page store and WAL, opened with its ancestors so that reads fall
 * through to the parent at the branch point. Creating a timeline writes no data: an empty page store and WAL log.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { TimelineStorage } from "./compute/compute.ts";
import type { Lsn } from "./lsn.ts";
import { TimelineWal } from "./replication/timeline_wal.ts";
import { WalLog } from "./replication/wal_log.ts";
import type { BranchCatalog } from "./storage/branch_catalog.ts";
import { PageStore } from "./storage/page_store.ts";
import { newTimelineId } from "./tenant_file.ts";

/** Where a timeline's ancestry comes from: the catalog for named branches, or given for ephemeral ones. */
type Lineage = { parent_timeline_id?: string; branch_lsn: Lsn };

/** Opens, creates and removes timelines; shares one open store per timeline. */
export class Timelines {
  readonly #dir: string | undefined;
  readonly #segment_size: number;
  readonly #catalog: BranchCatalog;
  readonly #block_cache_bytes: number;
  readonly #open = new Map<string, Promise<TimelineStorage>>();

  /**
   * @param dir the data directory (undefined: memory only)
   * @param segment_size WAL segment size in bytes
   * @param catalog where a timeline's parent and branch point are found
   * @param block_cache_bytes each page store's decompressed-block cache
   */
  constructor(dir: string | undefined, segment_size: number, catalog: BranchCatalog, block_cache_bytes: number) {
    this.#dir = dir;
    this.#segment_size = segment_size;
    this.#catalog = catalog;
    this.#block_cache_bytes = block_cache_bytes;
  }

  /** The storage of a catalogued timeline, opening it (and its ancestors) on first use. */
  open(timeline_id: string): Promise<TimelineStorage> {
    let storage = this.#open.get(timeline_id);
    if (storage === undefined) {
      const branch = this.#catalog.byTimeline(timeline_id);
      assert(branch !== undefined, `timeline ${timeline_id} is in no branch`);
      storage = this.#openWith(timeline_id, branch, this.#dir);
      this.#open.set(timeline_id, storage);
    }
    return storage;
  }

  /** A memory-only timeline branching off `parent_timeline_id` at `branch_lsn`: its writes are thrown away. */
  async ephemeral(parent_timeline_id: string, branch_lsn: Lsn): Promise<TimelineStorage> {
    return await this.#openWith(newTimelineId(), { parent_timeline_id, branch_lsn }, undefined);
  }

  async #openWith(timeline_id: string, lineage: Lineage, dir: string | undefined): Promise<TimelineStorage> {
    const parent = lineage.parent_timeline_id === undefined ? undefined : await this.open(lineage.parent_timeline_id);
    const pages = await PageStore.open({
      dir,
      timeline_id,
      memory_limit_bytes: this.#block_cache_bytes,
      ancestor: parent === undefined ? undefined : { source: parent.pages, branch_lsn: lineage.branch_lsn },
    });
    const own = await WalLog.open({
      dir: dir === undefined ? undefined : `${dir}/timelines/${timeline_id}`,
      segment_size: this.#segment_size,
    });
    return { pages, wal: new TimelineWal(own, parent?.wal, lineage.branch_lsn, this.#segment_size) };
  }

  /** Closes a timeline's stores (its compute must be stopped) and deletes its files. */
  async remove(timeline_id: string): Promise<void> {
    await this.close(timeline_id);
    if (this.#dir === undefined) return;
    await Deno.remove(`${this.#dir}/timelines/${timeline_id}`, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }

  /** Closes one timeline's stores, if open. */
  async close(timeline_id: string): Promise<void> {
    const storage = this.#open.get(timeline_id);
    if (storage === undefined) return;
    this.#open.delete(timeline_id);
    await closeStorage(await storage);
  }

  /** Closes every open timeline. */
  async closeAll(): Promise<void> {
    for (const timeline_id of [...this.#open.keys()].reverse()) await this.close(timeline_id);
  }

  /** Bytes the timeline's files take on disk (0 in memory). */
  async diskBytes(timeline_id: string): Promise<number> {
    if (this.#dir === undefined) return 0;
    return await directoryBytes(`${this.#dir}/timelines/${timeline_id}`);
  }
}

/** Closes an ephemeral or catalogued timeline's stores. */
export async function closeStorage(storage: TimelineStorage): Promise<void> {
  await storage.wal.own.close();
  await storage.pages.close();
}

async function directoryBytes(path: string): Promise<number> {
  let total = 0;
  try {
    for await (const entry of Deno.readDir(path)) {
      const child = `${path}/${entry.name}`;
      total += entry.isDirectory ? await directoryBytes(child) : (await Deno.stat(child)).size;
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return total;
}
