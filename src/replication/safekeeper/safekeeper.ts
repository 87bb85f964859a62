/**
 * The acceptor of the WAL quorum, for one timeline: votes, truncates divergent tails on an elected message, and
 * makes appended WAL durable before acknowledging it. Sans-IO: it answers one message at a time against a
 * {@linkcode SafekeeperStorage}; the caller owns sockets and time.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatLsn, type Lsn, LSN_MAX } from "../../lsn.ts";
import type {
  AppendRequest,
  AppendResponse,
  AppendStatus,
  Elected,
  ProposerMessage,
  ReadRequest,
  ReadResponse,
  SafekeeperMessage,
  StatusResponse,
  VoteRequest,
  VoteResponse,
} from "./messages.ts";
import type { SafekeeperState, SafekeeperStorage } from "./storage.ts";
import { divergenceLsn, historyUpTo, lastTerm, minLsn, type Term, type TermHistory } from "./term_history.ts";

/** Options of {@linkcode Safekeeper.open}. */
export interface SafekeeperOptions {
  /** The commit LSN is persisted when it has advanced this far since last persisted (it is advisory). */
  commit_persist_interval_bytes?: number;
  /** The most messages waiting to be handled; more throw {@linkcode SafekeeperBusyError}. */
  max_queued_messages?: number;
}

/** A storage operation failed: the safekeeper answers nothing more until it is opened again on fresh storage. */
export class SafekeeperFailedError extends Error {
  /** @param cause the storage error */
  constructor(cause: unknown) {
    super(`the safekeeper stopped after a storage failure (${cause}): fix the disk, then restart it`, { cause });
    this.name = "SafekeeperFailedError";
  }
}

/** Too many messages are waiting: the sender outpaces the disk. */
export class SafekeeperBusyError extends Error {
  /** @param limit the queue limit */
  constructor(limit: number) {
    super(`more than ${limit} messages wait for the safekeeper: slow the sender down or raise max_queued_messages`);
    this.name = "SafekeeperBusyError";
  }
}

/** One timeline's acceptor. */
export class Safekeeper {
  readonly #storage: SafekeeperStorage;
  readonly #commit_persist_interval_bytes: bigint;
  readonly #max_queued_messages: number;
  #state: SafekeeperState;
  #persisted_commit_lsn: Lsn;
  #queued = 0;
  #chain: Promise<unknown> = Promise.resolve();
  #failure: SafekeeperFailedError | undefined;

  private constructor(storage: SafekeeperStorage, state: SafekeeperState, options: SafekeeperOptions) {
    this.#storage = storage;
    this.#state = state;
    this.#persisted_commit_lsn = state.commit_lsn;
    this.#commit_persist_interval_bytes = BigInt(options.commit_persist_interval_bytes ?? 1024 * 1024);
    this.#max_queued_messages = options.max_queued_messages ?? 1024;
  }

  /** Loads the persisted state; the WAL end is whatever the storage found durable (a torn tail already dropped). */
  static async open(storage: SafekeeperStorage, options: SafekeeperOptions = {}): Promise<Safekeeper> {
    const state = await storage.loadState();
    const first = state.term_history[0];
    // An empty WAL holds no position; an elected one begins where its history does.
    if (storage.wal_start_lsn === storage.wal_end_lsn && first !== undefined) storage.truncateWal(first.start_lsn);
    return new Safekeeper(storage, state, options);
  }

  /** The highest term seen. */
  get term(): Term {
    return this.#state.term;
  }

  /** The end of the durable WAL. */
  get flush_lsn(): Lsn {
    return this.#storage.wal_flush_lsn;
  }

  /** The commit LSN last heard of. */
  get commit_lsn(): Lsn {
    return this.#state.commit_lsn;
  }

  /** The history of the durable WAL. */
  get term_history(): TermHistory {
    return historyUpTo(this.#state.term_history, this.flush_lsn);
  }

  /** The storage failure that stopped this safekeeper, if any. */
  get failure(): SafekeeperFailedError | undefined {
    return this.#failure;
  }

  /**
   * Committed WAL it holds, [lsn_start, lsn_end): for offload to remote storage. Both ends must lie within what it
   * holds durably and below the commit LSN (committed WAL is the same on every safekeeper that has it).
   */
  readCommitted(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    assert(lsn_start >= this.#storage.wal_start_lsn && lsn_start <= lsn_end, "WAL read below what is held");
    assert(lsn_end <= this.commit_lsn && lsn_end <= this.flush_lsn, "WAL read past the committed, durable end");
    return this.#storage.readWal(lsn_start, lsn_end);
  }

  /** Lets go of the WAL below `lsn`, which must be committed and durable here (the lake and its readers have it). */
  removeWalBefore(lsn: Lsn): void {
    assert(lsn <= this.commit_lsn && lsn <= this.flush_lsn, "removing WAL that is not committed and durable");
    if (lsn > this.#storage.wal_start_lsn) this.#storage.removeWalBefore(lsn);
  }

  /** The first LSN of the WAL it holds. */
  get wal_start_lsn(): Lsn {
    return this.#storage.wal_start_lsn;
  }

  /** The term and positions, as a status response. */
  status(): StatusResponse {
    return {
      type: "status_response",
      term: this.term,
      flush_lsn: this.flush_lsn,
      commit_lsn: this.commit_lsn,
      last_log_term: lastTerm(this.term_history),
      wal_start_lsn: this.#storage.wal_start_lsn,
    };
  }

  /**
   * Handles one message and resolves with the answer, once whatever the answer promises is durable. Messages are
   * handled one at a time in call order. Rejects with {@linkcode SafekeeperFailedError} after a storage failure.
   */
  handle(msg: ProposerMessage): Promise<SafekeeperMessage> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#queued >= this.#max_queued_messages) return Promise.reject(new SafekeeperBusyError(this.#queued));
    this.#queued++;
    const run = this.#chain.then(() => this.#handleNow(msg)).finally(() => this.#queued--);
    this.#chain = run.catch(() => {});
    return run;
  }

  async #handleNow(msg: ProposerMessage): Promise<SafekeeperMessage> {
    if (this.#failure !== undefined) throw this.#failure;
    assert(this.#storage.wal_end_lsn === this.#storage.wal_flush_lsn, "every answer is preceded by a sync");
    try {
      switch (msg.type) {
        case "status_request":
          return this.status();
        case "vote_request":
          return await this.#vote(msg);
        case "elected":
          return await this.#elected(msg);
        case "append_request":
          return await this.#append(msg);
        case "read_request":
          return this.#read(msg);
      }
    } catch (error) {
      this.#failure = new SafekeeperFailedError(error);
      throw this.#failure;
    }
  }

  async #vote(msg: VoteRequest): Promise<VoteResponse> {
    const state = this.#state;
    const again = msg.term === state.term && msg.proposer_id === state.voted_for;
    const granted = msg.term > state.term || again;
    if (granted && !again) await this.#persist({ ...state, term: msg.term, voted_for: msg.proposer_id });
    const history = this.term_history;
    return {
      type: "vote_response",
      term: this.term,
      granted,
      flush_lsn: this.flush_lsn,
      commit_lsn: this.commit_lsn,
      last_log_term: lastTerm(history),
      term_history: history,
    };
  }

  /** Whether the elected message of `term` was taken: the stored history ends in it. */
  #electedIn(term: Term): boolean {
    return this.#state.term === term && lastTerm(this.#state.term_history) === term;
  }

  async #elected(msg: Elected): Promise<AppendResponse> {
    if (msg.term < this.term) return this.#appendResponse("term_rejected");
    if (this.#electedIn(msg.term)) return this.#appendResponse("ok");
    const flush_lsn = this.flush_lsn;
    const cut_lsn = divergenceLsn(this.term_history, flush_lsn, msg.term_history, LSN_MAX);
    const committed_lsn = minLsn(this.commit_lsn, flush_lsn);
    assert(
      cut_lsn >= committed_lsn,
      `term ${msg.term} would cut committed WAL at ${formatLsn(cut_lsn)} (committed ${formatLsn(committed_lsn)})`,
    );
    if (cut_lsn < flush_lsn || this.#storage.wal_start_lsn === this.#storage.wal_end_lsn) {
      this.#storage.truncateWal(cut_lsn);
      // The cut must be durable before the history that describes the shorter log is.
      await this.#storage.syncWal();
    }
    const voted_for = msg.term === this.term ? this.#state.voted_for : 0n;
    await this.#persist({ ...this.#state, term: msg.term, voted_for, term_history: msg.term_history });
    return this.#appendResponse("ok");
  }

  async #append(msg: AppendRequest): Promise<AppendResponse> {
    if (msg.term < this.term) return this.#appendResponse("term_rejected");
    if (!this.#electedIn(msg.term)) return this.#appendResponse("not_elected");
    const flush_lsn = this.flush_lsn;
    if (msg.begin_lsn > flush_lsn) return this.#appendResponse("gap");
    const end_lsn = msg.begin_lsn + BigInt(msg.bytes.length);
    if (end_lsn > flush_lsn) {
      // Within one term the proposer never rewrites its log: bytes below the end are a resend, not news.
      this.#storage.writeWal(flush_lsn, msg.bytes.subarray(Number(flush_lsn - msg.begin_lsn)));
      await this.#storage.syncWal();
    }
    if (msg.commit_lsn > this.commit_lsn) await this.#noteCommit(msg.commit_lsn);
    return this.#appendResponse("ok");
  }

  async #noteCommit(commit_lsn: Lsn): Promise<void> {
    this.#state = { ...this.#state, commit_lsn };
    if (commit_lsn - this.#persisted_commit_lsn >= this.#commit_persist_interval_bytes) {
      await this.#persist(this.#state);
    }
  }

  #read(msg: ReadRequest): ReadResponse {
    const refuse = (status: "term_mismatch" | "not_held"): ReadResponse => ({
      type: "read_response",
      term: this.term,
      status,
      lsn_start: msg.lsn_start,
      lsn_end: msg.lsn_start,
      bytes: new Uint8Array(0),
    });
    if (msg.term !== 0n && msg.term !== this.term) return refuse("term_mismatch");
    const limit_lsn = msg.term === 0n ? minLsn(this.commit_lsn, this.flush_lsn) : this.flush_lsn;
    if (msg.lsn_start < this.#storage.wal_start_lsn || msg.lsn_start > limit_lsn) return refuse("not_held");
    const lsn_end = minLsn(msg.lsn_end, limit_lsn);
    const bytes = this.#storage.readWal(msg.lsn_start, lsn_end);
    return { type: "read_response", term: this.term, status: "ok", lsn_start: msg.lsn_start, lsn_end, bytes };
  }

  #appendResponse(status: AppendStatus): AppendResponse {
    return {
      type: "append_response",
      term: this.term,
      status,
      flush_lsn: this.flush_lsn,
      commit_lsn: this.commit_lsn,
    };
  }

  async #persist(state: SafekeeperState): Promise<void> {
    assert(state.term >= this.#state.term, "a term never goes backwards");
    await this.#storage.persistState(state);
    this.#state = state;
    this.#persisted_commit_lsn = state.commit_lsn;
  }

  /** Waits for messages being handled, then closes the storage. */
  async close(): Promise<void> {
    await this.#chain;
    await this.#storage.close();
  }
}
