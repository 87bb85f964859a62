/**
 * The lake for an embedded database (`Tarn.open(dir, { remote })`, `tarn start --remote`): the same objects a
 * pageserver writes for a tenant (`src/pageserver/remote_index.ts`, under the tenant name `db`), and, when the WAL
 * is the database's own (no safekeepers), its sealed segments and, at a clean close, the unsealed rest, as the
 * safekeepers offload theirs. A directory opened empty with the same remote is filled from the lake first: its
 * metadata and WAL at once, each timeline's layers when it opens.
 *
 * @module
 */
import type { Logger } from "./logger.ts";
import type { RemoteStorage } from "./remote_storage/mod.ts";
import { type OffloadedTimeline, WalOffloader } from "./replication/safekeeper/wal_offload.ts";
import { QuorumWal } from "./replication/quorum_wal.ts";
import { downloadTenant } from "./pageserver/tenant_download.ts";
import { TenantUploader } from "./pageserver/tenant_uploader.ts";
import type { BranchCatalog } from "./storage/branch_catalog.ts";
import type { Timelines } from "./timelines.ts";

/** The tenant name an embedded database has in its lake. */
export const EMBEDDED_TENANT = "db";
/** How often layers, indexes and sealed WAL segments are uploaded (ms). */
const UPLOAD_EVERY_MS = 1000;

/** Keeps an embedded database's lake in step with its directory. */
export class EmbeddedLake {
  readonly #uploader: TenantUploader;
  readonly #offloader: WalOffloader;
  readonly #log: Logger;
  #timelines: Timelines | undefined;
  #catalog: BranchCatalog | undefined;
  #tenant_id = "";
  #segment_size = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #running: Promise<void> | undefined;

  /**
   * @param store the lake
   * @param dir the database's directory
   * @param log where uploads and failures are told
   */
  constructor(store: RemoteStorage, dir: string, log: Logger) {
    this.#uploader = new TenantUploader(store, EMBEDDED_TENANT, dir, `embedded-${crypto.randomUUID()}`, log);
    this.#offloader = new WalOffloader(store, log);
    this.#log = log;
  }

  /** Fills an empty `dir` from the lake; false when the lake holds no database yet. */
  static async restore(store: RemoteStorage, dir: string, log: Logger): Promise<boolean> {
    return (await downloadTenant(store, EMBEDDED_TENANT, dir, log)) !== undefined;
  }

  /** Starts keeping `timelines` in the lake; each timeline's layers come from the lake when it opens. */
  attach(timelines: Timelines, catalog: BranchCatalog, tenant_id: string, segment_size: number): void {
    this.#timelines = timelines;
    this.#catalog = catalog;
    this.#tenant_id = tenant_id;
    this.#segment_size = segment_size;
    timelines.prepare = (timeline_id) => this.#uploader.ensureLocal(timeline_id);
    this.#timer = setInterval(() => {
      if (this.#running !== undefined) return;
      this.#running = this.#upload()
        .catch((error) => this.#log("upload_failed", { error: String(error), retry_ms: UPLOAD_EVERY_MS }))
        .finally(() => this.#running = undefined);
    }, UPLOAD_EVERY_MS);
    Deno.unrefTimer(this.#timer);
  }

  async #upload(): Promise<void> {
    const timelines = this.#timelines!;
    await this.#offloader.tick(this.#ownWal());
    await this.#uploader.sync(this.#catalog!.list().map((b) => b.timeline_id), timelines.openIds());
  }

  /** The open timelines whose WAL is this database's own (a quorum's safekeepers offload theirs). */
  #ownWal(): OffloadedTimeline[] {
    const out: OffloadedTimeline[] = [];
    for (const timeline_id of this.#timelines!.openIds()) {
      const own = this.#timelines!.opened(timeline_id)?.wal.own;
      if (own === undefined || own instanceof QuorumWal || own.end_lsn === 0n) continue;
      out.push({
        tenant_id: this.#tenant_id,
        timeline_id,
        segment_size: this.#segment_size,
        // The local log's durable WAL is committed: without safekeepers, a commit is its fsync.
        source: {
          commit_lsn: own.flush_lsn,
          flush_lsn: own.flush_lsn,
          wal_start_lsn: own.start_lsn,
          readCommitted: (lsn_start, lsn_end) => own.read(lsn_start, lsn_end),
        },
      });
    }
    return out;
  }

  /** Stops uploading after a last upload of everything durable (the unsealed WAL segment included). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
    if (this.#timelines === undefined) return;
    await this.#offloader.uploadPartials(this.#ownWal());
    await this.#uploader.sync(this.#catalog!.list().map((b) => b.timeline_id), this.#timelines.openIds());
  }
}
