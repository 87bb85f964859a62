/**
 * A timeline's WAL made durable by a quorum of safekeepers instead of a local fsync: the compute side of
 * `docs/safekeeper_protocol.md`. It runs the {@linkcode Proposer} over one {@linkcode SafekeeperClient} per
 * safekeeper; {@linkcode QuorumWal.flush} resolves only when a majority has fsynced everything appended before it.
 *
 * The local WAL log is a cache holding committed WAL only (written without waiting for its fsync): what a restart
 * replays and branches read. WAL not yet committed lives in memory until a majority has it. Opening elects this
 * process for the timeline and first copies into the local log whatever committed WAL it lacks, from the quorum.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatLsn, type Lsn } from "../lsn.ts";
import { type Outgoing, Proposer, ProposerBackpressureError } from "./proposer.ts";
import { type SafekeeperAddress, SafekeeperClient } from "./safekeeper_client.ts";
import type { OwnWal } from "./wal_api.ts";
import type { WalLog } from "./wal_log.ts";
import type { Logger } from "../logger.ts";

/** How often the proposer's retry timer runs (ms). */
const TICK_MS = 50;
/** A commit waiting longer than this is logged with the reason (ms). */
const STALL_LOG_MS = 5_000;
/** Pieces appended to the proposer, so that no single append exceeds its in-memory limit. */
const PIECE_BYTES = 1024 * 1024;
/** Committed WAL written to the local cache is fsynced (in the background) once this much is unsynced. */
const LOCAL_SYNC_BYTES = 8n * 1024n * 1024n;
/** The most uncommitted WAL held in memory before appends fail (bytes). */
const MAX_PENDING_BYTES = 1024 * 1024 * 1024;

/** No majority of safekeepers could be reached or elected this compute in time. */
export class QuorumUnavailableError extends Error {
  /** @param detail what was reached */
  constructor(detail: string) {
    super(`no majority of safekeepers elected this compute: ${detail}; start more of them or check --safekeepers`);
    this.name = "QuorumUnavailableError";
  }
}

/** Another proposer took over the timeline (or the safekeepers disagree with the local WAL): stop writing. */
export class QuorumLostError extends Error {
  /** @param reason why */
  constructor(reason: string) {
    super(`the safekeepers no longer accept this compute's WAL: ${reason}; restart it`);
    this.name = "QuorumLostError";
  }
}

/** Options of {@linkcode QuorumWal.open}. */
export type QuorumWalOptions = {
  /** The local cache of committed WAL (the timeline's own log). */
  local: WalLog;
  safekeepers: SafekeeperAddress[];
  tenant_id: string;
  timeline_id: string;
  segment_size: number;
  /** Where the timeline's WAL starts when the safekeepers hold none of it yet. */
  timeline_start_lsn: Lsn;
  /** How long to wait for an election (ms). */
  election_timeout_ms: number;
  log: Logger;
};

type Waiter = { target_lsn: Lsn; since_ms: number; resolve: (lsn: Lsn) => void; reject: (error: Error) => void };

/** The WAL of one timeline, durable on a majority of safekeepers. */
export class QuorumWal implements OwnWal {
  readonly #options: QuorumWalOptions;
  readonly #local: WalLog;
  readonly #proposer: Proposer;
  readonly #clients: SafekeeperClient[];
  /** Appended WAL not yet in the local cache, in order and contiguous from the cache's end. */
  readonly #pending: { lsn: Lsn; bytes: Uint8Array }[] = [];
  #pending_bytes = 0;
  #end_lsn: Lsn;
  /** Pieces of #pending from here on are not yet taken by the proposer. */
  #fed_lsn: Lsn;
  readonly #waiters: Waiter[] = [];
  /** Flushes that waited for a majority, and how long they waited in all (ms): the WAL commit lag. */
  readonly stats = { flushes: 0, flush_wait_ms: 0 };
  #ticker: ReturnType<typeof setInterval> | undefined;
  #stall_logged = false;
  /** Ends the current `#waitUntil` pause early (a safekeeper answered). */
  #wake: (() => void) | undefined;
  #local_sync: Promise<unknown> = Promise.resolve();
  #failure: Error | undefined;
  /** Where the timeline's WAL starts: the local log's start, or the branch point while it is empty. */
  readonly #timeline_start_lsn: Lsn;

  private constructor(options: QuorumWalOptions) {
    this.#options = options;
    this.#local = options.local;
    this.#end_lsn = this.#fed_lsn = options.local.end_lsn;
    const local = options.local;
    this.#timeline_start_lsn = local.end_lsn === 0n ? options.timeline_start_lsn : local.start_lsn;
    this.#proposer = new Proposer({
      proposer_id: randomProposerId(),
      safekeepers: options.safekeepers.map((_, i) => i),
      timeline_start_lsn: this.#timeline_start_lsn,
      recover_from_lsn: local.end_lsn === 0n ? this.#timeline_start_lsn : local.end_lsn,
    });
    this.#clients = options.safekeepers.map((address, i) =>
      new SafekeeperClient({
        address,
        tenant_id: options.tenant_id,
        timeline_id: options.timeline_id,
        segment_size: options.segment_size,
        on_message: (msg) => {
          this.#deliver(this.#proposer.onMessage(i, msg));
          this.#wake?.();
        },
        // A safekeeper that just connected gets what the proposer would resend at its next tick, now.
        on_ready: () => this.#deliver(this.#proposer.tick()),
        log: (event, fields) => options.log(event, { timeline_id: options.timeline_id, ...fields }),
      })
    );
  }

  /** Connects, wins an election and brings the local cache up to the elected log's end. */
  static async open(options: QuorumWalOptions): Promise<QuorumWal> {
    const wal = new QuorumWal(options);
    try {
      await wal.#elect();
    } catch (error) {
      await wal.#stop();
      throw error;
    }
    return wal;
  }

  async #elect(): Promise<void> {
    this.#ticker = setInterval(() => this.#onTick(), TICK_MS);
    this.#deliver(this.#proposer.start());
    const deadline_ms = performance.now() + this.#options.election_timeout_ms;
    await this.#waitUntil(() => this.#proposer.state === "streaming", deadline_ms);
    const local_end = this.#local.end_lsn;
    const term_start = this.#proposer.term_start_lsn;
    if (term_start < local_end) {
      if (term_start !== this.#timeline_start_lsn) {
        throw new QuorumLostError(
          `they hold this timeline's WAL up to ${formatLsn(term_start)}, but its local WAL reaches ` +
            `${formatLsn(local_end)}: they are not this timeline's safekeepers, or lost data`,
        );
      }
      await this.#seed(term_start, local_end, deadline_ms);
    } else if (term_start > local_end) {
      const start = local_end === 0n ? this.#timeline_start_lsn : local_end;
      this.#local.append(start, this.#proposer.recoveredWal(start));
      await this.#local.flush();
      this.#options.log("recovered_from_safekeepers", { from: formatLsn(start), to: formatLsn(term_start) });
    }
    this.#end_lsn = this.#fed_lsn = this.#proposer.end_lsn;
    this.#options.log("elected", {
      timeline_id: this.#options.timeline_id,
      term: Number(this.#proposer.term),
      start_lsn: formatLsn(term_start),
    });
  }

  /**
   * The safekeepers hold none of this timeline's WAL yet (a database that had local WAL only): sends them the
   * local log, so that from now on they hold all of it, and waits until a majority has it.
   */
  async #seed(lsn_start: Lsn, lsn_end: Lsn, deadline_ms: number): Promise<void> {
    this.#options.log("seeding_safekeepers", { from: formatLsn(lsn_start), to: formatLsn(lsn_end) });
    for (let at = lsn_start; at < lsn_end;) {
      const piece_end = at + BigInt(PIECE_BYTES) < lsn_end ? at + BigInt(PIECE_BYTES) : lsn_end;
      try {
        this.#send(this.#proposer.append(at, this.#local.read(at, piece_end)));
        at = piece_end;
      } catch (error) {
        if (!(error instanceof ProposerBackpressureError)) throw error;
        await this.#waitUntil(() => false, deadline_ms, TICK_MS);
      }
    }
    await this.#waitUntil(() => this.#proposer.commit_lsn >= lsn_end, deadline_ms);
  }

  /** Polls `done` (between messages and ticks) until it holds, for at most `max_ms`, or until `deadline_ms`. */
  async #waitUntil(done: () => boolean, deadline_ms: number, max_ms = Infinity): Promise<void> {
    const until_ms = Math.min(deadline_ms, performance.now() + max_ms);
    while (!done()) {
      if (this.#proposer.state === "deposed") throw new QuorumLostError(this.#proposer.deposed_reason);
      if (performance.now() >= until_ms) {
        if (until_ms < deadline_ms) return;
        const reached = this.#clients.filter((c) => c.connected).length;
        throw new QuorumUnavailableError(`${reached} of ${this.#clients.length} reachable; a majority must answer`);
      }
      // A safekeeper's message wakes the wait at once: an election is a few round trips, not a few ticks.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.#wake?.(), TICK_MS / 2);
        this.#wake = () => {
          clearTimeout(timer);
          this.#wake = undefined;
          resolve();
        };
      });
    }
  }

  /** This compute's term: the election it won (fences older computes at the pageserver too). */
  get term(): bigint {
    return this.#proposer.term;
  }

  /** Why a newer proposer took the timeline over (a higher term), once it has; undefined while this one holds it. */
  get deposed(): string | undefined {
    return this.#proposer.state === "deposed" ? this.#proposer.deposed_reason : undefined;
  }

  /** The first LSN still held locally. */
  get start_lsn(): Lsn {
    return this.#local.start_lsn;
  }

  /** The end of everything appended. */
  get end_lsn(): Lsn {
    return this.#end_lsn;
  }

  /** The end of what a majority of safekeepers holds (committed). */
  get flush_lsn(): Lsn {
    const committed = this.#proposer.commit_lsn;
    return committed > this.#local.end_lsn ? committed : this.#local.end_lsn;
  }

  /** Appends WAL at the end; an overlap must repeat what was appended (WAL sent to safekeepers cannot change). */
  append(lsn_start: Lsn, bytes: Uint8Array): void {
    if (this.#failure !== undefined) throw this.#failure;
    assert(lsn_start <= this.#end_lsn, `WAL append at ${formatLsn(lsn_start)} leaves a gap`);
    if (lsn_start < this.#end_lsn) {
      const overlap = Number(this.#end_lsn - lsn_start);
      const held = this.read(lsn_start, lsn_start + BigInt(Math.min(overlap, bytes.length)));
      if (!held.every((byte, i) => byte === bytes[i])) {
        throw new QuorumLostError(`Postgres rewrote WAL at ${formatLsn(lsn_start)} that safekeepers already have`);
      }
      bytes = bytes.subarray(Math.min(overlap, bytes.length));
      lsn_start = this.#end_lsn;
    }
    if (this.#pending_bytes + bytes.length > MAX_PENDING_BYTES) {
      throw new QuorumLostError(`more than ${MAX_PENDING_BYTES} bytes of WAL wait for a majority`);
    }
    for (let at = 0; at < bytes.length; at += PIECE_BYTES) {
      const piece = bytes.slice(at, at + PIECE_BYTES);
      this.#pending.push({ lsn: lsn_start + BigInt(at), bytes: piece });
      this.#pending_bytes += piece.length;
    }
    this.#end_lsn = lsn_start + BigInt(bytes.length);
    this.#feed();
  }

  /** Resolves with the committed end once a majority holds everything appended so far. */
  flush(): Promise<Lsn> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const target_lsn = this.#end_lsn;
    if (this.flush_lsn >= target_lsn) return Promise.resolve(this.flush_lsn);
    return new Promise((resolve, reject) => {
      this.#waiters.push({ target_lsn, since_ms: performance.now(), resolve, reject });
    });
  }

  /** WAL bytes of [lsn_start, lsn_end): committed from the local cache, the rest from memory; zeros past the end. */
  read(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    const local_end = this.#local.end_lsn;
    const out = new Uint8Array(Number(lsn_end - lsn_start));
    if (lsn_start < local_end) out.set(this.#local.read(lsn_start, lsn_end < local_end ? lsn_end : local_end), 0);
    for (const { lsn, bytes } of this.#pending) {
      const piece_end = lsn + BigInt(bytes.length);
      if (piece_end <= lsn_start || lsn >= lsn_end) continue;
      const from = lsn > lsn_start ? lsn : lsn_start;
      const to = piece_end < lsn_end ? piece_end : lsn_end;
      out.set(bytes.subarray(Number(from - lsn), Number(to - lsn)), Number(from - lsn_start));
    }
    return out;
  }

  /** The local cache may drop WAL before `lsn`. */
  retainFrom(lsn: Lsn): void {
    this.#local.retainFrom(lsn);
  }

  /** Stops the proposer (uncommitted WAL is dropped: it was never acknowledged) and closes the local cache. */
  async close(): Promise<void> {
    // The safekeepers learn the final commit LSN now rather than at a next heartbeat that never comes: what they
    // offload to the lake then holds every commit this compute acknowledged.
    if (this.#failure === undefined && this.#proposer.state === "streaming") this.#send(this.#proposer.tick());
    await this.#stop();
    this.#fail(new QuorumLostError("the timeline's WAL is closed"));
    await this.#local_sync;
    await this.#local.flush(); // not needed for durability, but spares the next start fetching it again
    await this.#local.close();
  }

  async #stop(): Promise<void> {
    clearInterval(this.#ticker);
    await Promise.all(this.#clients.map((client) => client.close()));
  }

  #deliver(outgoing: Outgoing[]): void {
    this.#send(outgoing);
    this.#progress();
  }

  #send(outgoing: Outgoing[]): void {
    for (const { to, msg } of outgoing) this.#clients[to].send(msg);
  }

  #onTick(): void {
    this.#deliver(this.#proposer.tick());
    const oldest = this.#waiters[0];
    if (oldest === undefined) {
      this.#stall_logged = false;
    } else if (!this.#stall_logged && performance.now() - oldest.since_ms > STALL_LOG_MS) {
      this.#stall_logged = true;
      const reached = this.#clients.filter((c) => c.connected).length;
      this.#options.log("commits_waiting", {
        timeline_id: this.#options.timeline_id,
        reason: `a majority of ${this.#clients.length} safekeepers must hold the WAL; ${reached} reachable`,
        waiting_since_ms: Math.round(performance.now() - oldest.since_ms),
      });
    }
  }

  /** Passes pending WAL to the proposer as far as its limit allows. */
  #feed(): void {
    if (this.#proposer.state !== "streaming") return;
    for (const { lsn, bytes } of this.#pending) {
      if (lsn < this.#fed_lsn) continue;
      let outgoing: Outgoing[];
      try {
        outgoing = this.#proposer.append(lsn, bytes);
      } catch (error) {
        if (error instanceof ProposerBackpressureError) return;
        throw error;
      }
      this.#fed_lsn = lsn + BigInt(bytes.length);
      this.#send(outgoing);
    }
  }

  /** After any message: moves committed WAL to the local cache, wakes commits, and feeds the proposer more. */
  #progress(): void {
    if (this.#proposer.state === "deposed") {
      this.#options.log("deposed", { timeline_id: this.#options.timeline_id, reason: this.#proposer.deposed_reason });
      this.#fail(new QuorumLostError(this.#proposer.deposed_reason));
      return;
    }
    const committed = this.#proposer.commit_lsn;
    while (this.#pending.length > 0 && this.#pending[0].lsn < committed) {
      const { lsn, bytes } = this.#pending[0];
      const take = Number(committed - lsn) < bytes.length ? Number(committed - lsn) : bytes.length;
      this.#local.append(lsn, bytes.subarray(0, take));
      if (take === bytes.length) this.#pending.shift();
      else this.#pending[0] = { lsn: lsn + BigInt(take), bytes: bytes.subarray(take) };
      this.#pending_bytes -= take;
    }
    if (this.#local.end_lsn - this.#local.flush_lsn >= LOCAL_SYNC_BYTES) {
      this.#local_sync = this.#local_sync.then(() => this.#local.flush()).catch((error) =>
        this.#options.log("local_wal_sync_failed", { message: String(error) })
      );
    }
    const flushed = this.flush_lsn;
    const now_ms = performance.now();
    while (this.#waiters.length > 0 && this.#waiters[0].target_lsn <= flushed) {
      const waiter = this.#waiters.shift()!;
      this.stats.flushes++;
      this.stats.flush_wait_ms += now_ms - waiter.since_ms;
      waiter.resolve(flushed);
    }
    if (this.#fed_lsn < this.#end_lsn) this.#feed();
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    clearInterval(this.#ticker);
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#failure);
  }
}

function randomProposerId(): bigint {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return ((BigInt(words[0]) << 32n) | BigInt(words[1])) || 1n;
}
