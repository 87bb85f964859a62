/**
 * The Postgres server: accepts TCP connections and serves each with a {@linkcode ServerSession} on the compute of
 * the branch it asks for (`database=<branch>`, or `options=--branch=<branch>`; `postgres` and `template1` are `main`), read only at
 * a past point with `options=--at=<LSN|time>`. A limit on connections; every failure of one connection stays with
 * that connection.
 *
 * @module
 */
import type { AdminRequest } from "../branch_admin.ts";
import type { BranchStats } from "../compute/remote/remote_tenant.ts";
import { ServerMetrics } from "./server_metrics.ts";
import { type BackendSignal, signalRefused } from "./backend_signals.ts";
import { scramSecret } from "./scram.ts";
import { ServerSession } from "./session.ts";
import type { SharedBackend } from "./shared_backend.ts";
import type { BackendState } from "./backend_handover.ts";
import { type BranchAt, READ_ONLY_HEAD } from "../replication/branch_point.ts";
import { ReplicaBackend } from "./replica_backend.ts";
import type { Lsn } from "../lsn.ts";
import assert from "node:assert/strict";
import { errorResponse, ProtocolError } from "./wire.ts";
import type { Logger } from "../logger.ts";

const DEFAULT_IDLE_IN_TRANSACTION_MS = 60_000;

/** Where a branch's compute comes from: the embedded `Tarn`, or an `EngineHost` running it in a Worker. */
export type ComputeSource = {
  /** The compute of `branch` (read only at `at`; at `READ_ONLY_HEAD`, with the LSN it starts at). */
  attachCompute(
    branch: string,
    at?: BranchAt,
  ): Promise<{ compute: SharedBackend; release: () => Promise<void>; lsn?: Lsn }>;
  /** The head of `branch` now; replicas need it. */
  headLsn?(branch: string): Promise<Lsn>;
};

/** A replica of a branch, shared by the sessions on it. */
type ReplicaEntry = { backend: ReplicaBackend; attachments: number; linger?: ReturnType<typeof setTimeout> };

/** How long a replica nobody uses keeps its compute, for the next connection (ms). */
const REPLICA_LINGER_MS = 30_000;

/** How the server runs. */
export type ServerOptions = {
  /** Address to listen on; default 127.0.0.1. */
  hostname?: string;
  /** Port; 0 picks a free one. */
  port: number;
  /** Connections served at once; more get "too many connections". Default 100. */
  max_connections?: number;
  /** A client must be through startup and authentication within this (ms). Default 60 s. */
  authentication_timeout_ms?: number;
  /** Largest message a client may send (bytes). Default 64 MiB. */
  max_message_bytes?: number;
  /** A session idle inside a transaction longer than this is rolled back and closed (ms). Default 60 s. */
  idle_in_transaction_ms?: number;
  /** Structured log: one event at a time. Default: nothing. */
  log?: Logger;
  /** Require this password (SCRAM-SHA-256) from every client; without it, clients are trusted. */
  password?: string;
  /** The branch of the `postgres` database (and of `template1`). Default `main`. */
  default_branch?: string;
  /** Serves `POST /admin` on the same port, from loopback clients only (`tarn branch` on a running server). */
  admin?: (request: AdminRequest) => Promise<unknown>;
  /** A new transaction on a replica sees a state at most this old (ms). Default 1,000. */
  replica_max_lag_ms?: number;
  /** Every session is a replica session (`tarn compute --replica`). */
  replica_only?: boolean;
  /** The branches' counters for `GET /metrics` and `GET /status` (a compute on a pageserver). */
  branch_stats?: () => Promise<BranchStats[]>;
};

/** Whether a startup packet asks for a read replica: `options=--replica`, or a database name ending in `-ro`. */
export function replicaOf(params: Record<string, string>): boolean {
  return /(?:^|\s)--replica(?:\s|$)/.test(params.options ?? "") || (params.database ?? "").endsWith(REPLICA_SUFFIX);
}

const REPLICA_SUFFIX = "-ro";

/** The branch a startup packet asks for. */
export function branchOf(params: Record<string, string>, default_branch = "main"): string {
  const option = /(?:^|\s)--branch=(\S+)/.exec(params.options ?? "");
  if (option !== null) return option[1];
  let database = params.database ?? params.user ?? "postgres";
  if (database.endsWith(REPLICA_SUFFIX)) database = database.slice(0, -REPLICA_SUFFIX.length);
  return database === "postgres" || database === "template1" || database === "" ? default_branch : database;
}

/**
 * The point in time a startup packet asks for (`options=--at=0/17CC6C8` or `--at=2026-11-26T10:00:00Z`): a
 * read-only session on the branch as it was then. Undefined: the branch's head, read-write.
 */
export function atOf(params: Record<string, string>): BranchAt | undefined {
  const option = /(?:^|\s)--at=(\S+)/.exec(params.options ?? "");
  if (option === null) return undefined;
  if (/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(option[1])) return option[1];
  const time = new Date(option[1]);
  if (Number.isNaN(time.getTime())) throw new ProtocolError(`--at=${option[1]} is neither an LSN nor a time`);
  return time;
}

/** A running Postgres server. */
export class TarnServer {
  readonly #listener: Deno.TcpListener;
  readonly #sessions = new Set<ServerSession>();
  readonly #by_id = new Map<number, ServerSession>();
  readonly #running = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  readonly #sweeper: ReturnType<typeof setInterval>;
  #next_id = 1;
  /** Counters for `GET /metrics`. */
  readonly #metrics = new ServerMetrics();
  readonly #started_ms = Date.now();
  readonly #replicas = new Map<string, ReplicaEntry>();

  private constructor(listener: Deno.TcpListener, source: ComputeSource, options: ServerOptions) {
    this.#listener = listener;
    this.#accepting = this.#accept(source, options);
    const timeout_ms = options.idle_in_transaction_ms ?? DEFAULT_IDLE_IN_TRANSACTION_MS;
    // One timer for all sessions instead of one per read: reads on the hot path stay plain.
    this.#sweeper = setInterval(() => {
      const now_ms = performance.now();
      for (const session of this.#sessions) session.checkIdle(now_ms).catch(() => {});
    }, Math.max(10, Math.min(1000, timeout_ms / 4)));
    Deno.unrefTimer(this.#sweeper);
  }

  /** Listens and serves until {@linkcode close}. */
  static start(source: ComputeSource, options: ServerOptions): TarnServer {
    const listener = Deno.listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port });
    return new TarnServer(listener, source, options);
  }

  /** The port it listens on. */
  get port(): number {
    return this.#listener.addr.port;
  }

  async #accept(source: ComputeSource, options: ServerOptions): Promise<void> {
    const log = options.log ?? (() => {});
    const branchStats = () => options.branch_stats?.() ?? Promise.resolve([]);
    const context = {
      attach: (params: Record<string, string>) => {
        const branch = branchOf(params, options.default_branch);
        if (!replicaOf(params) && !options.replica_only) return source.attachCompute(branch, atOf(params));
        if (atOf(params) !== undefined) throw new ProtocolError("--replica and --at do not go together");
        return Promise.resolve(this.#attachReplica(source, branch, options.replica_max_lag_ms ?? 1000, log));
      },
      backends: new WeakMap<SharedBackend, BackendState>(),
      signal: ({ kind, pid }: BackendSignal, from: ServerSession) => {
        const session = this.#by_id.get(pid);
        if (session === undefined) return false;
        const refused = signalRefused(kind, from.role, session.role);
        if (refused !== undefined) return refused;
        log("backend_signal", { session: pid, kind });
        session.cancel();
        if (kind === "terminate") {
          session.terminate("57P01", "terminating connection due to administrator command").catch(() => {});
        }
        return true;
      },
      cancel: (pid: number, secret: number) => {
        const session = this.#by_id.get(pid);
        const sent = session !== undefined && session.secret === secret && session.cancel();
        log("cancel_request", { session: pid, sent });
      },
      max_message_bytes: options.max_message_bytes ?? 64 * 1024 * 1024,
      authentication_timeout_ms: options.authentication_timeout_ms ?? 60_000,
      idle_in_transaction_ms: options.idle_in_transaction_ms ?? DEFAULT_IDLE_IN_TRANSACTION_MS,
      log,
      password: options.password === undefined ? undefined : scramSecret(options.password),
      admin: options.admin,
      metrics: async () => this.#metrics.text(this.#sessions.size, await branchStats()),
      status: async () => ({
        sessions: this.#sessions.size,
        connections_total: this.#metrics.connections_total,
        statements_total: this.#metrics.statements.count,
        started: new Date(this.#started_ms).toISOString(),
        branches: await branchStats(),
      }),
      statementDone: (elapsed_ms: number) => this.#metrics.statements.observe(elapsed_ms),
      engineFailed: (compute: SharedBackend, failed: ServerSession) => {
        this.#metrics.engine_failures_total++;
        for (const session of this.#sessions) {
          if (session === failed || session.compute !== compute) continue;
          this.#metrics.sessions_terminated_total++;
          session.terminate(
            "57P02",
            "terminating connection because the PostgreSQL engine of this branch failed under another session; " +
              "it restarts from storage with every committed transaction: reconnect",
          ).catch(() => {});
        }
      },
    };
    const max_connections = options.max_connections ?? 100;
    for await (const conn of this.#listener) {
      if (this.#sessions.size >= max_connections) {
        log("connection_refused", { reason: "too many connections", max_connections });
        const refusal = errorResponse("FATAL", "53300", `sorry, too many clients already (${max_connections})`);
        conn.write(refusal).catch(() => {}).finally(() => conn.close());
        continue;
      }
      conn.setNoDelay(true);
      this.#metrics.connections_total++;
      const session = new ServerSession(conn, this.#next_id++, context);
      this.#sessions.add(session);
      this.#by_id.set(session.id, session);
      const running = session.run().finally(() => {
        this.#sessions.delete(session);
        this.#by_id.delete(session.id);
        this.#running.delete(running);
      });
      this.#running.add(running);
    }
  }

  /** A session on `branch`'s replica (started with the first), and its release. */
  #attachReplica(source: ComputeSource, branch: string, max_lag_ms: number, log: Logger) {
    const headLsn = source.headLsn?.bind(source);
    if (headLsn === undefined) throw new ProtocolError("this server has no read replicas");
    let entry = this.#replicas.get(branch);
    if (entry === undefined) {
      const backend = new ReplicaBackend({
        attachReadOnly: async () => {
          const attached = await source.attachCompute(branch, READ_ONLY_HEAD);
          assert(attached.lsn !== undefined, "a read-only compute at the head says where it starts");
          return { ...attached, lsn: attached.lsn };
        },
        headLsn: () => headLsn(branch),
        log,
      }, max_lag_ms);
      this.#replicas.set(branch, entry = { backend, attachments: 0 });
    }
    const attached = entry;
    clearTimeout(attached.linger);
    attached.attachments++;
    let released = false;
    const release = () => {
      if (released) return Promise.resolve();
      released = true;
      if (--attached.attachments > 0) return Promise.resolve();
      attached.linger = setTimeout(() => {
        if (attached.attachments > 0 || this.#replicas.get(branch) !== attached) return;
        this.#replicas.delete(branch);
        attached.backend.close().catch(() => {});
      }, REPLICA_LINGER_MS);
      Deno.unrefTimer(attached.linger);
      return Promise.resolve();
    };
    return { compute: attached.backend, release };
  }

  /** Stops accepting, closes every session (rolling back what they left open) and waits for them. */
  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    this.#listener.close();
    await this.#accepting.catch(() => {});
    for (const session of this.#sessions) await session.close();
    await Promise.all(this.#running);
    for (const entry of this.#replicas.values()) {
      clearTimeout(entry.linger);
      await entry.backend.close();
    }
    this.#replicas.clear();
  }
}
