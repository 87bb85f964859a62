/**
 * The timelines one safekeeper process serves: one {@linkcode Safekeeper} per (tenant, timeline), shared by every
 * connection to it, opened on the first Hello or, for timelines already on disk, when the registry opens. Each
 * timeline directory holds `timeline.json` (its WAL segment size, which the WAL files alone cannot always tell) next to
 * what {@linkcode FileSafekeeperStorage} keeps.
 *
 * @module
 */
import assert from "node:assert/strict";
import { readCheckedJson, writeCheckedJson } from "../../checked_json.ts";
import { DirLock } from "../../dir_lock.ts";
import type { Logger } from "../../logger.ts";
import { formatLsn, type Lsn } from "../../lsn.ts";
import { FileSafekeeperStorage } from "./file_storage.ts";
import { type Hello, ID_PATTERN, isSegmentSize, type StatusResponse } from "./messages.ts";
import { Safekeeper } from "./safekeeper.ts";

/** The version of `timeline.json` this code writes and reads. */
export const TIMELINE_FORMAT_VERSION = 1;
const TIMELINE_KEY = "timeline";
const TIMELINE_FILE = "timeline.json";

/** `timeline.json`. */
interface TimelineFile {
  format_version: number;
  segment_size: number;
}

/** Something bound to a timeline that must stop when the timeline fails (a connection). */
export interface Closeable {
  /** Stops it; idempotent. */
  close(): void;
}

/** A Hello the safekeeper will not serve; the connection is closed with this as the logged reason. */
export class HelloRefusedError extends Error {
  /** @param reason why, and what to do */
  constructor(reason: string) {
    super(`hello refused: ${reason}`);
    this.name = "HelloRefusedError";
  }
}

/** A served timeline and where it stands. */
export interface TimelineStatus {
  /** The tenant. */
  readonly tenant_id: string;
  /** The timeline. */
  readonly timeline_id: string;
  /** The safekeeper's term and positions for it. */
  readonly status: StatusResponse;
  /** The end of its WAL offloaded to remote storage, when the safekeeper offloads. */
  readonly offloaded_lsn?: Lsn;
}

/** A timeline that stopped: it refuses every Hello until the process restarts. */
export interface FailedTimeline {
  /** The tenant. */
  readonly tenant_id: string;
  /** The timeline. */
  readonly timeline_id: string;
  /** What went wrong. */
  readonly error: string;
}

interface Entry {
  readonly tenant_id: string;
  readonly timeline_id: string;
  readonly segment_size: number;
  readonly safekeeper: Safekeeper;
  readonly bound: Set<Closeable>;
}

/** Options of {@linkcode TimelineRegistry.open}. */
export interface TimelineRegistryOptions {
  /** The data directory; locked while the registry is open. */
  dir: string;
  /** Where events go. */
  log: Logger;
  /** The most timelines served (on disk and opened by Hellos together). */
  max_timelines: number;
}

/** The timelines of one data directory. */
export class TimelineRegistry {
  readonly #dir: string;
  readonly #log: Logger;
  readonly #max_timelines: number;
  readonly #lock: DirLock;
  /** Timelines opening or open, by `tenant/timeline`: concurrent first Hellos share one opening. */
  readonly #opening = new Map<string, Promise<Entry>>();
  readonly #entries = new Map<string, Entry>();
  /**
   * Timelines whose storage failed. They stay failed until restart: after a failed fsync the page cache may hold
   * bytes that never reached the disk, so reading them back in this process could acknowledge lost WAL.
   */
  readonly #failed = new Map<string, FailedTimeline>();
  #closed = false;

  private constructor(opts: TimelineRegistryOptions, lock: DirLock) {
    this.#dir = opts.dir;
    this.#log = opts.log;
    this.#max_timelines = opts.max_timelines;
    this.#lock = lock;
  }

  /** Locks `dir` (creating it if missing) and opens every timeline found under it. */
  static async open(opts: TimelineRegistryOptions): Promise<TimelineRegistry> {
    await Deno.mkdir(`${opts.dir}/tenants`, { recursive: true });
    const registry = new TimelineRegistry(opts, await DirLock.acquire(opts.dir));
    try {
      await registry.#openExisting();
    } catch (error) {
      await registry.close();
      throw error;
    }
    return registry;
  }

  async #openExisting(): Promise<void> {
    for (const { tenant_id, timeline_id } of await this.#scan()) {
      let stored: TimelineFile | undefined;
      try {
        stored = await this.#readTimelineFile(tenant_id, timeline_id);
      } catch (error) {
        this.#markFailed(tenant_id, timeline_id, error);
        continue;
      }
      if (stored === undefined) {
        // Created by a Hello that died before writing timeline.json: nothing in it was ever acknowledged.
        this.#log("timeline_skipped", { tenant_id, timeline_id, reason: `no ${TIMELINE_FILE}; a Hello opens it` });
        continue;
      }
      // A failure is recorded (and logged) by #start; the other timelines are still served.
      await this.#start(tenant_id, timeline_id, stored.segment_size).catch(() => {});
    }
  }

  /** The (tenant, timeline) pairs on disk, at most `max_timelines` of them. */
  async #scan(): Promise<{ tenant_id: string; timeline_id: string }[]> {
    const found = [];
    for (const tenant_id of await idDirs(`${this.#dir}/tenants`)) {
      for (const timeline_id of await idDirs(`${this.#dir}/tenants/${tenant_id}/timelines`)) {
        if (found.length >= this.#max_timelines) {
          throw new RangeError(
            `${this.#dir} holds more than ${this.#max_timelines} timelines: raise max_timelines or move some away`,
          );
        }
        found.push({ tenant_id, timeline_id });
      }
    }
    return found;
  }

  /**
   * The timeline `hello` names, opened (and created) if needed, with `conn` bound to it: closed if the timeline
   * fails. Throws {@linkcode HelloRefusedError} for a timeline that failed, a segment size that differs from the
   * timeline's, or one timeline too many.
   */
  async attach(hello: Hello, conn: Closeable): Promise<Safekeeper> {
    const key = keyOf(hello.tenant_id, hello.timeline_id);
    const failed = this.#failed.get(key);
    if (failed !== undefined) {
      throw new HelloRefusedError(
        `timeline ${key} failed (${failed.error}); fix the disk, then restart the safekeeper`,
      );
    }
    const opening = this.#opening.get(key) ?? this.#create(hello);
    const entry = await opening.catch((error) => {
      throw error instanceof HelloRefusedError ? error : new HelloRefusedError(`timeline ${key} failed (${error})`);
    });
    if (entry.segment_size !== hello.segment_size) {
      throw new HelloRefusedError(
        `timeline ${key} has WAL segments of ${entry.segment_size} bytes, the client says ${hello.segment_size}: ` +
          "check that it is the same PostgreSQL cluster",
      );
    }
    if (this.#closed || this.#failed.has(key)) throw new HelloRefusedError(`timeline ${key} is closing or failed`);
    entry.bound.add(conn);
    return entry.safekeeper;
  }

  /** Unbinds `conn` from its timeline. */
  detach(tenant_id: string, timeline_id: string, conn: Closeable): void {
    this.#entries.get(keyOf(tenant_id, timeline_id))?.bound.delete(conn);
  }

  #create(hello: Hello): Promise<Entry> {
    if (this.#closed) return Promise.reject(new HelloRefusedError("the safekeeper is shutting down"));
    if (this.#opening.size >= this.#max_timelines) {
      return Promise.reject(
        new HelloRefusedError(
          `this safekeeper serves ${this.#max_timelines} timelines already (max_timelines); move some to another safekeeper`,
        ),
      );
    }
    assert(isSegmentSize(hello.segment_size), "the codec checked the segment size");
    const { tenant_id, timeline_id, segment_size } = hello;
    return this.#start(tenant_id, timeline_id, segment_size, async () => {
      const stored = await this.#readTimelineFile(tenant_id, timeline_id);
      if (stored !== undefined) return stored.segment_size;
      await Deno.mkdir(this.#timelineDir(tenant_id, timeline_id), { recursive: true });
      const file: TimelineFile = { format_version: TIMELINE_FORMAT_VERSION, segment_size };
      await writeCheckedJson(this.#timelinePath(tenant_id, timeline_id), TIMELINE_KEY, file);
      return segment_size;
    });
  }

  /** Opens a timeline's safekeeper; a failure marks the timeline failed (logged) and rejects. */
  #start(
    tenant_id: string,
    timeline_id: string,
    segment_size: number,
    prepare: () => Promise<number> = () => Promise.resolve(segment_size),
  ): Promise<Entry> {
    const key = keyOf(tenant_id, timeline_id);
    assert(!this.#opening.has(key), `timeline ${key} is opened once`);
    const opening = (async () => {
      const size = await prepare();
      const storage = await FileSafekeeperStorage.open({ dir: this.#dir, tenant_id, timeline_id, segment_size: size });
      const safekeeper = await Safekeeper.open(storage);
      const entry: Entry = { tenant_id, timeline_id, segment_size: size, safekeeper, bound: new Set() };
      this.#entries.set(key, entry);
      const status = safekeeper.status();
      for (const warning of storage.warnings) this.#log("timeline_repaired", { tenant_id, timeline_id, warning });
      this.#log("timeline_opened", {
        tenant_id,
        timeline_id,
        segment_size: size,
        term: Number(status.term),
        ...lsns(status),
      });
      return entry;
    })();
    this.#opening.set(key, opening);
    opening.catch((error) => this.#markFailed(tenant_id, timeline_id, error));
    return opening;
  }

  async #readTimelineFile(tenant_id: string, timeline_id: string): Promise<TimelineFile | undefined> {
    const path = this.#timelinePath(tenant_id, timeline_id);
    const stored = await readCheckedJson<TimelineFile>(path, TIMELINE_KEY, TIMELINE_FORMAT_VERSION);
    if (stored !== undefined && !isSegmentSize(stored.segment_size)) {
      throw new RangeError(`${path} names segment size ${stored.segment_size}, not a power of two 1 MiB..1 GiB`);
    }
    return stored;
  }

  /**
   * Records that a timeline's storage failed, says so loudly, and closes the connections bound to it: nothing is
   * acknowledged for it any more.
   */
  fail(tenant_id: string, timeline_id: string, error: unknown): void {
    this.#markFailed(tenant_id, timeline_id, error);
    const entry = this.#entries.get(keyOf(tenant_id, timeline_id));
    for (const conn of entry?.bound ?? []) conn.close();
    entry?.bound.clear();
  }

  #markFailed(tenant_id: string, timeline_id: string, error: unknown): void {
    const key = keyOf(tenant_id, timeline_id);
    if (this.#failed.has(key)) return;
    const message = error instanceof Error ? error.message : String(error);
    this.#failed.set(key, { tenant_id, timeline_id, error: message });
    this.#log("timeline_failed", {
      tenant_id,
      timeline_id,
      error: message,
      action: "this timeline acknowledges nothing until the safekeeper restarts; fix the disk first",
    });
  }

  /** The healthy open timelines, sorted by tenant then timeline. */
  timelines(): TimelineStatus[] {
    const healthy = [...this.#entries.entries()].filter(([key]) => !this.#failed.has(key)).sort(([a], [b]) =>
      a < b ? -1 : a > b ? 1 : 0
    );
    return healthy.map(([, e]) => ({
      tenant_id: e.tenant_id,
      timeline_id: e.timeline_id,
      status: e.safekeeper.status(),
    }));
  }

  /** The healthy open timelines, with their safekeepers (for WAL offload). */
  served(): { tenant_id: string; timeline_id: string; segment_size: number; source: Safekeeper }[] {
    return [...this.#entries.entries()].filter(([key]) => !this.#failed.has(key)).map(([, e]) => ({
      tenant_id: e.tenant_id,
      timeline_id: e.timeline_id,
      segment_size: e.segment_size,
      source: e.safekeeper,
    }));
  }

  /** The failed timelines. */
  failed(): FailedTimeline[] {
    return [...this.#failed.values()];
  }

  /** Waits for timelines being opened, closes every safekeeper and its files, and unlocks the directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#opening.values());
    for (const entry of this.#entries.values()) {
      for (const conn of entry.bound) conn.close();
      await entry.safekeeper.close().catch((error) => {
        // A failed storage may refuse to close cleanly; what matters is that it is not used again.
        const { tenant_id, timeline_id } = entry;
        this.#log("timeline_close_failed", { tenant_id, timeline_id, error: String(error) });
      });
    }
    this.#entries.clear();
    await this.#lock.release();
  }

  #timelineDir(tenant_id: string, timeline_id: string): string {
    return `${this.#dir}/tenants/${tenant_id}/timelines/${timeline_id}`;
  }

  #timelinePath(tenant_id: string, timeline_id: string): string {
    return `${this.#timelineDir(tenant_id, timeline_id)}/${TIMELINE_FILE}`;
  }
}

/** The subdirectories of `dir` named like ids ([] when `dir` is missing). */
async function idDirs(dir: string): Promise<string[]> {
  const names = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isDirectory && ID_PATTERN.test(entry.name)) names.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}

function keyOf(tenant_id: string, timeline_id: string): string {
  return `${tenant_id}/${timeline_id}`;
}

function lsns(status: StatusResponse): Record<string, string> {
  return { flush_lsn: formatLsn(status.flush_lsn), commit_lsn: formatLsn(status.commit_lsn) };
}
