/**
 * Forks: ephemeral, memory-only branches with their own compute, for a branch per test. A fork's compute is
 * snapshotted when made; closing a fork rewinds it to that snapshot (a few ms) and keeps it idle, so the next fork
 * at the same branch point starts at once. A fork also rewinds on demand ({@linkcode ForkPool.rewind}).
 *
 * @module
 */
import type { TarnClient } from "./client.ts";
import { Compute, type ComputeOptions, type ComputeSnapshot, type TimelineStorage } from "./compute/compute.ts";
import { enginePool } from "./compute/engine_pool.ts";
import { BranchRuleError } from "./errors.ts";
import { formatLsn, type Lsn } from "./lsn.ts";
import type { Branch } from "./storage/branch_catalog.ts";
import { closeStorage, type Timelines } from "./timelines.ts";

/** A client on a fork; `close()` or `await using` ends the fork. */
export type Fork = TarnClient & { readonly branch: string };

/** Idle forks kept per branch point: enough for a test file's forks side by side, bounded in memory. */
const MAX_IDLE_PER_POINT = 2;
/**
 * A fork's memory: a test touches little data, and shared memory (buffer pool, per-connection arrays) is most of
 * what a snapshot copies on every rewind and of what a fork holds (25 MB heap with the defaults, 19 MB with these).
 * Pages past the buffer pool come from the compute's page cache, smaller for forks too.
 */
const FORK_SETTINGS = ["shared_buffers=1MB", "max_connections=1"];
const FORK_PAGE_CACHE_PAGES = 256;

type ForkRecord = { key: string; compute: Compute; storage: TimelineStorage; snapshot: ComputeSnapshot };

/** The forks of one database, live and idle. */
export class ForkPool {
  readonly #timelines: Timelines;
  readonly #options: ComputeOptions;
  readonly #live = new Map<TarnClient, ForkRecord>();
  readonly #idle = new Map<string, ForkRecord[]>();
  #closed = false;
  #self_tested = false;
  /** Set when the start-up self-test found in-place rewinds unsafe: every rewind then restarts Postgres. */
  #rewind_disabled: string | undefined;

  /**
   * @param timelines where forks' memory-only timelines come from
   * @param options how their computes run
   */
  constructor(timelines: Timelines, options: ComputeOptions) {
    this.#timelines = timelines;
    this.#options = {
      ...options,
      page_cache_pages: FORK_PAGE_CACHE_PAGES,
      settings: [...options.settings ?? [], ...FORK_SETTINGS],
    };
  }

  /** A fork of `parent` at `branch_lsn`: an idle one rewound there already, or a new one. */
  async fork(parent: Branch, branch_lsn: Lsn): Promise<Fork> {
    const key = `${parent.timeline_id}@${branch_lsn}`;
    const record = this.#idle.get(key)?.pop() ?? await this.#start(key, parent, branch_lsn);
    const client = record.compute.connect({ on_close: () => this.#release(client) });
    this.#live.set(client, record);
    return Object.assign(client, { branch: `${parent.name}@${formatLsn(branch_lsn)}` });
  }

  async #start(key: string, parent: Branch, branch_lsn: Lsn): Promise<ForkRecord> {
    // The next parked engine comes after this fork is made, snapshot and all.
    const made = Promise.withResolvers<void>();
    enginePool.refill(made.promise);
    try {
      return await this.#make(key, parent, branch_lsn);
    } finally {
      made.resolve();
    }
  }

  async #make(key: string, parent: Branch, branch_lsn: Lsn): Promise<ForkRecord> {
    const storage = await this.#timelines.ephemeral(parent.timeline_id, branch_lsn);
    const compute = await Compute.start(storage, this.#options);
    // PL/pgSQL loaded before the snapshot stays loaded after a rewind; loaded after it, it forces a restart.
    await compute.connect().exec("do $$ begin end $$");
    const record = { key, compute, storage, snapshot: await compute.snapshot() };
    if (!this.#self_tested) await this.#selfTest(record);
    return record;
  }

  /**
   * Once per pool: dirty a fork's session and storage, rewind it, and check that nothing is left. If anything is,
   * in-place rewinds depend on PGlite internals that changed: they are switched off, with the reason logged.
   */
  async #selfTest(record: ForkRecord): Promise<void> {
    this.#self_tested = true;
    const db = record.compute.connect();
    try {
      await db.exec("create table tarn_rewind_self_test (x int); set application_name = 'tarn-self-test'");
      record.snapshot = await record.compute.rewind(record.snapshot);
      const { rows } = await db.query<{ tables: number; name: string }>(
        "select count(*)::int as tables, current_setting('application_name') as name " +
          "from pg_class where relname = 'tarn_rewind_self_test'",
      );
      if (rows[0].tables !== 0 || rows[0].name !== "") throw new Error(`state survived: ${JSON.stringify(rows[0])}`);
    } catch (error) {
      this.#rewind_disabled = `the rewind self-test failed (${String(error)})`;
      console.warn(`tarn: forks restart Postgres instead of rewinding in place: ${this.#rewind_disabled}`);
      record.snapshot = await record.compute.rewind(record.snapshot, this.#rewind_disabled);
    }
  }

  /** Puts a live fork back to the moment it was made. */
  async rewind(fork: Fork): Promise<void> {
    const record = this.#live.get(fork);
    if (record === undefined) throw new BranchRuleError("rewind takes a fork made by fork() that is still open");
    record.snapshot = await record.compute.rewind(record.snapshot, this.#rewind_disabled);
  }

  /** Why the last rewind of `fork` restarted Postgres instead of rewinding in place; undefined if it did not. */
  lastRewindFallback(fork: Fork): string | undefined {
    return this.#live.get(fork)?.compute.last_rewind_fallback;
  }

  /** A closed fork is rewound and kept idle for the next fork at its point, or stopped when enough are idle. */
  async #release(client: TarnClient): Promise<void> {
    const record = this.#live.get(client);
    if (record === undefined) return;
    this.#live.delete(client);
    const idle = this.#idle.get(record.key) ?? [];
    if (!this.#closed && idle.length < MAX_IDLE_PER_POINT) {
      record.snapshot = await record.compute.rewind(record.snapshot, this.#rewind_disabled);
      this.#idle.set(record.key, [...idle, record]);
      return;
    }
    await stop(record);
  }

  /** Stops every fork, live and idle. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const client of [...this.#live.keys()]) await client.close();
    for (const records of this.#idle.values()) for (const record of records) await stop(record);
    this.#idle.clear();
  }
}

async function stop(record: ForkRecord): Promise<void> {
  await record.compute.stop();
  await closeStorage(record.storage);
}
