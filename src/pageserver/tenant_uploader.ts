/**
 * Uploads one tenant to the lake (`remote_index.ts` names the objects): each timeline's layer files once written,
 * then the timeline's index listing exactly the layers on disk; the tenant's metadata files when they change; and
 * deletes what no index lists any more (layers merged away, timelines of deleted branches). A pageserver that sees
 * a higher generation than its own claimed for the tenant stops writing to the lake: another one took it over.
 *
 * @module
 */
import { crc32c } from "../crc32c.ts";
import type { Logger } from "../logger.ts";
import { formatLsn, type Lsn, parseLsn } from "../lsn.ts";
import type { RemoteStorage } from "../remote_storage/mod.ts";
import { GC_STATE_FILE } from "../storage/gc_state.ts";
import { encodeWalHorizon, walHorizonKey } from "../replication/wal_horizon.ts";
import { fetchLayers, newestTimelineIndex } from "./tenant_download.ts";
import {
  claimGeneration,
  encodeIndex,
  highestGeneration,
  type IndexedLayer,
  layerKey,
  newestIndexKey,
  REMOTE_INDEX_FORMAT_VERSION,
  type TenantIndex,
  tenantIndexKey,
  tenantPrefix,
  type TimelineIndex,
  timelineIndexKey,
} from "./remote_index.ts";

/** A layer file name: `<generation>_<lsn_start>_<lsn_end>.layer`, 16 hex digits each. */
const LAYER_NAME = /^[0-9a-f]{16}_[0-9a-f]{16}_([0-9a-f]{16})\.layer$/;
/** The tenant metadata files that go into the tenant index. */
const TENANT_FILES = ["tarn.json", "branches.json", "config.json"];

/** What the lake holds of one timeline, as `/status` and `/metrics` show it. */
export type RemoteTimelineState = { remote_consistent_lsn: Lsn; remote_bytes: number; layers: number };

/** Keeps one tenant's objects in the lake in step with its directory. */
export class TenantUploader {
  readonly #store: RemoteStorage;
  readonly #tenant: string;
  readonly #dir: string;
  readonly #node: string;
  readonly #log: Logger;
  #generation = 0;
  /** Set once a newer generation is seen: this pageserver no longer owns the tenant in the lake. */
  #superseded = false;
  #tenant_files = "";
  /** The tenant's id (its root timeline): its safekeepers' WAL is under `wal/<tenant_id>/` in the lake. */
  #tenant_id: string | undefined;
  /** The last index uploaded (or found) per timeline. */
  readonly #indexes = new Map<string, TimelineIndex>();
  #chain: Promise<unknown> = Promise.resolve();

  /**
   * @param store the lake
   * @param tenant the tenant's name
   * @param dir the tenant's directory
   * @param node this pageserver's name in generation claims (unique per process)
   * @param log where uploads and problems are told
   */
  constructor(store: RemoteStorage, tenant: string, dir: string, node: string, log: Logger) {
    this.#store = store;
    this.#tenant = tenant;
    this.#dir = dir;
    this.#node = node;
    this.#log = log;
  }

  /** The generation this pageserver claimed for the tenant (0 before the first sync). */
  get generation(): number {
    return this.#generation;
  }

  /** What the lake holds of a timeline, by the last index uploaded or found. */
  state(timeline_id: string): RemoteTimelineState | undefined {
    const index = this.#indexes.get(timeline_id);
    if (index === undefined) return undefined;
    return {
      remote_consistent_lsn: parseLsn(index.disk_consistent_lsn),
      remote_bytes: index.layers.reduce((n, l) => n + l.size_bytes, 0),
      layers: index.layers.length,
    };
  }

  /**
   * Uploads what changed in the tenant's metadata and in the layers of the `resident` timelines (open ones: the
   * layers of others may be evicted, not deleted) since the last sync, and deletes the objects of timelines not
   * among `timeline_ids` (deleted branches). Runs one at a time with the other requests of this uploader.
   */
  sync(timeline_ids: string[], resident: string[] = timeline_ids): Promise<void> {
    return this.#serially(() => this.#sync(timeline_ids, resident));
  }

  /** Brings to the local disk the layers of the timeline's index that it does not hold (before the timeline opens). */
  ensureLocal(timeline_id: string): Promise<void> {
    return this.#serially(async () => {
      const index = this.#indexes.get(timeline_id) ?? await this.#findIndex(timeline_id);
      if (index === undefined) return;
      this.#indexes.set(timeline_id, index);
      const started_ms = performance.now();
      const got = await fetchLayers(this.#store, this.#tenant, `${this.#dir}/timelines/${timeline_id}`, index);
      if (got.layers === 0) return;
      const elapsed_ms = Math.round(performance.now() - started_ms);
      this.#log("layers_downloaded", { tenant: this.#tenant, timeline_id, ...got, elapsed_ms });
    });
  }

  /**
   * Deletes the local files of a closed timeline's layers, once every one of them is in the lake (its index lists
   * them all); resolves with the bytes freed (0: something is not uploaded yet, nothing was deleted).
   */
  evict(timeline_id: string): Promise<number> {
    return this.#serially(async () => {
      const index = this.#indexes.get(timeline_id);
      const local = await this.#localLayers(timeline_id);
      const uploaded = new Set(index?.layers.map((l) => l.name) ?? []);
      if (index === undefined || local.some((l) => !uploaded.has(l.name))) return 0;
      let freed = 0;
      for (const layer of index.layers) {
        const path = `${this.#dir}/timelines/${timeline_id}/${layer.name}`;
        if (!local.some((l) => l.name === layer.name)) continue;
        await Deno.remove(path);
        freed += layer.size_bytes;
      }
      return freed;
    });
  }

  #serially<T>(step: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(step);
    this.#chain = run.catch(() => {});
    return run;
  }

  async #sync(timeline_ids: string[], resident: string[]): Promise<void> {
    if (this.#generation === 0) {
      this.#generation = await claimGeneration(this.#store, this.#tenant, this.#node);
      this.#log("tenant_generation_claimed", { tenant: this.#tenant, generation: this.#generation });
    }
    if (this.#superseded) return;
    const files = await this.#readTenantFiles();
    if (files["tarn.json"] !== undefined) this.#tenant_id = JSON.parse(files["tarn.json"]).tenant?.timeline_id;
    const text = JSON.stringify(files);
    if (text !== this.#tenant_files && !await this.#checkSuperseded()) {
      const index: TenantIndex = { format_version: REMOTE_INDEX_FORMAT_VERSION, generation: this.#generation, files };
      await this.#store.put(tenantIndexKey(this.#tenant, this.#generation), encodeIndex(index));
      await this.#deleteOtherIndexes(`${tenantPrefix(this.#tenant)}tenant-`, "tenant");
      await this.#deleteTimelinesNotIn(timeline_ids);
      this.#tenant_files = text;
    }
    for (const timeline_id of resident) await this.#syncTimeline(timeline_id);
  }

  /**
   * Deletes the safekeepers' offloaded WAL segments of a timeline that end at or below `lsn` (nothing reads them
   * any more: the timeline's GC moved past them). `tenant_id` names the tenant's WAL in the lake (its root timeline).
   */
  deleteWalBelow(tenant_id: string, timeline_id: string, lsn: Lsn, segment_size: number): Promise<void> {
    return this.#serially(async () => {
      if (this.#generation === 0 || await this.#checkSuperseded()) return;
      for (const key of await this.#store.list(`wal/${tenant_id}/${timeline_id}/`)) {
        const m = /\/([0-9a-f]{16})(\.partial)?$/.exec(key);
        if (m !== null && (BigInt(`0x${m[1]}`) + 1n) * BigInt(segment_size) <= lsn) await this.#store.delete(key);
      }
    });
  }

  async #checkSuperseded(): Promise<boolean> {
    if (this.#superseded) return true;
    const highest = await highestGeneration(this.#store, this.#tenant);
    if (highest <= this.#generation) return false;
    this.#superseded = true;
    this.#log("tenant_generation_superseded", {
      tenant: this.#tenant,
      generation: this.#generation,
      newer: highest,
      what: "another pageserver attached this tenant to the same remote: this one stops uploading it",
    });
    return true;
  }

  async #readTenantFiles(): Promise<Record<string, string>> {
    const files: Record<string, string> = {};
    for (const name of TENANT_FILES) {
      const text = await readOptional(`${this.#dir}/${name}`);
      if (text !== undefined) files[name] = text;
    }
    return files;
  }

  async #syncTimeline(timeline_id: string): Promise<void> {
    const previous = this.#indexes.get(timeline_id) ?? await this.#findIndex(timeline_id);
    const local = await this.#localLayers(timeline_id);
    const gc = await readOptional(`${this.#dir}/timelines/${timeline_id}/${GC_STATE_FILE}`);
    const uploaded = new Map((previous?.layers ?? []).map((l) => [l.name, l]));
    if (previous !== undefined && previous.gc === gc && sameNames(local.map((l) => l.name), [...uploaded.keys()])) {
      this.#indexes.set(timeline_id, previous);
      return;
    }
    if (await this.#checkSuperseded()) return;
    const layers: IndexedLayer[] = [];
    let disk_consistent_lsn = 0n;
    for (const { name, lsn_end } of local) {
      if (lsn_end > disk_consistent_lsn) disk_consistent_lsn = lsn_end;
      const known = uploaded.get(name);
      if (known !== undefined) {
        layers.push(known);
        continue;
      }
      let bytes: Uint8Array;
      try {
        bytes = await Deno.readFile(`${this.#dir}/timelines/${timeline_id}/${name}`);
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return; // merged away meanwhile: the next sync sees the new set
        throw error;
      }
      const layer = { name, generation: this.#generation, size_bytes: bytes.length, crc32c: crc32c(bytes) };
      await this.#store.put(layerKey(this.#tenant, timeline_id, layer), bytes);
      layers.push(layer);
    }
    const index: TimelineIndex = {
      format_version: REMOTE_INDEX_FORMAT_VERSION,
      generation: this.#generation,
      timeline_id,
      disk_consistent_lsn: formatLsn(disk_consistent_lsn),
      layers,
      gc,
    };
    if (await this.#checkSuperseded()) return;
    await this.#store.put(timelineIndexKey(this.#tenant, timeline_id, this.#generation), encodeIndex(index));
    this.#indexes.set(timeline_id, index);
    // The safekeepers may now let go of their local WAL below what the lake holds of this timeline.
    if (this.#tenant_id !== undefined) {
      await this.#store.put(walHorizonKey(this.#tenant_id, timeline_id), encodeWalHorizon(disk_consistent_lsn));
    }
    this.#log("timeline_uploaded", {
      tenant: this.#tenant,
      timeline_id,
      layers: layers.length,
      disk_consistent_lsn: index.disk_consistent_lsn,
    });
    // Only after the new index is in place: the old one may still be read until then.
    const kept = new Set(layers.map((l) => layerKey(this.#tenant, timeline_id, l)));
    for (const old of previous?.layers ?? []) {
      const key = layerKey(this.#tenant, timeline_id, old);
      if (!kept.has(key) && !await this.#checkSuperseded()) await this.#store.delete(key);
    }
    await this.#deleteOtherIndexes(`${tenantPrefix(this.#tenant)}timelines/${timeline_id}/index-`, "index");
  }

  /** The newest index of a timeline in the lake (left by an earlier generation), if any. */
  #findIndex(timeline_id: string): Promise<TimelineIndex | undefined> {
    return newestTimelineIndex(this.#store, this.#tenant, timeline_id);
  }

  /** The timeline's layer files on disk, with the end of each one's LSN range. */
  async #localLayers(timeline_id: string): Promise<{ name: string; lsn_end: Lsn }[]> {
    const out: { name: string; lsn_end: Lsn }[] = [];
    try {
      for await (const entry of Deno.readDir(`${this.#dir}/timelines/${timeline_id}`)) {
        const m = LAYER_NAME.exec(entry.name);
        if (entry.isFile && m !== null) out.push({ name: entry.name, lsn_end: BigInt(`0x${m[1]}`) });
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    return out.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  /** Deletes index objects under `prefix` other than this generation's. */
  async #deleteOtherIndexes(prefix: string, stem: "tenant" | "index"): Promise<void> {
    const mine = newestIndexKey(await this.#store.list(prefix), stem);
    for (const key of await this.#store.list(prefix)) {
      if (key !== mine && !await this.#checkSuperseded()) await this.#store.delete(key);
    }
  }

  /** Deletes every object of the timelines in the lake that are not among `timeline_ids`. */
  async #deleteTimelinesNotIn(timeline_ids: string[]): Promise<void> {
    const keep = new Set(timeline_ids);
    const prefix = `${tenantPrefix(this.#tenant)}timelines/`;
    for (const key of await this.#store.list(prefix)) {
      const timeline_id = key.slice(prefix.length).split("/")[0];
      if (keep.has(timeline_id) || await this.#checkSuperseded()) continue;
      await this.#store.delete(key);
      if (this.#indexes.delete(timeline_id) && this.#tenant_id !== undefined) {
        // The deleted branch's WAL, as its safekeepers offloaded it, goes too.
        for (const wal of await this.#store.list(`wal/${this.#tenant_id}/${timeline_id}/`)) {
          await this.#store.delete(wal);
        }
      }
    }
  }
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

function sameNames(a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(b);
  return a.every((name) => set.has(name));
}
