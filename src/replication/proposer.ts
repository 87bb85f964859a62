/**
 * The proposer of the WAL quorum, run by the compute: wins a term from a majority of safekeepers, recovers the most
 * advanced log, has the others cut what diverges from it, streams WAL and computes the commit LSN. Sans-IO and
 * deterministic: every entry point returns the messages to send; the caller delivers them, feeds answers to
 * {@linkcode Proposer.onMessage} and calls {@linkcode Proposer.tick} on a retry timer.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatLsn, type Lsn, LSN_MAX } from "../lsn.ts";
import { WalRangeError } from "./wal_log.ts";
import type {
  AppendRequest,
  AppendResponse,
  ProposerMessage,
  ReadResponse,
  SafekeeperMessage,
  VoteResponse,
} from "./safekeeper/messages.ts";
import { divergenceLsn, maxLsn, minLsn, type Term, type TermHistory } from "./safekeeper/term_history.ts";
import { ProposerAppendError, ProposerBackpressureError, ProposerStateError } from "./proposer_errors.ts";
import { ProposerPeer } from "./proposer_peer.ts";
import { ProposerWalBuffer } from "./proposer_wal_buffer.ts";

export { ProposerAppendError, ProposerBackpressureError, ProposerStateError };

/** Where a proposer is: electing, fetching the elected log, streaming, or stopped for good. */
export type ProposerState = "campaigning" | "recovering" | "streaming" | "deposed";

/** A message for the caller to deliver to safekeeper `to`. */
export interface Outgoing {
  /** The safekeeper's node id. */
  readonly to: number;
  /** What to send it. */
  readonly msg: ProposerMessage;
}

/** Options of {@linkcode Proposer}. */
export interface ProposerOptions {
  /** Unique to this proposer instance (random 64 bits), never 0. */
  proposer_id: bigint;
  /** The safekeepers' node ids: a majority of them must flush a byte before it is committed. */
  safekeepers: readonly number[];
  /** Where the timeline's WAL starts, used when no safekeeper holds any yet. */
  timeline_start_lsn: Lsn;
  /** {@linkcode Proposer.recoveredWal} can return the WAL from here up to the term start (default: none). */
  recover_from_lsn?: Lsn;
  /** The most WAL bytes per append or read request (default 128 KiB). */
  max_message_bytes?: number;
  /** The most bytes sent to one safekeeper beyond what it acknowledged (default 4 MiB). */
  max_inflight_bytes?: number;
  /** The most WAL held in memory before committed WAL is dropped from it (default 64 MiB). */
  max_buffer_bytes?: number;
  /** The most uncommitted WAL accepted before appends throw {@linkcode ProposerBackpressureError} (64 MiB). */
  max_uncommitted_bytes?: number;
  /** Elections lost before giving up (deposed) (default 100). */
  max_campaigns?: number;
}

/** What a granted vote told about the voter's log. */
interface Vote {
  readonly flush_lsn: Lsn;
  readonly last_log_term: Term;
  readonly term_history: TermHistory;
}

/** A read request in flight to fetch WAL the proposer lacks. */
interface Fetch {
  readonly to: number;
  readonly lsn_start: Lsn;
  readonly lsn_end: Lsn;
}

/** The proposer state machine of one compute for one timeline. */
export class Proposer {
  readonly #opts: Required<Omit<ProposerOptions, "recover_from_lsn">>;
  readonly #recover_from_lsn: Lsn | undefined;
  readonly #peers: Map<number, ProposerPeer>;
  readonly #majority: number;
  #state: ProposerState = "campaigning";
  #deposed_reason = "";
  #term: Term = 0n;
  #max_seen_term: Term = 0n;
  #campaigns = 0;
  #rejected = false;
  readonly #statuses = new Set<number>();
  readonly #votes = new Map<number, Vote>();
  #donor = -1;
  #term_history: TermHistory = [];
  #term_start_lsn: Lsn = 0n;
  #recover_to_lsn: Lsn = 0n;
  #wal = new ProposerWalBuffer(0n);
  #fetch: Fetch | undefined;
  #commit_lsn: Lsn = 0n;

  /** @param options who the safekeepers are, and limits */
  constructor(options: ProposerOptions) {
    assert(options.proposer_id > 0n, "proposer id 0 is reserved");
    assert(options.safekeepers.length > 0 && new Set(options.safekeepers).size === options.safekeepers.length);
    this.#recover_from_lsn = options.recover_from_lsn;
    this.#opts = {
      max_message_bytes: 128 * 1024,
      max_inflight_bytes: 4 * 1024 * 1024,
      max_buffer_bytes: 64 * 1024 * 1024,
      max_uncommitted_bytes: 64 * 1024 * 1024,
      max_campaigns: 100,
      ...options,
    };
    this.#peers = new Map(options.safekeepers.map((id) => [id, new ProposerPeer(id)]));
    this.#majority = Math.floor(options.safekeepers.length / 2) + 1;
  }

  /** Where it is. */
  get state(): ProposerState {
    return this.#state;
  }

  /** Why it was deposed ("" while not). */
  get deposed_reason(): string {
    return this.#deposed_reason;
  }

  /** The term it campaigns for or won (0 before it picked one). */
  get term(): Term {
    return this.#term;
  }

  /** The history of its log, ending with its own term (empty until elected). */
  get term_history(): TermHistory {
    return this.#term_history;
  }

  /** Where its own WAL starts: the end of the log it recovered. */
  get term_start_lsn(): Lsn {
    return this.#term_start_lsn;
  }

  /** The end of its log. */
  get end_lsn(): Lsn {
    return this.#wal.end_lsn;
  }

  /**
   * The highest LSN a majority of safekeepers flushed in this proposer's term (0 until a majority reached the term
   * start): WAL below it is committed. Never decreases.
   */
  get commit_lsn(): Lsn {
    return this.#commit_lsn;
  }

  /** Asks every safekeeper for its term: the first step of an election. */
  start(): Outgoing[] {
    return this.#statusRequests([...this.#peers.keys()]);
  }

  /**
   * The WAL of [lsn_start, term start): what a compute starting up replays. Available once streaming, from
   * `recover_from_lsn` on, until appends push it out of the buffer.
   */
  recoveredWal(lsn_start: Lsn = this.#recover_from_lsn ?? this.#term_start_lsn): Uint8Array {
    if (this.#state !== "streaming") throw new ProposerStateError(`it is ${this.#state}, not streaming`);
    if (lsn_start < this.#wal.start_lsn || lsn_start > this.#term_start_lsn) {
      // Set recover_from_lsn, and read before appends push the recovered WAL out of the buffer.
      throw new WalRangeError(lsn_start, this.#term_start_lsn, this.#wal.start_lsn, this.#term_start_lsn);
    }
    return this.#wal.read(lsn_start, this.#term_start_lsn);
  }

  /** Offers WAL Postgres wrote at the end of the log; returns the appends to send. */
  append(lsn_start: Lsn, bytes: Uint8Array): Outgoing[] {
    if (this.#state === "deposed") throw new ProposerStateError(`deposed: ${this.#deposed_reason}`);
    if (this.#state !== "streaming") throw new ProposerStateError(`it is ${this.#state}: wait until streaming`);
    if (lsn_start !== this.end_lsn) throw new ProposerAppendError(lsn_start, this.end_lsn);
    const committed_lsn = maxLsn(this.#commit_lsn, this.#term_start_lsn);
    if (this.end_lsn + BigInt(bytes.length) - committed_lsn > BigInt(this.#opts.max_uncommitted_bytes)) {
      throw new ProposerBackpressureError(this.#opts.max_uncommitted_bytes);
    }
    this.#wal.append(lsn_start, bytes);
    return [...this.#peers.values()].flatMap((peer) => this.#sendWal(peer));
  }

  /** Handles an answer from safekeeper `from`; returns what to send next. */
  onMessage(from: number, msg: SafekeeperMessage): Outgoing[] {
    const peer = this.#peers.get(from);
    if (peer === undefined || this.#state === "deposed") return [];
    if (msg.term > this.#max_seen_term) this.#max_seen_term = msg.term;
    if (this.#state !== "campaigning" && msg.term > this.#term) {
      this.#depose(`safekeeper ${from} is in term ${msg.term}, above this proposer's ${this.#term}`);
      return [];
    }
    switch (msg.type) {
      case "status_response":
        return this.#onStatus(from);
      case "vote_response":
        return this.#onVote(from, msg);
      case "append_response":
        return this.#onAppendResponse(peer, msg);
      case "read_response":
        return this.#onRead(from, msg);
    }
  }

  /** The retry timer fired: resends whatever may have been lost, and heartbeats carrying the commit LSN. */
  tick(): Outgoing[] {
    switch (this.#state) {
      case "campaigning":
        if (this.#term === 0n) {
          return this.#statusRequests([...this.#peers.keys()].filter((id) => !this.#statuses.has(id)));
        }
        if (this.#rejected) return this.#campaign();
        return this.#voteRequests([...this.#peers.keys()].filter((id) => !this.#votes.has(id)));
      case "recovering":
        this.#fetch = undefined;
        return this.#fetchMissing();
      case "streaming":
        this.#fetch = undefined;
        return [...this.#peers.values()].flatMap((peer) => this.#tickPeer(peer));
      case "deposed":
        return [];
    }
  }

  #onStatus(from: number): Outgoing[] {
    if (this.#state !== "campaigning" || this.#term !== 0n) return [];
    this.#statuses.add(from);
    return this.#statuses.size >= this.#majority ? this.#campaign() : [];
  }

  /** Starts an election in a term above every term seen. */
  #campaign(): Outgoing[] {
    if (++this.#campaigns > this.#opts.max_campaigns) {
      this.#depose(`lost ${this.#opts.max_campaigns} elections: another proposer keeps winning`);
      return [];
    }
    this.#term = this.#max_seen_term + 1n;
    this.#votes.clear();
    this.#rejected = false;
    return this.#voteRequests([...this.#peers.keys()]);
  }

  #voteRequests(ids: number[]): Outgoing[] {
    return ids.map((to) => ({
      to,
      msg: { type: "vote_request", term: this.#term, proposer_id: this.#opts.proposer_id },
    }));
  }

  #onVote(from: number, msg: VoteResponse): Outgoing[] {
    if (this.#state !== "campaigning" || msg.term < this.#term) return [];
    if (!msg.granted) {
      // Someone else holds this term: the next tick campaigns again, above it.
      this.#rejected = true;
      return [];
    }
    if (msg.term !== this.#term) return [];
    this.#votes.set(from, msg);
    return this.#votes.size >= this.#majority ? this.#won() : [];
  }

  /** Takes the most advanced log of the vote (highest last term, then highest flush LSN) as the truth. */
  #won(): Outgoing[] {
    let donor = -1;
    let best: Vote | undefined;
    for (const [id, vote] of this.#votes) {
      const better = best === undefined || vote.last_log_term > best.last_log_term ||
        (vote.last_log_term === best.last_log_term && vote.flush_lsn > best.flush_lsn);
      if (better) [donor, best] = [id, vote];
    }
    assert(best !== undefined && best.last_log_term < this.#term);
    this.#donor = donor;
    this.#term_start_lsn = best.term_history.length === 0 ? this.#opts.timeline_start_lsn : best.flush_lsn;
    this.#term_history = [...best.term_history, { term: this.#term, start_lsn: this.#term_start_lsn }];
    let needed_lsn = maxLsn(this.#recover_from_lsn ?? LSN_MAX, this.#term_history[0].start_lsn);
    for (const vote of this.#votes.values()) {
      needed_lsn = minLsn(needed_lsn, divergenceLsn(vote.term_history, vote.flush_lsn, this.#term_history, LSN_MAX));
    }
    this.#recover_to_lsn = minLsn(needed_lsn, this.#term_start_lsn);
    this.#wal = new ProposerWalBuffer(this.#term_start_lsn);
    this.#state = "recovering";
    return this.#fetchMissing();
  }

  #beginStreaming(): Outgoing[] {
    this.#state = "streaming";
    return [...this.#peers.values()].flatMap((peer) => this.#elected(peer));
  }

  #elected(peer: ProposerPeer): Outgoing[] {
    const msg = {
      type: "elected",
      term: this.#term,
      term_start_lsn: this.#term_start_lsn,
      term_history: this.#term_history,
    } as const;
    return [{ to: peer.id, msg }];
  }

  /** Asks a safekeeper holding our log for the chunk of WAL just before the buffer, when someone needs it. */
  #fetchMissing(): Outgoing[] {
    const target_lsn = this.#fetchTarget();
    if (target_lsn === undefined) return this.#state === "recovering" ? this.#beginStreaming() : [];
    if (this.#fetch !== undefined) return [];
    const lsn_end = this.#wal.start_lsn;
    const lsn_start = maxLsn(target_lsn, lsn_end - BigInt(this.#opts.max_message_bytes));
    const source = this.#fetchSource(lsn_end);
    if (source === undefined) return [];
    this.#fetch = { to: source, lsn_start, lsn_end };
    return [{ to: source, msg: { type: "read_request", term: this.#term, lsn_start, lsn_end } }];
  }

  /** The lowest LSN someone needs below the buffer, if any. */
  #fetchTarget(): Lsn | undefined {
    let target_lsn = this.#state === "recovering" ? this.#recover_to_lsn : this.#wal.start_lsn;
    for (const peer of this.#peers.values()) {
      if (peer.elected && peer.next_lsn < target_lsn) target_lsn = peer.next_lsn;
    }
    return target_lsn < this.#wal.start_lsn ? target_lsn : undefined;
  }

  /** A safekeeper whose WAL up to `lsn_end` is ours: one that took our elected message, or the donor. */
  #fetchSource(lsn_end: Lsn): number | undefined {
    for (const peer of this.#peers.values()) if (peer.elected && peer.flush_lsn >= lsn_end) return peer.id;
    return lsn_end <= this.#term_start_lsn ? this.#donor : undefined;
  }

  #onRead(from: number, msg: ReadResponse): Outgoing[] {
    const fetch = this.#fetch;
    if (fetch === undefined || from !== fetch.to || msg.lsn_start !== fetch.lsn_start) return [];
    this.#fetch = undefined;
    if (msg.status === "not_held" && this.#state === "recovering") {
      this.#depose(`donor safekeeper ${from} does not hold WAL from ${formatLsn(msg.lsn_start)}`);
      return [];
    }
    // A shorter answer, or one overtaken by trimming, is dropped: the next tick asks again.
    if (msg.status !== "ok" || msg.lsn_end !== fetch.lsn_end || msg.lsn_end !== this.#wal.start_lsn) return [];
    this.#wal.prepend(msg.lsn_start, msg.bytes);
    const out = this.#fetchMissing();
    if (this.#state !== "streaming") return out;
    return [...out, ...[...this.#peers.values()].flatMap((peer) => this.#sendWal(peer))];
  }

  #onAppendResponse(peer: ProposerPeer, msg: AppendResponse): Outgoing[] {
    if (this.#state !== "streaming" || msg.term < this.#term) return [];
    switch (msg.status) {
      case "ok":
        peer.acknowledged(msg.flush_lsn);
        this.#advanceCommit();
        return this.#sendWal(peer);
      case "gap":
        peer.fellBehind(msg.flush_lsn);
        this.#advanceCommit();
        return this.#sendWal(peer);
      case "not_elected":
        peer.elected = false;
        return this.#elected(peer);
      case "term_rejected":
        return [];
    }
  }

  /** The commit LSN is the majority's flush LSN, but only from the term start on: see `docs/`. */
  #advanceCommit(): void {
    const flushes = [...this.#peers.values()].filter((p) => p.elected).map((p) => p.flush_lsn);
    if (flushes.length < this.#majority) return;
    flushes.sort((a, b) => a > b ? -1 : a < b ? 1 : 0);
    const quorum_lsn = flushes[this.#majority - 1];
    if (quorum_lsn < this.#term_start_lsn || quorum_lsn <= this.#commit_lsn) return;
    assert(quorum_lsn <= this.end_lsn, "a safekeeper acknowledged WAL this proposer never sent");
    this.#commit_lsn = quorum_lsn;
    if (this.#wal.size_bytes > this.#opts.max_buffer_bytes) {
      this.#wal.trimTo(minLsn(this.#commit_lsn, this.end_lsn - BigInt(Math.floor(this.#opts.max_buffer_bytes / 2))));
    }
  }

  /** Sends a safekeeper what it misses, up to its in-flight window. */
  #sendWal(peer: ProposerPeer): Outgoing[] {
    if (!peer.elected || this.#state !== "streaming") return [];
    if (peer.next_lsn < this.#wal.start_lsn) return this.#fetchMissing();
    const out: Outgoing[] = [];
    const window_end = peer.flush_lsn + BigInt(this.#opts.max_inflight_bytes);
    const max_appends = Math.ceil(this.#opts.max_inflight_bytes / this.#opts.max_message_bytes) + 1;
    for (let i = 0; i < max_appends && peer.next_lsn < this.end_lsn && peer.next_lsn < window_end; i++) {
      const lsn_end = minLsn(minLsn(this.end_lsn, window_end), peer.next_lsn + BigInt(this.#opts.max_message_bytes));
      out.push({ to: peer.id, msg: this.#appendRequest(peer.next_lsn, lsn_end) });
      peer.next_lsn = lsn_end;
    }
    return out;
  }

  #tickPeer(peer: ProposerPeer): Outgoing[] {
    if (!peer.elected) return this.#elected(peer);
    peer.tick();
    const out = this.#sendWal(peer);
    if (out.length > 0 || peer.next_lsn < this.#wal.start_lsn) return out;
    // A heartbeat: carries the commit LSN, and a gap answer reveals WAL a restarted safekeeper lost.
    return [{ to: peer.id, msg: this.#appendRequest(peer.next_lsn, peer.next_lsn) }];
  }

  #appendRequest(lsn_start: Lsn, lsn_end: Lsn): AppendRequest {
    return {
      type: "append_request",
      term: this.#term,
      begin_lsn: lsn_start,
      commit_lsn: this.#commit_lsn,
      bytes: this.#wal.read(lsn_start, lsn_end),
    };
  }

  #statusRequests(ids: number[]): Outgoing[] {
    return ids.map((to) => ({ to, msg: { type: "status_request" } }));
  }

  #depose(reason: string): void {
    this.#state = "deposed";
    this.#deposed_reason = reason;
    this.#fetch = undefined;
  }
}
