/**
 * One tenant on the pageserver: a database's branch catalog and timelines (page stores, and a copy of each
 * timeline's committed WAL for branches and for computes starting up), plus, per timeline, the compute that owns
 * it (its term) and how far its WAL is committed. Page versions are made durable only up to the committed WAL.
 * Each timeline's highest term is kept on disk (`terms.json`, `ownership_file.ts`), so a fence survives a restart.
 *
 * @module
 */
import { scanCommits } from "../replication/branch_point.ts";
import { type BranchInfo as BranchRowInfo, BranchManager, type BranchStart } from "../branch_manager.ts";
import { clusterTemplate, importTemplate } from "../compute/cluster_template.ts";
import type { Logger } from "../logger.ts";
import { formatLsn, type Lsn, LSN_MAX } from "../lsn.ts";
import { WalRangeError } from "../replication/wal_log.ts";
import { BranchCatalog } from "../storage/branch_catalog.ts";
import { BLOCK_SIZE, type PathMeta } from "../storage/page_api.ts";
import {
  newTimelineId,
  readTenantFile,
  TENANT_FORMAT_VERSION,
  type TenantFile,
  writeTenantFile,
} from "../tenant_file.ts";
import { Timelines } from "../timelines.ts";
import {
  type BranchInfo,
  type FileEntry,
  MAX_FILES_PER_REPLY,
  MAX_WAL_READ_BYTES,
  type PageKey,
  type PageReply,
  type PutRecord,
} from "./messages.ts";
import { listFiles } from "./file_listing.ts";
import { TermsFile } from "./ownership_file.ts";
import { PageserverError } from "./pageserver_error.ts";
import { type Ownership, TimelineOwners, type Writer } from "./timeline_owners.ts";
import type { TenantUploader } from "./tenant_uploader.ts";
import { parseConfigChange, readTenantConfig, type TenantConfig, writeTenantConfig } from "./tenant_config.ts";
import { LsnLeases } from "./lsn_leases.ts";
import { collectTenant, type GcMemory, type GcOutcome } from "./tenant_gc.ts";
import { type StorageReport, storageReport } from "./storage_report.ts";

/** Each timeline's cache of decompressed layer blocks. */
const BLOCK_CACHE_BYTES = 16 * 1024 * 1024;
/** How long a branch at a time waits for the parent's compute's WAL up to that time to arrive (then: retry). */
const WAL_CATCH_UP_MS = 30_000;
/** A branch at a time looks for a later commit in at most this much of the newest WAL, then in what arrives. */
const WAL_SCAN_BACK_BYTES = 16 * 1024 * 1024;
/** A bound on the records one look decodes. */
const WAL_SCAN_RECORDS = 1_000_000;
/** No WAL from the compute for this long: nothing it acknowledged is still on the way. */
const WAL_QUIET_MS = 300;
/** A timeline holding more than this in memory persists at once (bytes). */
const PERSIST_MEMORY_BYTES = 32 * 1024 * 1024;

/** Counters the metrics show. */
export type TenantCounters = { ingest_bytes: number; get_pages: number };

/** A tenant's database. */
export class Tenant {
  readonly name: string;
  readonly file: TenantFile;
  /** The tenant's branches and their rules. */
  readonly manager: BranchManager;
  readonly timelines: Timelines;
  readonly #owners: TimelineOwners;
  readonly #log: Logger;
  readonly counters: TenantCounters = { ingest_bytes: 0, get_pages: 0 };
  /** Keeps the lake in step with this tenant's directory (`--remote`); undefined: local only. */
  #uploader: TenantUploader | undefined;
  #uploading: Promise<void> | undefined;
  #config: TenantConfig = { format_version: 1, pitr_ms: 0 };
  readonly #gc_memory = new Map<string, GcMemory>();
  readonly #leases = new LsnLeases();
  #gc_running = false;
  /** When each timeline last received WAL from its compute (ms since the epoch). */
  readonly #wal_received_ms = new Map<string, number>();
  #dir = "";
  #catalog: BranchCatalog;
  #collecting: Promise<unknown> = Promise.resolve();

  private constructor(
    name: string,
    file: TenantFile,
    catalog: BranchCatalog,
    timelines: Timelines,
    terms: TermsFile,
    log: Logger,
  ) {
    this.name = name;
    this.file = file;
    this.timelines = timelines;
    this.manager = new BranchManager(catalog, timelines);
    this.#catalog = catalog;
    this.#owners = new TimelineOwners(terms, (id) => this.manager.byTimeline(id) !== undefined, name, log);
    this.#log = log;
  }

  /**
   * Opens the tenant in `dir`, or creates it there (initdb's cluster imported as its first WAL and pages). With an
   * uploader, its layers and metadata go to the lake as they are written.
   */
  static async open(
    dir: string,
    name: string,
    log: Logger,
    create: boolean,
    uploader?: TenantUploader,
  ): Promise<Tenant | undefined> {
    let file = await readTenantFile(dir);
    if (file === undefined && !create) return undefined;
    const fresh = file === undefined;
    if (file === undefined) {
      await Deno.mkdir(dir, { recursive: true });
      file = {
        format_version: TENANT_FORMAT_VERSION,
        timeline_id: newTimelineId(),
        segment_size: (await clusterTemplate()).segment_size,
        created_at: new Date().toISOString(),
      };
    }
    const catalog = await BranchCatalog.open(dir, file.timeline_id, new Date(file.created_at));
    const timelines = new Timelines(dir, file.segment_size, catalog, BLOCK_CACHE_BYTES);
    if (fresh) {
      const { pages, wal } = await timelines.open(file.timeline_id);
      importTemplate(await clusterTemplate(), pages, wal);
      await pages.flush(await wal.flush());
      await writeTenantFile(dir, file);
      log("tenant_created", { tenant: name, tenant_id: file.timeline_id });
    }
    const tenant = new Tenant(name, file, catalog, timelines, await TermsFile.open(dir), log);
    tenant.#uploader = uploader;
    if (uploader !== undefined) timelines.prepare = (timeline_id) => uploader.ensureLocal(timeline_id);
    tenant.#config = await readTenantConfig(dir);
    tenant.#dir = dir;
    return tenant;
  }

  /** The tenant's settings. */
  get config(): TenantConfig {
    return this.#config;
  }

  /** Changes settings (`{"pitr": "7d"}`); durable before it resolves. */
  async configure(body: unknown): Promise<TenantConfig> {
    const config = parseConfigChange(this.#config, body);
    await writeTenantConfig(this.#dir, config);
    this.#config = config;
    return config;
  }

  /**
   * Collects garbage on every open timeline whose layers doubled since its last run (`force`: whatever their size),
   * keeping each child branch's branch point readable. Runs one at a time; resolves with what each run did.
   */
  collectGarbage(force = false): Promise<({ timeline_id: string } & GcOutcome)[]> {
    // The timer's runs do not queue up behind a long one: it comes back at its next tick.
    if (!force && this.#gc_running) return Promise.resolve([]);
    this.#gc_running = true;
    return this.#serially(() =>
      collectTenant({
        tenant: this.name,
        file: this.file,
        catalog: this.#catalog,
        timelines: this.timelines,
        pitr_ms: this.#config.pitr_ms,
        memory: this.#gc_memory,
        leases: (timeline_id) => this.#leases.current(timeline_id),
        uploader: this.#uploader,
        log: this.#log,
      }, force).finally(() => this.#gc_running = false)
    );
  }

  /** Runs GC and branch creation one at a time. */
  #serially<T>(step: () => Promise<T>): Promise<T> {
    const run = this.#collecting.then(step);
    this.#collecting = run.catch(() => {});
    return run;
  }

  /**
   * Keeps `lsn` on `branch` readable for `ttl_ms` from now (a read-only compute or a replica reading there): GC keeps
   * an image there and the WAL from the redo point it sees. Renewing extends it. Refused below the GC cutoff.
   */
  lease(branch: string, lsn: Lsn, ttl_ms: number): Promise<{ expires_at: Date }> {
    return this.#serially(async () => {
      const { timeline_id } = this.manager.get(branch);
      (await this.timelines.open(timeline_id)).pages.checkReadable(lsn);
      return { expires_at: this.#leases.grant(timeline_id, lsn, ttl_ms) };
    });
  }

  /** Starts an upload of what changed since the last one, unless one runs; a failure is logged and retried later. */
  uploadSoon(): void {
    const uploader = this.#uploader;
    if (uploader === undefined || this.#uploading !== undefined) return;
    this.#uploading = uploader.sync(this.manager.list().map((b) => b.timeline_id), this.timelines.openIds())
      .catch((error) => this.#log("upload_failed", { tenant: this.name, error: String(error) }))
      .finally(() => this.#uploading = undefined);
  }

  /** When each open timeline was last read or written (ms since the epoch). */
  readonly #accessed = new Map<string, number>();

  /** Open timelines nobody used for `idle_ms`, least recently used first: what eviction may take. */
  idleTimelines(idle_ms: number, now_ms = Date.now()): { timeline_id: string; accessed_ms: number }[] {
    return this.timelines.openIds()
      .map((timeline_id) => ({ timeline_id, accessed_ms: this.#accessed.get(timeline_id) ?? 0 }))
      .filter((t) =>
        now_ms - t.accessed_ms >= idle_ms && !this.timelines.isAncestorOfOpen(t.timeline_id) &&
        (this.#owners.find(t.timeline_id)?.connections ?? 0) === 0
      )
      .sort((a, b) => a.accessed_ms - b.accessed_ms);
  }

  /**
   * Closes an idle timeline and deletes its local layer files once the lake has them all (the next use downloads
   * them again); resolves with the bytes freed. Nothing happens to a timeline holding versions not yet durable.
   */
  async evict(timeline_id: string): Promise<number> {
    const uploader = this.#uploader;
    const storage = this.timelines.opened(timeline_id);
    if (uploader === undefined || storage === undefined) return 0;
    await this.persist(timeline_id);
    const owner = this.#owner(timeline_id);
    // With its owner gone, versions above the WAL this server holds were never committed here; the next owner's
    // recovery makes them again from the WAL if they were committed. With an owner, they are its open transactions.
    if (owner.connections === 0) storage.pages.dropNewerThan(storage.wal.end_lsn);
    if (storage.pages.in_memory_bytes > 0 || this.timelines.isAncestorOfOpen(timeline_id)) {
      return 0;
    }
    await uploader.sync(this.manager.list().map((b) => b.timeline_id), [timeline_id]);
    await this.timelines.close(timeline_id);
    this.#accessed.delete(timeline_id);
    const freed_bytes = await uploader.evict(timeline_id);
    this.#log("timeline_evicted", { tenant: this.name, timeline_id, freed_bytes });
    return freed_bytes;
  }

  /** Bytes of layer files on the local disk, every timeline of the tenant. */
  async localLayerBytes(): Promise<number> {
    let total = 0;
    for (const branch of this.manager.list()) total += await this.timelines.layerBytes(branch.timeline_id);
    return total;
  }

  /** A timeline's storage here and in the lake, for `/status` and `/metrics`. */
  storageReport(timeline_id: string): Promise<StorageReport> {
    return storageReport(this.timelines, this.#uploader, timeline_id);
  }

  /** What a compute needs to start on `branch`. */
  async branchInfo(branch: string): Promise<BranchInfo> {
    const known = this.manager.get(branch);
    const { pages, wal } = await this.timelines.open(known.timeline_id);
    return {
      timeline_id: known.timeline_id,
      branch_lsn: known.branch_lsn,
      wal_start_lsn: wal.start_lsn,
      wal_end_lsn: wal.end_lsn,
      disk_consistent_lsn: pages.disk_consistent_lsn,
      term: this.#owners.term(known.timeline_id),
    };
  }

  /**
   * A compute with `term` takes the timeline (`timeline_owners.ts`): a higher term fences the owner, an equal one
   * changes nothing, a lower one or term 0 is refused. The term is on disk before this resolves.
   */
  async attach(timeline_id: string, term: bigint, wal_end_lsn: Lsn): Promise<bigint> {
    const { pages } = await this.#storage(timeline_id);
    return await this.#owners.takeOver(timeline_id, term, wal_end_lsn, pages);
  }

  /** A connection attached the timeline with `term` (see {@linkcode detach}). */
  attached(timeline_id: string, term: bigint): void {
    this.#owners.connected(timeline_id, term);
  }

  /** A connection that attached the timeline with `term` closed. */
  detach(timeline_id: string, term: bigint): void {
    this.#owners.disconnected(timeline_id, term);
  }

  /** Takes a batch of page versions and file events from the owner. */
  async put(timeline_id: string, writer: Writer, records: PutRecord[]): Promise<void> {
    const { pages } = await this.#owned(timeline_id, writer);
    const owner = this.#owner(timeline_id);
    for (const r of records) {
      if (r.kind === "page") {
        pages.putPage(r.path, r.blkno, r.lsn, r.value);
        this.counters.ingest_bytes += r.value.kind === "image" ? BLOCK_SIZE : r.value.ranges.length * 4 + 16;
      } else {
        pages.putEvent(r.path, r.lsn, r.event);
      }
      if (r.lsn > owner.ingested_lsn) owner.ingested_lsn = r.lsn;
    }
    if (pages.in_memory_bytes > PERSIST_MEMORY_BYTES) this.persistSoon(timeline_id);
  }

  /** Takes committed WAL from the owner; versions up to `commit_lsn` may now be made durable. */
  async wal(timeline_id: string, writer: Writer, lsn_start: Lsn, commit_lsn: Lsn, bytes: Uint8Array): Promise<void> {
    const { wal } = await this.#owned(timeline_id, writer);
    if (lsn_start > wal.end_lsn) {
      throw new PageserverError(
        "bad_request",
        `WAL at ${formatLsn(lsn_start)} leaves a gap after ${formatLsn(wal.end_lsn)}: send from the end`,
      );
    }
    const skip = wal.end_lsn - lsn_start;
    if (skip < BigInt(bytes.length)) wal.append(wal.end_lsn, bytes.subarray(Number(skip)));
    this.#wal_received_ms.set(timeline_id, Date.now());
    this.counters.ingest_bytes += bytes.length;
    const owner = this.#owner(timeline_id);
    if (commit_lsn > owner.commit_lsn) owner.commit_lsn = commit_lsn < wal.end_lsn ? commit_lsn : wal.end_lsn;
  }

  /**
   * Makes every version at or below the owner's commit LSN durable: the WAL copy first, then a layer. Resolves with
   * the durable LSN and the WAL end. Without a writer: the server's own persist.
   */
  async persist(timeline_id: string, writer?: Writer): Promise<{ disk_consistent_lsn: Lsn; wal_end_lsn: Lsn }> {
    // The server's own persist is no use of the timeline: it must not keep an idle timeline from eviction.
    const storage = writer === undefined ? this.#storage(timeline_id, false) : this.#owned(timeline_id, writer);
    const { pages, wal } = await storage;
    const owner = this.#owner(timeline_id);
    await wal.flush();
    if (owner.commit_lsn > pages.disk_consistent_lsn) await pages.flush(owner.commit_lsn);
    return { disk_consistent_lsn: pages.disk_consistent_lsn, wal_end_lsn: wal.end_lsn };
  }

  /** Starts a persist unless one runs; a failure is logged (the next persist tries again). */
  persistSoon(timeline_id: string): void {
    const owner = this.#owner(timeline_id);
    if (owner.persisting !== undefined) return;
    owner.persisting = this.persist(timeline_id)
      .then(() => {}, (error) => this.#log("persist_failed", { tenant: this.name, timeline_id, error: String(error) }))
      .finally(() => owner.persisting = undefined);
  }

  /** Persists every open timeline that holds committed versions in memory. */
  persistIdle(): void {
    for (const [timeline_id, owner] of this.#owners.entries()) {
      // A closed (evicted) timeline holds nothing in memory; opening it would bring its layers back for nothing.
      if (owner.commit_lsn > 0n && this.timelines.opened(timeline_id) !== undefined) this.persistSoon(timeline_id);
    }
  }

  /** Pages at `lsn` (LSN_MAX: the newest); refuses a key whose asker wrote a version this server has not seen. */
  async getPages(timeline_id: string, lsn: Lsn, keys: PageKey[]): Promise<PageReply[]> {
    const { pages, wal } = await this.#storage(timeline_id);
    const owner = this.#owner(timeline_id);
    if (lsn !== LSN_MAX && lsn > wal.end_lsn && lsn > owner.ingested_lsn) {
      throw new PageserverError(
        "lsn_out_of_range",
        `LSN ${formatLsn(lsn)} is beyond the end of timeline ${timeline_id} (${formatLsn(wal.end_lsn)})`,
      );
    }
    this.counters.get_pages += keys.length;
    return keys.map(({ path, blkno, not_modified_since }) => {
      if (not_modified_since > owner.ingested_lsn && not_modified_since > pages.disk_consistent_lsn) {
        throw new PageserverError(
          "not_yet_ingested",
          `${path} block ${blkno} was written at ${formatLsn(not_modified_since)}, but timeline ${timeline_id} ` +
            `has versions up to ${formatLsn(owner.ingested_lsn)} only: send the writes before reading them back`,
        );
      }
      const meta = pages.stat(path, lsn);
      if (meta?.kind !== "file") return "absent";
      if (blkno * BLOCK_SIZE >= meta.size_bytes) return "zero";
      return pages.getPage(path, blkno, lsn) ?? "absent";
    });
  }

  /** File or directory metadata at `lsn`. */
  async stat(timeline_id: string, lsn: Lsn, path: string): Promise<PathMeta | undefined> {
    return (await this.#storage(timeline_id)).pages.stat(path, lsn);
  }

  /** Names in a directory at `lsn`. */
  async readdir(timeline_id: string, lsn: Lsn, path: string): Promise<string[]> {
    return (await this.#storage(timeline_id)).pages.readdir(path, lsn);
  }

  /** The timeline's files and directories at `lsn`, in byte order after `after`, a page of them. */
  async listFiles(timeline_id: string, lsn: Lsn, after: string): Promise<{ entries: FileEntry[]; more: boolean }> {
    return listFiles((await this.#storage(timeline_id)).pages, lsn, after, MAX_FILES_PER_REPLY);
  }

  /** WAL bytes of the timeline (its ancestors' below its branch point). */
  async readWal(timeline_id: string, lsn_start: Lsn, lsn_end: Lsn): Promise<Uint8Array> {
    const { wal } = await this.#storage(timeline_id);
    if (lsn_end - lsn_start > BigInt(MAX_WAL_READ_BYTES)) {
      throw new PageserverError(
        "bad_request",
        `a read of ${lsn_end - lsn_start} WAL bytes: at most ${MAX_WAL_READ_BYTES} are read at once`,
      );
    }
    if (lsn_end < lsn_start || lsn_start < wal.start_lsn || lsn_end > wal.end_lsn) {
      throw new PageserverError(
        "lsn_out_of_range",
        `WAL ${formatLsn(lsn_start)}-${formatLsn(lsn_end)} is not inside timeline ${timeline_id}'s ` +
          `${formatLsn(wal.start_lsn)}-${formatLsn(wal.end_lsn)}`,
      );
    }
    try {
      return wal.read(lsn_start, lsn_end);
    } catch (error) {
      if (error instanceof WalRangeError) throw new PageserverError("lsn_out_of_range", error.message);
      throw error;
    }
  }

  /** Every branch (the administration interface of `admin.ts`). */
  branches(): BranchRowInfo[] {
    return this.manager.list();
  }

  /** Makes a branch at `start` (default: the head of `main` as the pageserver has it committed). */
  createBranch(name: string, start?: BranchStart): Promise<BranchRowInfo> {
    // In turn with GC: a GC that began before the branch existed would not keep its branch point.
    return this.#serially(async () => {
      if (start?.at instanceof Date) {
        await this.#walCovers(this.manager.get(start.from ?? "main").timeline_id, start.at);
      }
      return this.manager.info(await this.manager.create(name, start));
    });
  }

  /**
   * Waits (a few seconds at most) until the WAL received from the timeline's compute holds every commit acknowledged
   * at or before `time`, then makes the WAL copy durable. The compute ships WAL in order, and commit records are in
   * time order, so a commit after `time` received says that all before it are here; when none comes (the database
   * went quiet), WAL not arriving for a while says that nothing is in flight. Receive times alone would not do:
   * behind a backlog, WAL received after `time` may have been sent long before it. A timeline no compute is attached
   * to has shipped everything already.
   */
  async #walCovers(timeline_id: string, time: Date): Promise<void> {
    const owner = this.#owners.find(timeline_id);
    const { wal } = await this.#storage(timeline_id, false);
    const deadline_ms = Date.now() + WAL_CATCH_UP_MS;
    const back = wal.end_lsn - BigInt(WAL_SCAN_BACK_BYTES);
    let from: { boundary: Lsn } | { page_of: Lsn } = { page_of: back > wal.start_lsn ? back : wal.start_lsn };
    for (let covered = false; !covered && owner !== undefined && owner.connections > 0;) {
      const scan = scanCommits(wal, time, wal.end_lsn, from, WAL_SCAN_RECORDS);
      covered = scan.passed || Date.now() - (this.#wal_received_ms.get(timeline_id) ?? 0) > WAL_QUIET_MS;
      if (!covered && Date.now() > deadline_ms) {
        throw new PageserverError(
          "not_yet_ingested",
          `a branch at ${time.toISOString()}: the WAL of that time has not reached the pageserver after ` +
            `${WAL_CATCH_UP_MS / 1000} s (it is behind its compute); retry in a few seconds`,
        );
      }
      from = { boundary: scan.resume_lsn };
      if (!covered) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await wal.flush();
  }

  /** Deletes a branch and its storage. */
  async deleteBranch(name: string, options?: { recursive?: boolean }): Promise<void> {
    await this.manager.delete(name, options);
  }

  /** Points a branch at its parent's head again. */
  resetBranch(name: string): Promise<BranchRowInfo> {
    return this.#serially(async () => this.manager.info(await this.manager.reset(name)));
  }

  /** Protects a branch from deletion and reset (or lifts it). */
  async protectBranch(name: string, on: boolean): Promise<void> {
    await this.manager.protect(name, on);
  }

  /** Bytes a branch's own storage takes on disk. */
  async branchDiskBytes(name: string): Promise<number> {
    return await this.timelines.diskBytes(this.manager.get(name).timeline_id);
  }

  /** Terms and LSNs of the timelines computes attached to, for `/status`. */
  owners(): { timeline_id: string; term: bigint; commit_lsn: Lsn; ingested_lsn: Lsn }[] {
    return [...this.#owners.entries()].map(([timeline_id, o]) => ({ timeline_id, ...o }));
  }

  /** Waits for persists and closes every timeline. */
  async close(): Promise<void> {
    const owned = [...this.#owners.entries()];
    await Promise.all(owned.map(([, o]) => o.persisting));
    for (const [timeline_id] of owned) {
      if (this.timelines.opened(timeline_id) !== undefined) await this.persist(timeline_id).catch(() => {});
    }
    await this.#uploading;
    // A clean stop leaves the lake holding everything that is durable here.
    await this.#uploader?.sync(this.manager.list().map((b) => b.timeline_id), this.timelines.openIds())
      .catch((error) => this.#log("upload_failed", { tenant: this.name, error: String(error), at: "stop" }));
    await this.timelines.closeAll();
  }

  async #storage(timeline_id: string, use = true) {
    if (this.manager.byTimeline(timeline_id) === undefined) {
      throw new PageserverError("unknown_timeline", `tenant "${this.name}" has no timeline ${timeline_id}`);
    }
    if (use) this.#accessed.set(timeline_id, Date.now());
    return await this.timelines.open(timeline_id);
  }

  /** The timeline's storage, when `writer` owns it: its term is the owner's, and its connection attached with it. */
  async #owned(timeline_id: string, writer: Writer) {
    const storage = await this.#storage(timeline_id);
    this.#owners.checkWriter(timeline_id, writer);
    return storage;
  }

  #owner(timeline_id: string): Ownership {
    return this.#owners.get(timeline_id);
  }
}
