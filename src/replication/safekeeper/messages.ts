/**
 * The messages between a proposer (the compute) and a safekeeper, as plain objects. The byte layout is in
 * `codec.ts` and `docs/safekeeper_protocol.md`.
 *
 * @module
 */
import type { Lsn } from "../../lsn.ts";
import type { Term, TermHistory } from "./term_history.ts";

/** Asks a safekeeper for its term and positions; a proposer sends it first to pick its term. */
export interface StatusRequest {
  /** Discriminant. */
  readonly type: "status_request";
}

/** A safekeeper's term and positions. */
export interface StatusResponse {
  /** Discriminant. */
  readonly type: "status_response";
  /** The highest term it has seen. */
  readonly term: Term;
  /** The end of its durable WAL. */
  readonly flush_lsn: Lsn;
  /** The commit LSN it last heard of (advisory). */
  readonly commit_lsn: Lsn;
  /** The term of the proposer that wrote its last WAL byte (0 when it holds none). */
  readonly last_log_term: Term;
  /** The first LSN it holds. */
  readonly wal_start_lsn: Lsn;
}

/** A proposer asks for a vote in `term`. */
export interface VoteRequest {
  /** Discriminant. */
  readonly type: "vote_request";
  /** The term asked for, >= 1. */
  readonly term: Term;
  /** Unique per proposer instance (random 64 bits), never 0: a repeated request from the same one is re-granted. */
  readonly proposer_id: bigint;
}

/** A safekeeper's answer to a vote request, with what the proposer needs to pick the most advanced log. */
export interface VoteResponse {
  /** Discriminant. */
  readonly type: "vote_response";
  /** The safekeeper's term: the one asked for when granted, a higher one when not. */
  readonly term: Term;
  /** Whether it votes for the proposer in `term`. */
  readonly granted: boolean;
  /** The end of its durable WAL. */
  readonly flush_lsn: Lsn;
  /** The commit LSN it last heard of. */
  readonly commit_lsn: Lsn;
  /** The last term of `term_history` (0 when empty). */
  readonly last_log_term: Term;
  /** The history of its WAL up to `flush_lsn`. */
  readonly term_history: TermHistory;
}

/** The winner of `term` announces the log it continues: safekeepers cut what diverges from it. */
export interface Elected {
  /** Discriminant. */
  readonly type: "elected";
  /** The term won. */
  readonly term: Term;
  /** Where the WAL written in `term` starts: the end of the most advanced log of the vote. */
  readonly term_start_lsn: Lsn;
  /** The history of the proposer's log; its last switch is (`term`, `term_start_lsn`). */
  readonly term_history: TermHistory;
}

/** WAL bytes from the proposer, with its commit LSN. An empty append is a heartbeat. */
export interface AppendRequest {
  /** Discriminant. */
  readonly type: "append_request";
  /** The proposer's term. */
  readonly term: Term;
  /** The LSN of the first byte. */
  readonly begin_lsn: Lsn;
  /** The proposer's commit LSN. */
  readonly commit_lsn: Lsn;
  /** The WAL bytes of [begin_lsn, begin_lsn + length). */
  readonly bytes: Uint8Array;
}

/**
 * How an append (or an elected message) fared: `ok`; `term_rejected` (the safekeeper has a higher term, in
 * `term`); `not_elected` (no elected message of this term received yet: send it); `gap` (the append starts past
 * `flush_lsn`: resend from there).
 */
export type AppendStatus = "ok" | "term_rejected" | "not_elected" | "gap";

/** A safekeeper's answer to an append or an elected message, sent after its WAL is durable up to `flush_lsn`. */
export interface AppendResponse {
  /** Discriminant. */
  readonly type: "append_response";
  /** The safekeeper's term. */
  readonly term: Term;
  /** What happened. */
  readonly status: AppendStatus;
  /** The end of its durable WAL. */
  readonly flush_lsn: Lsn;
  /** The commit LSN it holds. */
  readonly commit_lsn: Lsn;
}

/**
 * Asks for the WAL of [lsn_start, lsn_end). With `term` > 0 the safekeeper answers only while in that term (so the
 * bytes belong to that proposer's log), up to its flush LSN; with `term` 0 it answers up to its commit LSN.
 */
export interface ReadRequest {
  /** Discriminant. */
  readonly type: "read_request";
  /** The reader's term, or 0 for a reader that wants committed WAL only. */
  readonly term: Term;
  /** The first LSN wanted. */
  readonly lsn_start: Lsn;
  /** The end of the range wanted. */
  readonly lsn_end: Lsn;
}

/** `ok`, or `term_mismatch` (the safekeeper is in another term), or `not_held` (it lacks the start of the range). */
export type ReadStatus = "ok" | "term_mismatch" | "not_held";

/** WAL bytes read: [lsn_start, lsn_end) may end before the range asked for. */
export interface ReadResponse {
  /** Discriminant. */
  readonly type: "read_response";
  /** The safekeeper's term. */
  readonly term: Term;
  /** What happened; anything but `ok` carries no bytes. */
  readonly status: ReadStatus;
  /** The LSN of the first byte. */
  readonly lsn_start: Lsn;
  /** The end of the bytes. */
  readonly lsn_end: Lsn;
  /** The WAL bytes. */
  readonly bytes: Uint8Array;
}

/**
 * The first frame a client sends on a connection: it binds the connection to one timeline of one tenant. Every
 * later frame on that connection is a {@linkcode ProposerMessage} for that timeline.
 */
export interface Hello {
  /** Discriminant. */
  readonly type: "hello";
  /** The tenant (one PostgreSQL cluster): matches {@linkcode ID_PATTERN}. */
  readonly tenant_id: string;
  /** The timeline (one branch's history): matches {@linkcode ID_PATTERN}. */
  readonly timeline_id: string;
  /** PostgreSQL's WAL segment size in bytes: a power of two from {@linkcode MIN_SEGMENT_SIZE} to {@linkcode MAX_SEGMENT_SIZE}. */
  readonly segment_size: number;
}

/** A safekeeper's answer to {@linkcode Hello}: who it is and where the timeline stands. */
export interface HelloResponse {
  /** Discriminant. */
  readonly type: "hello_response";
  /** The safekeeper's node id (its `--id`), a u32. */
  readonly node_id: number;
  /** The highest term it has seen for the timeline. */
  readonly term: Term;
  /** The end of its durable WAL. */
  readonly flush_lsn: Lsn;
  /** The commit LSN it last heard of (advisory). */
  readonly commit_lsn: Lsn;
}

/** The connection handshake: {@linkcode Hello} and its answer. */
export type HandshakeMessage = Hello | HelloResponse;

/** What a proposer (or a reader) sends to a safekeeper. */
export type ProposerMessage = StatusRequest | VoteRequest | Elected | AppendRequest | ReadRequest;

/** What a safekeeper answers. */
export type SafekeeperMessage = StatusResponse | VoteResponse | AppendResponse | ReadResponse;

/** Any message of the protocol. */
export type Message = HandshakeMessage | ProposerMessage | SafekeeperMessage;

/** Tenant and timeline ids: 1 to 64 letters, digits, `_` or `-` (safe as a directory name). */
export const ID_PATTERN: RegExp = /^[A-Za-z0-9_-]{1,64}$/;

/** The smallest WAL segment size a {@linkcode Hello} may name (PostgreSQL's own lower bound). */
export const MIN_SEGMENT_SIZE = 1024 * 1024;

/** The largest WAL segment size a {@linkcode Hello} may name (PostgreSQL's own upper bound). */
export const MAX_SEGMENT_SIZE = 1024 * 1024 * 1024;

/** Whether `size` is a WAL segment size a {@linkcode Hello} may name: a power of two within the bounds. */
export function isSegmentSize(size: number): boolean {
  return Number.isInteger(size) && size >= MIN_SEGMENT_SIZE && size <= MAX_SEGMENT_SIZE && (size & (size - 1)) === 0;
}

/** The most WAL bytes one append or read carries. */
export const MAX_WAL_BYTES_PER_MESSAGE = 8 * 1024 * 1024;

/** The most switches a term history may hold on the wire. */
export const MAX_TERM_HISTORY = 65536;

/** The largest frame body the codec writes or reads. */
export const MAX_FRAME_BODY_BYTES = MAX_WAL_BYTES_PER_MESSAGE + 1024;
