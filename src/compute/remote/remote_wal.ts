/**
 * A timeline's WAL below what the compute caches, read from the pageserver (which holds every timeline's committed
 * WAL, and its ancestors' below the branch point): what recovery of a new branch replays from its parent, and the
 * first page of the redo record's segment. Reads are synchronous (Postgres reads WAL through its file
 * system), so they fetch aligned chunks and keep the last few.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Lsn } from "../../lsn.ts";
import type { WalSource } from "../../replication/wal_api.ts";
import { MAX_WAL_READ_BYTES } from "../../pageserver/messages.ts";
import type { PageChannel } from "./page_channel.ts";

/** Bytes fetched at once. */
const CHUNK_BYTES = MAX_WAL_READ_BYTES;
/** Chunks kept. */
const CHUNKS_KEPT = 4;

/** The WAL a pageserver holds for a timeline, read-only, up to a fixed end. */
export class RemoteWalSource implements WalSource {
  readonly #channel: PageChannel;
  readonly #timeline_id: string;
  readonly start_lsn: Lsn;
  readonly end_lsn: Lsn;
  readonly #chunks = new Map<Lsn, Uint8Array>();

  /**
   * @param channel the connection to the pageserver
   * @param timeline_id the timeline whose WAL (with its ancestors') is read
   * @param start_lsn the first LSN the pageserver holds
   * @param end_lsn the end of what is read through this source (a branch point)
   */
  constructor(channel: PageChannel, timeline_id: string, start_lsn: Lsn, end_lsn: Lsn) {
    this.#channel = channel;
    this.#timeline_id = timeline_id;
    this.start_lsn = start_lsn;
    this.end_lsn = end_lsn;
  }

  /** WAL bytes of [lsn_start, lsn_end); below `start_lsn` there is no WAL and the bytes are zeros, as in a new segment. */
  read(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    assert(lsn_end <= this.end_lsn && lsn_start <= lsn_end, "WAL read out of range");
    const out = new Uint8Array(Number(lsn_end - lsn_start));
    for (let at = lsn_start > this.start_lsn ? lsn_start : this.start_lsn; at < lsn_end;) {
      const chunk_start = at - at % BigInt(CHUNK_BYTES);
      const chunk = this.#chunk(chunk_start);
      const from = Number(at - chunk_start);
      const n = Math.min(chunk.length - from, Number(lsn_end - at));
      assert(n > 0, "the pageserver returned less WAL than asked for");
      out.set(chunk.subarray(from, from + n), Number(at - lsn_start));
      at += BigInt(n);
    }
    return out;
  }

  #chunk(chunk_start: Lsn): Uint8Array {
    const held = this.#chunks.get(chunk_start);
    if (held !== undefined) return held;
    const from = chunk_start < this.start_lsn ? this.start_lsn : chunk_start;
    const end = chunk_start + BigInt(CHUNK_BYTES) < this.end_lsn ? chunk_start + BigInt(CHUNK_BYTES) : this.end_lsn;
    const reply = this.#channel.requestSync({
      type: "read_wal",
      timeline_id: this.#timeline_id,
      lsn_start: from,
      lsn_end: end,
    });
    assert(reply.type === "wal_bytes", `read_wal answered with ${reply.type}`);
    const chunk = new Uint8Array(Number(end - chunk_start));
    chunk.set(reply.bytes, Number(from - chunk_start));
    if (this.#chunks.size >= CHUNKS_KEPT) this.#chunks.delete(this.#chunks.keys().next().value!);
    this.#chunks.set(chunk_start, chunk);
    return chunk;
  }

  retainFrom(_lsn: Lsn): void {
    // The pageserver decides what history it keeps.
  }
}
