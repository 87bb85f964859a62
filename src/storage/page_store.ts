/**
 * The page store of one timeline: every version of every page and every file event, keyed by LSN. Writes land in
 * an in-memory layer; {@linkcode PageStore.flush} persists a prefix of it as an immutable delta layer file and then
 * merges the newest layers when there are too many (`layer_compaction.ts`), so the layer count stays logarithmic.
 * Reads merge the in-memory layer and all layer files, decompressing file blocks on demand through a small LRU.
 *
 * @module
 */
import assert from "node:assert";
import { type Lsn, LSN_MAX } from "../lsn.ts";
import {
  BLOCK_SIZE,
  type ComputePages,
  type FileEvent,
  type PageSource,
  type PageValue,
  type PathMeta,
} from "./page_api.ts";
import { applyDelta } from "./page_delta.ts";
import { type EventRecord, FileEvents } from "./file_events.ts";
import { compareOrder, insertOrdered, type Ordered } from "./version_order.ts";
import {
  LAYER_BLOCK_RAW_LIMIT_BYTES,
  type LayerEntry,
  type LayerEvent,
  LayerHandleCache,
  LayerReader,
  writeLayerFile,
} from "./layer_file.ts";
import { deleteLayers, layerFileName, mergeLayers, openLayerDir, pickMergeRun } from "./layer_compaction.ts";
import { type GcState, readGcState, writeGcState } from "./gc_state.ts";
import { type ImageSource, writeImageLayer } from "./image_layer.ts";
import { LsnOutOfRangeError } from "../errors.ts";
import { formatLsn } from "../lsn.ts";

/** A delta chain longer than this since the last image makes the next delta be stored as a whole image. */
export const MAX_DELTA_CHAIN = 16;
/** Default budget of the decompressed-block cache: 16 MiB (256 blocks of 64 KiB). */
export const DEFAULT_CACHE_BYTES = 16 * 1024 * 1024;
/** A flush that leaves more layers than this merges the newest ones (see {@linkcode PageStore.compact}). */
export const COMPACTION_TRIGGER_LAYERS = 8;
/** Most layer files open at once; the least recently read ones are closed and reopened on demand. */
export const MAX_OPEN_LAYER_FILES = 16;

/** Versions in memory sort after every layer file's at the same LSN: they were written later. */
const MEMORY_GEN = Number.POSITIVE_INFINITY;
/** Rough bookkeeping cost of one version or event in memory, beyond its payload. */
const OVERHEAD_BYTES = 64;

/** A version in memory (`value` set) or in a layer file (`layer` and the index of its entry there). */
type Version = Ordered & { image: boolean; value?: PageValue; layer?: LayerReader; entry: number };

/** Options of {@linkcode PageStore.open}. */
export type PageStoreOptions = {
  /** Data directory; layers go in `${dir}/timelines/${timeline_id}/`. Omit for a memory-only store. */
  dir?: string;
  /** The timeline: 32 lower-case hex digits. */
  timeline_id: string;
  /** Budget of the decompressed-block cache (default {@linkcode DEFAULT_CACHE_BYTES}). */
  memory_limit_bytes?: number;
  /**
   * For a branch: the parent timeline's pages, read at min(lsn, branch LSN) for whatever this timeline never
   * wrote itself. Creating a branch copies nothing.
   */
  ancestor?: Ancestor;
};

/** A parent timeline as a branch sees it. */
export type Ancestor = { source: PageSource; branch_lsn: Lsn };

function assertLsn(lsn: Lsn): void {
  assert(typeof lsn === "bigint" && lsn >= 0n && lsn <= LSN_MAX, `page store: bad lsn ${lsn}`);
}

function assertBlkno(blkno: number): void {
  assert(Number.isInteger(blkno) && blkno >= 0 && blkno <= 0xffff_ffff, `page store: bad block number ${blkno}`);
}

/** The first index in `[start, end)` of a key's versions in `layer` whose lsn is above `lsn`. */
function upperBoundLsn(layer: LayerReader, start: number, end: number, lsn: Lsn): number {
  let lo = start;
  let hi = end;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (layer.entries[mid].lsn <= lsn) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Approximate memory held by one in-memory page version. */
function pageCost(path: string, value: PageValue): number {
  const payload = value.kind === "image"
    ? value.bytes.length
    : value.ranges.reduce((n, r) => n + r.bytes.length + 8, 0);
  return payload + OVERHEAD_BYTES + path.length;
}

/** Approximate memory held by one in-memory event. */
function eventCost(path: string): number {
  return OVERHEAD_BYTES + path.length;
}

/** One timeline's page versions and file events, in memory and in delta layer files. */
export class PageStore implements ComputePages {
  /** Problems survived while opening (a torn newest layer set aside, leftovers of an interrupted merge deleted). */
  readonly warnings: string[] = [];
  /** Versions not yet flushed; flushed ones are found through the layers' sorted indexes. */
  private readonly memory = new Map<string, Map<number, Version[]>>();
  private readonly events = new FileEvents();
  /** Layer files, oldest generation first. */
  private readonly layers: LayerReader[] = [];
  private readonly handles = new LayerHandleCache(MAX_OPEN_LAYER_FILES);
  private readonly cache = new Map<string, LayerEntry[]>();
  private readonly cache_blocks: number;
  private mem_pages: { path: string; blkno: number; version: Version }[] = [];
  private mem_events: { path: string; record: EventRecord }[] = [];
  private mem_bytes = 0;
  private next_seq = 0;
  private next_gen = 1;
  private disk_lsn: Lsn = 0n;
  private flushing: Promise<void> = Promise.resolve();
  private background: Promise<void> | undefined;
  private background_error: unknown;
  private gc_state: GcState = { cutoff_lsn: 0n, image_lsns: [] };

  private constructor(
    readonly timeline_id: string,
    private readonly layer_dir: string | undefined,
    cache: number,
    private readonly ancestor: Ancestor | undefined,
  ) {
    this.cache_blocks = Math.max(1, Math.floor(cache / LAYER_BLOCK_RAW_LIMIT_BYTES));
  }

  /**
   * Opens a timeline's store. With `dir`, loads the headers, indexes and events of its layer files (not their
   * pages), deletes leftover `*.tmp` files and the sources of a merge that a crash left next to their merged layer,
   * and sets aside a newest layer that fails validation (a torn write); both are noted in
   * {@linkcode PageStore.warnings}. An older corrupt layer throws `CorruptLayerError` (`layer_file.ts`).
   */
  static async open(opts: PageStoreOptions): Promise<PageStore> {
    assert(/^[0-9a-f]{32}$/.test(opts.timeline_id), `page store: timeline id must be 32 hex digits`);
    const layer_dir = opts.dir === undefined ? undefined : `${opts.dir}/timelines/${opts.timeline_id}`;
    const cache_bytes = opts.memory_limit_bytes ?? DEFAULT_CACHE_BYTES;
    const store = new PageStore(opts.timeline_id, layer_dir, cache_bytes, opts.ancestor);
    if (layer_dir !== undefined) {
      const found = await openLayerDir(layer_dir, opts.timeline_id, store.handles);
      store.warnings.push(...found.warnings);
      store.next_gen = found.next_generation;
      for (const reader of found.readers) store.addLayer(reader);
      store.gc_state = await readGcState(layer_dir);
    }
    return store;
  }

  private addLayer(reader: LayerReader): void {
    const gen = reader.header.generation;
    this.layers.push(reader);
    for (const e of reader.events) this.events.add(e.path, { lsn: e.lsn, gen, seq: e.seq, event: e.event });
    if (reader.header.lsn_end > this.disk_lsn) this.disk_lsn = reader.header.lsn_end;
  }

  private memoryVersions(path: string, blkno: number): Version[] {
    let blocks = this.memory.get(path);
    if (blocks === undefined) this.memory.set(path, blocks = new Map());
    let versions = blocks.get(blkno);
    if (versions === undefined) blocks.set(blkno, versions = []);
    return versions;
  }

  /** The highest LSN up to which every version received is durably stored (memory-only: the last flush's). */
  get disk_consistent_lsn(): Lsn {
    return this.disk_lsn;
  }

  /** Number of layer files. */
  get layer_count(): number {
    return this.layers.length;
  }

  /** Total size of the layer files in bytes. */
  get disk_bytes(): number {
    return this.layers.reduce((n, l) => n + l.size_bytes, 0);
  }

  /** Approximate bytes held by versions and events not yet flushed; flush when this grows too large. */
  get in_memory_bytes(): number {
    return this.mem_bytes;
  }

  /** Reads below this LSN are refused (GC removed what they need), except at {@linkcode kept_lsns}. */
  get gc_cutoff_lsn(): Lsn {
    return this.gc_state.cutoff_lsn;
  }

  /** The points below the GC cutoff whose state is kept whole (child branch points, leases). */
  get kept_lsns(): readonly Lsn[] {
    return this.gc_state.image_lsns;
  }

  /** Throws {@linkcode LsnOutOfRangeError} for a read GC has made impossible. */
  checkReadable(lsn: Lsn): void {
    const { cutoff_lsn, image_lsns } = this.gc_state;
    if (lsn >= cutoff_lsn || image_lsns.includes(lsn)) return;
    throw new LsnOutOfRangeError(
      `LSN ${formatLsn(lsn)} is before the history timeline ${this.timeline_id} keeps: the oldest point kept is ` +
        `${formatLsn(cutoff_lsn)} (its GC cutoff); read or branch at that point or later`,
    );
  }

  /** {@inheritDoc PageSource.getPage} A fresh copy: the caller may change it. */
  getPage(path: string, blkno: number, lsn: Lsn): Uint8Array | undefined {
    assertLsn(lsn);
    assertBlkno(blkno);
    this.checkReadable(lsn);
    if (this.stat(path, lsn)?.kind !== "file") return undefined;
    return this.materialise(path, blkno, lsn);
  }

  /** Every version of (path, blkno) with lsn <= `lsn` from all layers and memory, oldest first. */
  private versionsUpTo(path: string, blkno: number, lsn: Lsn): Version[] {
    const out: Version[] = [];
    let sorted = true;
    const add = (v: Version) => {
      // Each source is ordered, but a later layer or memory may hold older LSNs (late writes).
      if (sorted && out.length > 0 && compareOrder(out[out.length - 1], v) > 0) sorted = false;
      out.push(v);
    };
    for (const layer of this.layers) {
      const [start, end] = layer.keyRange(path, blkno);
      const gen = layer.header.generation;
      // Only the layer's versions from its newest image <= lsn on: nothing older is read, however long the history.
      const stop = upperBoundLsn(layer, start, end, lsn);
      let first = stop;
      while (first > start && !layer.entries[first - 1].image) first--;
      if (first > start) first--; // the image itself
      for (let i = first; i < stop; i++) {
        const e = layer.entries[i];
        add({ lsn: e.lsn, gen, seq: e.seq, image: e.image, layer, entry: i });
      }
    }
    for (const v of this.memory.get(path)?.get(blkno) ?? []) if (v.lsn <= lsn) add(v);
    return sorted ? out : out.sort(compareOrder);
  }

  /**
   * The page as of `lsn` ignoring whether the file exists: the newest image and later deltas, on zeros after a
   * reset, or on the ancestor's page when this timeline's own history of the block does not go back far enough.
   */
  private materialise(path: string, blkno: number, lsn: Lsn): Uint8Array {
    let page: Uint8Array = new Uint8Array(BLOCK_SIZE);
    const versions = this.versionsUpTo(path, blkno, lsn);
    const reset = this.events.resetPoint(path, blkno, lsn);
    let start = versions.length;
    while (start > 0 && (reset === undefined || compareOrder(versions[start - 1], reset) > 0)) {
      start--;
      if (versions[start].image) break;
    }
    const whole = start < versions.length && versions[start].image;
    if (!whole && reset === undefined && this.ancestor !== undefined) {
      page = this.ancestor.source.getPage(path, blkno, this.ancestorLsn(lsn)) ?? page;
    }
    for (let i = start; i < versions.length; i++) {
      const value = this.valueOf(versions[i]);
      if (value.kind === "image") page.set(value.bytes);
      else applyDelta(page, value.ranges);
    }
    return page;
  }

  private valueOf(version: Version): PageValue {
    if (version.value !== undefined) return version.value;
    const { block, slot } = version.layer!.entries[version.entry];
    const key = `${version.gen}:${block}`;
    let entries = this.cache.get(key);
    if (entries === undefined) {
      entries = version.layer!.readBlock(block);
      if (this.cache.size >= this.cache_blocks) this.cache.delete(this.cache.keys().next().value!);
    } else {
      this.cache.delete(key); // re-inserted below as the most recently used
    }
    this.cache.set(key, entries);
    return entries[slot].value;
  }

  private ancestorLsn(lsn: Lsn): Lsn {
    return lsn < this.ancestor!.branch_lsn ? lsn : this.ancestor!.branch_lsn;
  }

  /** {@inheritDoc PageSource.stat} A path this timeline never touched is as its ancestor had it. */
  stat(path: string, lsn: Lsn): PathMeta | undefined {
    assertLsn(lsn);
    this.checkReadable(lsn);
    if (path === "") return { kind: "dir" };
    const e = this.events.latest(path, lsn);
    if (e === undefined) return this.ancestor?.source.stat(path, this.ancestorLsn(lsn));
    if (e.kind === "create") return { kind: "file", size_bytes: 0 };
    if (e.kind === "resize") return { kind: "file", size_bytes: e.size_bytes };
    if (e.kind === "mkdir") return { kind: "dir" };
    return undefined;
  }

  /** {@inheritDoc PageSource.readdir} Sorted; empty when `path` is not a directory at `lsn`. */
  readdir(path: string, lsn: Lsn): string[] {
    if (this.stat(path, lsn)?.kind !== "dir") return [];
    const prefix = path === "" ? "" : path + "/";
    const names = new Set(this.events.children(path));
    for (const name of this.ancestor?.source.readdir(path, this.ancestorLsn(lsn)) ?? []) names.add(name);
    return [...names].filter((name) => this.stat(prefix + name, lsn) !== undefined).sort();
  }

  /** {@inheritDoc PageSink.putPage} The bytes are copied. A delta that would make a chain too long is stored as an image. */
  putPage(path: string, blkno: number, lsn: Lsn, value: PageValue): void {
    assertLsn(lsn);
    assertBlkno(blkno);
    let stored: PageValue;
    if (value.kind === "image") {
      assert(value.bytes.length === BLOCK_SIZE, `page store: image of ${value.bytes.length} bytes`);
      stored = { kind: "image", bytes: value.bytes.slice() };
    } else {
      stored = { kind: "delta", ranges: value.ranges.map((r) => ({ offset: r.offset, bytes: r.bytes.slice() })) };
      const versions = this.versionsUpTo(path, blkno, lsn);
      let chain = 0;
      for (let i = versions.length - 1; i >= 0 && !versions[i].image; i--) chain++;
      if (chain >= MAX_DELTA_CHAIN) {
        const page = this.materialise(path, blkno, lsn);
        applyDelta(page, stored.ranges);
        stored = { kind: "image", bytes: page };
      } else {
        applyDelta(new Uint8Array(BLOCK_SIZE), stored.ranges); // asserts the ranges fit now, not at read time
      }
    }
    const version: Version = {
      lsn,
      gen: MEMORY_GEN,
      seq: this.next_seq++,
      image: stored.kind === "image",
      value: stored,
      entry: -1,
    };
    insertOrdered(this.memoryVersions(path, blkno), version);
    this.mem_pages.push({ path, blkno, version });
    this.mem_bytes += pageCost(path, stored);
  }

  /** {@inheritDoc PageSink.putEvent} */
  putEvent(path: string, lsn: Lsn, event: FileEvent): void {
    assertLsn(lsn);
    assert(path !== "" && !path.startsWith("/"), `page store: event on bad path "${path}"`);
    if (event.kind === "resize") {
      assert(Number.isSafeInteger(event.size_bytes) && event.size_bytes >= 0, "page store: bad size_bytes");
    }
    const record: EventRecord = { lsn, gen: MEMORY_GEN, seq: this.next_seq++, event: { ...event } };
    this.events.add(path, record);
    this.mem_events.push({ path, record });
    this.mem_bytes += eventCost(path);
  }

  /**
   * Persists every in-memory version and event with lsn <= `durable_lsn` as one new layer file and keeps the rest
   * in memory; then, if more than {@linkcode COMPACTION_TRIGGER_LAYERS} layers are left, merges the newest ones as
   * {@linkcode PageStore.compact} does (a failed merge rejects, though the flush itself is durable by then). Flushes
   * run one at a time, in call order. Memory-only: only advances {@linkcode disk_consistent_lsn}.
   */
  flush(durable_lsn: Lsn): Promise<void> {
    assertLsn(durable_lsn);
    if (this.background_error !== undefined) {
      const error = this.background_error;
      this.background_error = undefined;
      return Promise.reject(error);
    }
    return this.enqueue(async () => {
      await this.flushNow(durable_lsn);
      if (this.layers.length > COMPACTION_TRIGGER_LAYERS) await this.compactNow();
    });
  }

  /** {@inheritDoc ComputePages.walDurable} */
  walDurable(lsn: Lsn, memory_limit_bytes: number): void {
    if (this.mem_bytes > memory_limit_bytes) this.flushSoon(lsn);
  }

  /**
   * Starts a flush without waiting for it, unless one started this way is still running: commits need their WAL
   * durable, not their pages, so a layer write or merge never holds one up. A failure is thrown by the next
   * {@linkcode flush}.
   */
  flushSoon(durable_lsn: Lsn): void {
    if (this.background !== undefined) return;
    this.background = this.flush(durable_lsn)
      .catch((error) => void (this.background_error = error))
      .finally(() => void (this.background = undefined));
  }

  /**
   * Merges the newest run of layers into one now, whatever the layer count (a flush does it when more than
   * {@linkcode COMPACTION_TRIGGER_LAYERS} layers are left): the run grows from the newest layer while the next older
   * one is at most twice the run's size, and nothing happens when that run is a single layer. Every version and
   * event is kept. Runs in turn with flushes.
   */
  compact(): Promise<void> {
    return this.enqueue(() => this.compactNow());
  }

  /**
   * Collects garbage below `horizon_lsn` (at most the durable LSN): writes an image of the timeline at the horizon,
   * and at each of `keep_lsns` below it that has none yet, then rewrites every layer as one, leaving out each
   * version and event at or below the horizon except those images (and the ones kept from earlier runs at
   * `keep_lsns`). Reads below the horizon are refused from then on, except at `keep_lsns` (child branch points,
   * leases). `gc.json` is written first: a crash part-way refuses reads that could still have been served, never
   * serves one wrongly. Runs in turn with flushes; resolves with the bytes of the layers before and after.
   */
  gc(horizon_lsn: Lsn, keep_lsns: Lsn[]): Promise<{ bytes_before: number; bytes_after: number }> {
    return new Promise((resolve, reject) => {
      this.enqueue(async () => {
        const bytes_before = this.disk_bytes;
        await this.gcNow(horizon_lsn, keep_lsns);
        resolve({ bytes_before, bytes_after: this.disk_bytes });
      }).catch(reject);
    });
  }

  private async gcNow(horizon_lsn: Lsn, keep_lsns: Lsn[]): Promise<void> {
    const layer_dir = this.layer_dir;
    if (layer_dir === undefined || horizon_lsn <= this.gc_state.cutoff_lsn || this.layers.length === 0) return;
    assert(horizon_lsn <= this.disk_lsn, `page store: GC horizon ${horizon_lsn} above the durable ${this.disk_lsn}`);
    const old = this.gc_state;
    // A kept point needs an image; one below the old cutoff that has none can no longer get one.
    const kept = [...new Set(keep_lsns)].filter((lsn) =>
      lsn < horizon_lsn && (lsn >= old.cutoff_lsn || old.image_lsns.includes(lsn))
    ).sort((a, b) => a < b ? -1 : a > b ? 1 : 0);
    const fresh = kept.filter((lsn) => !old.image_lsns.includes(lsn));
    this.gc_state = { cutoff_lsn: horizon_lsn, image_lsns: kept };
    await writeGcState(layer_dir, this.gc_state);
    const images: LayerReader[] = [];
    for (const lsn of [...fresh, horizon_lsn]) {
      images.push(await writeImageLayer(this.imageSource(), lsn, layer_dir, this.next_gen++, this.handles));
    }
    const sources = [...this.layers, ...images];
    const keep = (lsn: Lsn, source: LayerReader) => lsn > horizon_lsn || images.includes(source) || kept.includes(lsn);
    const merged = await mergeLayers(sources, layer_dir, this.next_gen++, this.handles, keep);
    // Swapped in one synchronous step, as a merge is.
    this.layers.splice(0, this.layers.length, merged);
    const gens = new Set(sources.map((l) => l.header.generation));
    this.events.replaceGenerations(gens, merged.events, merged.header.generation);
    this.cache.clear();
    await deleteLayers(sources);
  }

  /** This store as {@linkcode writeImageLayer} reads it. */
  private imageSource(): ImageSource {
    return {
      timeline_id: this.timeline_id,
      ownPaths: () => this.events.paths(),
      latestOwnEvent: (path, lsn) => this.events.latest(path, lsn),
      ownKeysUpTo: (lsn) => this.ownKeysUpTo(lsn),
      stat: (path, lsn) => this.stat(path, lsn),
      materialise: (path, blkno, lsn) => this.materialise(path, blkno, lsn),
    };
  }

  private *ownKeysUpTo(lsn: Lsn): Iterable<{ path: string; blkno: number }> {
    for (const layer of this.layers) for (const e of layer.entries) if (e.lsn <= lsn) yield e;
    for (const { path, blkno, version } of this.mem_pages) if (version.lsn <= lsn) yield { path, blkno };
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    const run = this.flushing.then(step);
    this.flushing = run.catch(() => {});
    return run;
  }

  private async compactNow(): Promise<void> {
    const count = pickMergeRun(this.layers.map((l) => l.size_bytes));
    if (this.layer_dir === undefined || count === 0) return;
    const sources = this.layers.slice(-count);
    const merged = await mergeLayers(sources, this.layer_dir, this.next_gen++, this.handles);
    // Swapped in one synchronous step, so a reader sees each version exactly once: in the sources or the merged layer.
    this.layers.splice(-count, count, merged);
    const gen = merged.header.generation;
    const gens = new Set(sources.map((l) => l.header.generation));
    this.events.replaceGenerations(gens, merged.events, gen);
    for (const key of this.cache.keys()) if (gens.has(Number(key.split(":")[0]))) this.cache.delete(key);
    await deleteLayers(sources);
  }

  private async flushNow(durable_lsn: Lsn): Promise<void> {
    if (this.layer_dir === undefined) {
      if (durable_lsn > this.disk_lsn) this.disk_lsn = durable_lsn;
      return;
    }
    const pages = this.mem_pages.filter((p) => p.version.lsn <= durable_lsn);
    const events = this.mem_events.filter((e) => e.record.lsn <= durable_lsn);
    if (pages.length === 0 && events.length === 0 && durable_lsn <= this.disk_lsn) return;
    const entries: LayerEntry[] = pages.map(({ path, blkno, version: v }) => ({
      path,
      blkno,
      lsn: v.lsn,
      seq: v.seq,
      value: v.value!,
    }));
    const layer_events: LayerEvent[] = events.map(({ path, record: r }) => ({ path, ...r }));
    let lsn_start = durable_lsn;
    for (const x of [...entries, ...layer_events]) if (x.lsn < lsn_start) lsn_start = x.lsn;
    const gen = this.next_gen++;
    const file_path = `${this.layer_dir}/${layerFileName(gen, lsn_start, durable_lsn)}`;
    const header = { timeline_id: this.timeline_id, lsn_start, lsn_end: durable_lsn, generation: gen };
    await writeLayerFile(file_path, { ...header, entries, events: layer_events });
    const reader = LayerReader.open(file_path, this.handles);
    this.layers.push(reader);
    // Swapped in one synchronous step, so a reader sees each version exactly once: in memory or in the layer.
    const flushed = new Set(pages.map((p) => p.version));
    const filtered = new Set<Version[]>();
    for (const { path, blkno, version } of pages) {
      this.mem_bytes -= pageCost(path, version.value!);
      const blocks = this.memory.get(path);
      const list = blocks?.get(blkno);
      if (blocks === undefined || list === undefined || filtered.has(list)) continue; // key already done
      const left = list.filter((v) => !flushed.has(v));
      filtered.add(left);
      if (left.length > 0) blocks.set(blkno, left);
      else blocks.delete(blkno);
      if (blocks.size === 0) this.memory.delete(path);
    }
    for (const { path, record } of events) {
      record.gen = gen;
      this.mem_bytes -= eventCost(path);
    }
    this.mem_pages = this.mem_pages.filter((p) => !flushed.has(p.version));
    this.mem_events = this.mem_events.filter((e) => e.record.gen === MEMORY_GEN);
    if (durable_lsn > this.disk_lsn) this.disk_lsn = durable_lsn;
  }

  /** A point to {@linkcode rewindTo} later: everything written after it can be dropped (memory-only stores). */
  mark(): number {
    return this.next_seq;
  }

  /** Drops every version and event written since `mark`: a fork's storage back to its snapshot. */
  rewindTo(mark: number): void {
    assert(this.layer_dir === undefined, "page store: only a memory-only store rewinds");
    this.dropWhere((o) => o.seq >= mark);
  }

  /**
   * Drops the in-memory versions and events tagged above `lsn`: they came from WAL that a new owner of the timeline
   * did not recover (never committed). Returns how many went. Versions on disk are never above a committed LSN.
   */
  dropNewerThan(lsn: Lsn): number {
    assert(lsn >= this.disk_lsn, `page store: versions up to ${this.disk_lsn} are durable; cannot drop above ${lsn}`);
    return this.dropWhere((o) => o.lsn > lsn);
  }

  private dropWhere(doomed: (o: Ordered) => boolean): number {
    let dropped = 0;
    for (const { path, blkno, version } of this.mem_pages) {
      if (!doomed(version)) continue;
      dropped++;
      this.mem_bytes -= pageCost(path, version.value!);
      const blocks = this.memory.get(path);
      const list = blocks?.get(blkno);
      if (blocks === undefined || list === undefined) continue; // this key's doomed versions went already
      const left = list.filter((v) => !doomed(v));
      if (left.length > 0) blocks.set(blkno, left);
      else blocks.delete(blkno);
    }
    this.mem_pages = this.mem_pages.filter((p) => !doomed(p.version));
    for (const { path, record } of this.mem_events) {
      if (!doomed(record)) continue;
      dropped++;
      this.events.dropWhere(path, doomed);
      this.mem_bytes -= eventCost(path);
    }
    this.mem_events = this.mem_events.filter((e) => !doomed(e.record));
    return dropped;
  }

  /** Waits for running flushes and closes the layer files. Versions not flushed are lost. */
  async close(): Promise<void> {
    await this.flushing;
    for (const layer of this.layers) layer.close();
    this.layers.length = 0;
    this.cache.clear();
  }
}
