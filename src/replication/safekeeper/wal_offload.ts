/**
 * Safekeeper WAL offload: each sealed segment of committed WAL (all of it below the commit LSN) goes to remote
 * storage as one object, `wal/<tenant>/<timeline>/<segno, 16 hex digits>`. Committed WAL is the same on every
 * safekeeper that holds it, so the quorum's safekeepers may all upload a segment: they write the same bytes. The
 * object format (docs/remote_storage.md): a 32-byte header, little-endian, then the WAL bytes.
 *
 *     magic "TWSO" u32 | version u8 | 3 zero bytes | lsn_start u64 | length u32 | segment_size u32 |
 *     body crc32c u32 | 4 zero bytes | body
 *
 * `lsn_start` is the segment's start, or the timeline's first LSN in its first segment.
 *
 * @module
 */
import { CorruptDataError } from "../../errors.ts";
import { crc32c } from "../../crc32c.ts";
import { formatLsn, type Lsn } from "../../lsn.ts";
import type { Logger } from "../../logger.ts";
import type { RemoteStorage } from "../../remote_storage/mod.ts";
import type { Safekeeper } from "./safekeeper.ts";
import { decodeWalHorizon, walHorizonKey } from "../wal_horizon.ts";

/** The object format's version. */
export const OFFLOAD_FORMAT_VERSION = 1;
const MAGIC = 0x4f535754; // "TWSO" little-endian
const HEADER_BYTES = 32;
/** Segments uploaded per tick, across timelines: a bound on the work (and memory) of one tick. */
const MAX_SEGMENTS_PER_TICK = 4;
/** A timeline's WAL horizon in the lake is read every this many ticks (the pageserver moves it every second or so). */
const HORIZON_EVERY_TICKS = 10;

/** Where an offloaded timeline's WAL comes from: a safekeeper, or an embedded database's own log. */
export type OffloadSource =
  & Pick<Safekeeper, "commit_lsn" | "flush_lsn" | "wal_start_lsn" | "readCommitted">
  & { removeWalBefore?: Safekeeper["removeWalBefore"] };

/** A timeline whose WAL goes to the lake, as the offloader reads it. */
export type OffloadedTimeline = {
  tenant_id: string;
  timeline_id: string;
  segment_size: number;
  source: OffloadSource;
};

/** The key of segment `segno` of a timeline; `.partial` for the committed start of a segment not yet sealed. */
export function segmentKey(tenant_id: string, timeline_id: string, segno: bigint, partial = false): string {
  return `wal/${tenant_id}/${timeline_id}/${segno.toString(16).padStart(16, "0")}${partial ? ".partial" : ""}`;
}

/** A sealed segment's key: 16 hex digits. */
const SEALED_KEY = /\/([0-9a-f]{16})$/;
/** A partial segment's key. */
const PARTIAL_KEY = /\/([0-9a-f]{16})\.partial$/;

/** One segment's object. */
export function encodeSegmentObject(lsn_start: Lsn, segment_size: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint8(4, OFFLOAD_FORMAT_VERSION);
  view.setBigUint64(8, lsn_start, true);
  view.setUint32(16, body.length, true);
  view.setUint32(20, segment_size, true);
  view.setUint32(24, crc32c(body), true);
  out.set(body, HEADER_BYTES);
  return out;
}

/** The WAL in a segment object; {@linkcode CorruptDataError} naming `key` when it is damaged. */
export function decodeSegmentObject(key: string, object: Uint8Array): { lsn_start: Lsn; bytes: Uint8Array } {
  const fail = (why: string) => new CorruptDataError(`WAL segment object ${key}`, why);
  if (object.length < HEADER_BYTES) throw fail(`${object.length} bytes, shorter than its header`);
  const view = new DataView(object.buffer, object.byteOffset, object.length);
  if (view.getUint32(0, true) !== MAGIC) throw fail("not a Tarn WAL segment object (bad magic)");
  if (view.getUint8(4) !== OFFLOAD_FORMAT_VERSION) throw fail(`format version ${view.getUint8(4)}`);
  const length = view.getUint32(16, true);
  if (HEADER_BYTES + length !== object.length) {
    throw fail(`header says ${length} bytes of WAL, ${object.length - 32} follow`);
  }
  const bytes = object.subarray(HEADER_BYTES);
  if (crc32c(bytes) !== view.getUint32(24, true)) throw fail("CRC32C mismatch");
  return { lsn_start: view.getBigUint64(8, true), bytes };
}

/** Uploads sealed committed segments of a safekeeper's timelines, a few per tick. */
export class WalOffloader {
  readonly #store: RemoteStorage;
  readonly #log: Logger;
  /** Next segment to upload, by `tenant/timeline`. */
  readonly #next = new Map<string, bigint>();
  /** The end of the WAL uploaded, by `tenant/timeline`. */
  readonly #uploaded = new Map<string, Lsn>();
  #ticks = 0;

  /**
   * @param store where segments go
   * @param log where uploads and failures are told
   */
  constructor(store: RemoteStorage, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  /** The end of the WAL of a timeline uploaded so far (0: none known). */
  uploadedLsn(tenant_id: string, timeline_id: string): Lsn {
    return this.#uploaded.get(`${tenant_id}/${timeline_id}`) ?? 0n;
  }

  /** Uploads what became sealed and committed since the last tick (at most a few segments). */
  async tick(timelines: OffloadedTimeline[]): Promise<void> {
    let budget = MAX_SEGMENTS_PER_TICK;
    for (const t of timelines) {
      if (budget <= 0) break;
      budget -= await this.#offload(t, budget);
    }
    if (this.#ticks++ % HORIZON_EVERY_TICKS !== 0) return;
    for (const t of timelines) await this.#removeBelowHorizon(t);
  }

  /**
   * Deletes local WAL below min(what the pageserver holds in the lake, what this safekeeper uploaded, its commit
   * LSN): no compute or pageserver asks a safekeeper for it again, and the lake has it.
   */
  async #removeBelowHorizon(t: OffloadedTimeline): Promise<void> {
    if (t.source.removeWalBefore === undefined) return; // a source that keeps all its WAL
    const key = walHorizonKey(t.tenant_id, t.timeline_id);
    const object = await this.#store.get(key);
    if (object === undefined) return;
    // A segment of margin below the pageserver's horizon: a compute starting reads the tail after the pageserver's
    // WAL copy from the safekeepers, and that copy may end a few bytes short of a segment's end (trailing zeros).
    let keep = decodeWalHorizon(key, object) - BigInt(t.segment_size);
    const uploaded = this.uploadedLsn(t.tenant_id, t.timeline_id);
    for (const lsn of [uploaded, t.source.commit_lsn, t.source.flush_lsn]) if (lsn < keep) keep = lsn;
    if (keep - t.source.wal_start_lsn < BigInt(t.segment_size)) return; // files go a segment at a time
    t.source.removeWalBefore(keep);
    this.#log("wal_removed", { tenant_id: t.tenant_id, timeline_id: t.timeline_id, below: formatLsn(keep) });
  }

  async #offload(t: OffloadedTimeline, budget: number): Promise<number> {
    const id = `${t.tenant_id}/${t.timeline_id}`;
    const size = BigInt(t.segment_size);
    const committed = t.source.commit_lsn < t.source.flush_lsn ? t.source.commit_lsn : t.source.flush_lsn;
    let next = this.#next.get(id);
    if (next === undefined) {
      const keys = await this.#store.list(`wal/${t.tenant_id}/${t.timeline_id}/`);
      const last = keys.filter((k) => SEALED_KEY.test(k)).at(-1);
      next = last === undefined ? t.source.wal_start_lsn / size : BigInt(`0x${last.slice(-16)}`) + 1n;
      this.#next.set(id, next);
      this.#uploaded.set(id, next * size);
    }
    let done = 0;
    for (; done < budget && (next + 1n) * size <= committed; done++, next++) {
      const own_start = next * size < t.source.wal_start_lsn ? t.source.wal_start_lsn : next * size;
      const { lsn_start, body } = await this.#withEarlierPartial(t, next, own_start, (next + 1n) * size);
      await this.#store.put(
        segmentKey(t.tenant_id, t.timeline_id, next),
        encodeSegmentObject(lsn_start, t.segment_size, body),
      );
      await this.#store.delete(segmentKey(t.tenant_id, t.timeline_id, next, true));
      this.#next.set(id, next + 1n);
      this.#uploaded.set(id, (next + 1n) * size);
      this.#log("wal_segment_offloaded", {
        tenant_id: t.tenant_id,
        timeline_id: t.timeline_id,
        end: formatLsn((next + 1n) * size),
      });
    }
    return done;
  }

  /**
   * The committed WAL of segment `segno` from `own_start` (where this safekeeper's WAL starts in it) to `lsn_end`,
   * preceded by what an earlier partial object of the segment holds below `own_start`: a safekeeper seeded again
   * after a disaster starts in the middle of a segment whose start only the lake still has.
   */
  async #withEarlierPartial(
    t: OffloadedTimeline,
    segno: bigint,
    own_start: Lsn,
    lsn_end: Lsn,
  ): Promise<{ lsn_start: Lsn; body: Uint8Array }> {
    const own = t.source.readCommitted(own_start, lsn_end);
    if (own_start === segno * BigInt(t.segment_size)) return { lsn_start: own_start, body: own };
    const key = segmentKey(t.tenant_id, t.timeline_id, segno, true);
    const object = await this.#store.get(key);
    if (object === undefined) return { lsn_start: own_start, body: own };
    const earlier = decodeSegmentObject(key, object);
    const earlier_end = earlier.lsn_start + BigInt(earlier.bytes.length);
    if (earlier.lsn_start >= own_start || earlier_end < own_start) return { lsn_start: own_start, body: own };
    const head = earlier.bytes.subarray(0, Number(own_start - earlier.lsn_start));
    const body = new Uint8Array(head.length + own.length);
    body.set(head);
    body.set(own, head.length);
    return { lsn_start: earlier.lsn_start, body };
  }

  /**
   * Uploads, for each timeline, the committed WAL of its segment not yet sealed as `<segno>.partial` (a clean stop
   * does this, so that the lake holds every committed byte). A later sealed upload of the segment replaces it.
   */
  async uploadPartials(timelines: OffloadedTimeline[]): Promise<void> {
    await this.tick(timelines);
    for (const t of timelines) {
      const size = BigInt(t.segment_size);
      const id = `${t.tenant_id}/${t.timeline_id}`;
      const committed = t.source.commit_lsn < t.source.flush_lsn ? t.source.commit_lsn : t.source.flush_lsn;
      const next = this.#next.get(id);
      if (next === undefined || committed <= next * size || committed >= (next + 1n) * size) continue;
      const own_start = next * size < t.source.wal_start_lsn ? t.source.wal_start_lsn : next * size;
      if (committed <= own_start) continue;
      const { lsn_start, body } = await this.#withEarlierPartial(t, next, own_start, committed);
      const key = segmentKey(t.tenant_id, t.timeline_id, next, true);
      // Every safekeeper uploads the partial at its clean stop, and one that learned a lower commit LSN must not
      // replace a longer partial with a shorter one: the lake would lose committed WAL.
      const existing = await this.#store.get(key);
      const earlier = existing === undefined ? undefined : decodeSegmentObject(key, existing);
      if (earlier !== undefined && earlier.lsn_start <= lsn_start) {
        if (earlier.lsn_start + BigInt(earlier.bytes.length) >= committed) continue;
      }
      await this.#store.put(key, encodeSegmentObject(lsn_start, t.segment_size, body));
      this.#uploaded.set(id, committed);
      this.#log("wal_partial_offloaded", {
        tenant_id: t.tenant_id,
        timeline_id: t.timeline_id,
        end: formatLsn(committed),
      });
    }
  }
}

/**
 * The WAL of a timeline that safekeepers offloaded, as contiguous pieces in LSN order: every sealed segment, then the
 * partial segment that follows the last of them, if any. Stops before a gap (a segment missing from the lake) and
 * says so through `log`.
 */
export async function* readOffloadedWal(
  store: RemoteStorage,
  tenant_id: string,
  timeline_id: string,
  log: Logger,
): AsyncGenerator<{ lsn_start: Lsn; bytes: Uint8Array }> {
  const keys = await store.list(`wal/${tenant_id}/${timeline_id}/`);
  const sealed = keys.filter((k) => SEALED_KEY.test(k));
  const last = sealed.at(-1);
  const after = last === undefined ? -1n : BigInt(`0x${SEALED_KEY.exec(last)![1]}`);
  const partial = keys.filter((k) => PARTIAL_KEY.test(k) && BigInt(`0x${PARTIAL_KEY.exec(k)![1]}`) > after).at(0);
  let end: Lsn | undefined;
  for (const key of partial === undefined ? sealed : [...sealed, partial]) {
    const bytes = await store.get(key);
    if (bytes === undefined) continue; // a partial replaced by its sealed segment meanwhile
    const piece = decodeSegmentObject(key, bytes);
    if (end !== undefined && piece.lsn_start !== end) {
      log("offloaded_wal_gap", { timeline_id, expected: formatLsn(end), found: formatLsn(piece.lsn_start), key });
      return;
    }
    end = piece.lsn_start + BigInt(piece.bytes.length);
    yield piece;
  }
}
