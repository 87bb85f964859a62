/**
 * The open timelines of one database: each one's page store and WAL, opened with its ancestors so that reads fall
 * through to the parent at the branch point. Creating a timeline writes no data: an empty page store and WAL log.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Lsn } from "./lsn.ts";
import { QuorumWal } from "./replication/quorum_wal.ts";
import { ConfigurationError } from "./errors.ts";
import { parseSafekeeperAddress, type SafekeeperAddress } from "./replication/safekeeper_client.ts";
import { TimelineWal } from "./replication/timeline_wal.ts";
import type { OwnWal } from "./replication/wal_api.ts";
import { WalLog } from "./replication/wal_log.ts";
import type { BranchCatalog } from "./storage/branch_catalog.ts";
import { PageStore } from "./storage/page_store.ts";
import { newTimelineId } from "./tenant_file.ts";
import type { Logger } from "./logger.ts";

/** A timeline's storage held in this process: its page store and its WAL. */
export type TimelineStorage = { pages: PageStore; wal: TimelineWal };

/** Where a timeline's ancestry comes from: the catalog for named branches, or given for ephemeral ones. */
type Lineage = { parent_timeline_id?: string; branch_lsn: Lsn };

/** Safekeepers that make the WAL of a database's durable timelines durable, instead of local fsyncs. */
export type WalQuorum = {
  safekeepers: SafekeeperAddress[];
  /** Names the database on the safekeepers (its root timeline id). */
  tenant_id: string;
  /** How long opening a timeline waits to be elected by a majority (ms). */
  election_timeout_ms: number;
  log: Logger;
};

/**
 * The quorum for safekeepers given as `HOST:PORT` (none: undefined) for the database whose root timeline is
 * `tenant_id`; an in-memory database cannot have one.
 */
export function walQuorum(
  dir: string | undefined,
  tenant_id: string,
  safekeepers: string[] | undefined,
  election_timeout_ms = 30_000,
  log: WalQuorum["log"] = () => {},
): WalQuorum | undefined {
  if (safekeepers === undefined || safekeepers.length === 0) return undefined;
  if (dir === undefined) {
    throw new ConfigurationError("an in-memory database cannot use safekeepers: give Tarn.open a directory");
  }
  return { safekeepers: safekeepers.map(parseSafekeeperAddress), tenant_id, election_timeout_ms, log };
}

/** Opens, creates and removes timelines; shares one open store per timeline. */
export class Timelines {
  readonly #dir: string | undefined;
  readonly #segment_size: number;
  readonly #catalog: BranchCatalog;
  readonly #block_cache_bytes: number;
  readonly #open = new Map<string, Promise<TimelineStorage>>();
  readonly #opened = new Map<string, TimelineStorage>();
  readonly #quorum: WalQuorum | undefined;
  /** Run before a catalogued timeline's stores open: brings its layers to the local disk when they are not there. */
  prepare: ((timeline_id: string) => Promise<void>) | undefined;

  /**
   * @param dir the data directory (undefined: memory only)
   * @param segment_size WAL segment size in bytes
   * @param catalog where a timeline's parent and branch point are found
   * @param block_cache_bytes each page store's decompressed-block cache
   * @param quorum safekeepers for the WAL of catalogued timelines (needs `dir`); undefined: local fsyncs
   */
  constructor(
    dir: string | undefined,
    segment_size: number,
    catalog: BranchCatalog,
    block_cache_bytes: number,
    quorum?: WalQuorum,
  ) {
    assert(quorum === undefined || dir !== undefined, "safekeepers need a data directory");
    this.#quorum = quorum;
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
      const prepared = this.prepare?.(timeline_id) ?? Promise.resolve();
      const opening = prepared.then(() => this.#openWith(timeline_id, branch, this.#dir));
      // A failed open (safekeepers unreachable) is not remembered: the next use tries again.
      opening.then((done) => {
        if (this.#open.get(timeline_id) === opening) this.#opened.set(timeline_id, done);
      }, () => {
        if (this.#open.get(timeline_id) === opening) this.#open.delete(timeline_id);
      });
      this.#open.set(timeline_id, storage = opening);
    }
    return storage;
  }

  /** The storage of a timeline if it is open already (metrics must not open one). */
  opened(timeline_id: string): TimelineStorage | undefined {
    return this.#opened.get(timeline_id);
  }

  /** The timelines open now. */
  openIds(): string[] {
    return [...this.#open.keys()];
  }

  /** Whether an open timeline reads through `timeline_id` (its ancestor): it cannot close while that one is open. */
  isAncestorOfOpen(timeline_id: string): boolean {
    for (const id of this.#open.keys()) {
      for (let b = this.#catalog.byTimeline(id); b?.parent_timeline_id !== undefined;) {
        if (b.parent_timeline_id === timeline_id) return true;
        b = this.#catalog.byTimeline(b.parent_timeline_id);
      }
    }
    return false;
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
    let own: OwnWal;
    try {
      own = await this.#openOwnWal(timeline_id, lineage.branch_lsn, dir);
    } catch (error) {
      await pages.close();
      throw error;
    }
    return { pages, wal: new TimelineWal(own, parent?.wal, lineage.branch_lsn, this.#segment_size) };
  }

  /** The timeline's own WAL: a local log, which a quorum of safekeepers makes durable when there is one. */
  async #openOwnWal(timeline_id: string, branch_lsn: Lsn, dir: string | undefined): Promise<OwnWal> {
    const local = await WalLog.open({
      dir: dir === undefined ? undefined : `${dir}/timelines/${timeline_id}`,
      segment_size: this.#segment_size,
    });
    const quorum = this.#quorum;
    if (quorum === undefined || dir === undefined) return local;
    try {
      return await QuorumWal.open({
        local,
        safekeepers: quorum.safekeepers,
        tenant_id: quorum.tenant_id,
        timeline_id,
        segment_size: this.#segment_size,
        timeline_start_lsn: branch_lsn,
        election_timeout_ms: quorum.election_timeout_ms,
        log: quorum.log,
      });
    } catch (error) {
      await local.close();
      throw error;
    }
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
    this.#opened.delete(timeline_id);
    await closeStorage(await storage);
  }

  /** Closes every open timeline. */
  async closeAll(): Promise<void> {
    for (const timeline_id of [...this.#open.keys()].reverse()) await this.close(timeline_id);
  }

  /** Bytes of the timeline's layer files on disk (0 in memory). */
  async layerBytes(timeline_id: string): Promise<number> {
    if (this.#dir === undefined) return 0;
    let total = 0;
    try {
      for await (const entry of Deno.readDir(`${this.#dir}/timelines/${timeline_id}`)) {
        if (entry.isFile && entry.name.endsWith(".layer")) {
          total += await fileBytes(`${this.#dir}/timelines/${timeline_id}/${entry.name}`);
        }
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    return total;
  }

  /** Bytes the timeline's files take on disk (0 in memory). */
  async diskBytes(timeline_id: string): Promise<number> {
    if (this.#dir === undefined) return 0;
    return await directoryBytes(`${this.#dir}/timelines/${timeline_id}`);
  }
}

/** Closes an ephemeral or catalogued timeline's stores. */
export async function closeStorage(storage: { pages: { close(): Promise<void> }; wal: TimelineWal }): Promise<void> {
  await storage.wal.own.close();
  await storage.pages.close();
}

async function directoryBytes(path: string): Promise<number> {
  let total = 0;
  try {
    for await (const entry of Deno.readDir(path)) {
      const child = `${path}/${entry.name}`;
      total += entry.isDirectory ? await directoryBytes(child) : await fileBytes(child);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return total;
}

/** A file's size; 0 when a merge or GC deleted it since the directory was listed. */
async function fileBytes(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0;
    throw error;
  }
}
