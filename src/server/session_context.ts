/**
 * What a client session needs from the server that accepted it.
 *
 * @module
 */
import type { AdminRequest } from "../branch_admin.ts";
import type { BackendState } from "./backend_handover.ts";
import type { BackendSignal, SignalRefused } from "./backend_signals.ts";
import type { ScramSecret } from "./scram.ts";
import type { ServerSession } from "./session.ts";
import type { SharedBackend } from "./shared_backend.ts";

/** What a session needs from its server. */
export type SessionContext = {
  /** The compute serving these startup parameters (branch selection), and its release. */
  attach(params: Record<string, string>): Promise<{ compute: SharedBackend; release: () => Promise<void> }>;
  /** Per compute: who used its backend last, whether that may have left session state, and whose settings apply. */
  backends: WeakMap<SharedBackend, BackendState>;
  /** Postgres crashed under `session`'s statement: the other sessions of `compute` lost their backend too. */
  engineFailed(compute: SharedBackend, session: ServerSession): void;
  /** A CancelRequest arrived: cancel the running statement of the session with this id, when the secret matches. */
  cancel(pid: number, secret: number): void;
  /**
   * `pg_cancel_backend` or `pg_terminate_backend` of session `pid` by session `from`: whether there is such a
   * session; an error (42501) when `from` may not signal it.
   */
  signal(signal: BackendSignal, from: ServerSession): boolean | SignalRefused;
  /** A client must be through startup and authentication within this (ms). */
  authentication_timeout_ms: number;
  /** Largest message accepted (bytes). */
  max_message_bytes: number;
  /** A session idle inside a transaction longer than this is rolled back and closed (ms). */
  idle_in_transaction_ms: number;
  /** Structured log line. */
  log(event: string, fields: Record<string, unknown>): void;
  /** When set, clients authenticate with SCRAM-SHA-256 against this secret; else trust. */
  password?: Promise<ScramSecret>;
  /** The server's metrics in Prometheus's text format (`GET /metrics`). */
  metrics?: () => Promise<string>;
  /** The server's state as JSON (`GET /status`). */
  status?: () => Promise<unknown>;
  /** A statement took `elapsed_ms`, from its messages to the reply (for `/metrics`). */
  statementDone?: (elapsed_ms: number) => void;
  /** Runs an administration request (`tarn branch` on a running server); undefined: none is served. */
  admin?: (request: AdminRequest) => Promise<unknown>;
};
