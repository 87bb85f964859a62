/**
 * The safekeeper role over TCP: one port serves the safekeeper protocol (a Hello, then proposer messages, see
 * `docs/safekeeper_protocol.md`) and, for connections starting `GET `, HTTP `/status` and `/metrics`.
 *
 * @module
 */
import type { Logger } from "../../logger.ts";
import { SafekeeperConnection } from "./connection.ts";
import type { ServerSnapshot } from "./http_status.ts";
import { MAX_FRAME_BODY_BYTES } from "./messages.ts";
import { TimelineRegistry } from "./timeline_registry.ts";
import { WalOffloader } from "./wal_offload.ts";
import type { RemoteStorage } from "../../remote_storage/mod.ts";

/** Options of {@linkcode SafekeeperServer.start}. */
export interface SafekeeperServerOptions {
  /** The data directory (created if missing, locked while served): `tenants/<tenant>/timelines/<timeline>/`. */
  dir: string;
  /** The address to listen on. */
  hostname: string;
  /** The TCP port; 0 picks a free one (read it from {@linkcode SafekeeperServer.port}). */
  port: number;
  /** This safekeeper's id, a u32, sent in every HelloResponse and shown by `/status`. */
  node_id: number;
  /** Where events go (nowhere when absent). */
  log?: Logger;
  /** The most open connections; more are closed at once. Default 256. */
  max_connections?: number;
  /** The most timelines served. Default 1024. */
  max_timelines?: number;
  /** The largest frame body accepted. Default {@linkcode MAX_FRAME_BODY_BYTES}. */
  max_frame_body_bytes?: number;
  /** How long a new connection may take to send its Hello or HTTP request. Default 10 s. */
  hello_timeout_ms?: number;
  /** Where sealed committed WAL segments are offloaded (`--remote`); none: WAL stays local only. */
  remote?: RemoteStorage;
}

/** How often sealed segments are looked for and offloaded (ms). */
const OFFLOAD_EVERY_MS = 1000;

/** Delay before accepting again after accept failed (out of file descriptors, say), so the loop does not spin. */
const ACCEPT_RETRY_MS = 100;

/** A running safekeeper. */
export class SafekeeperServer {
  readonly #listener: Deno.TcpListener;
  readonly #registry: TimelineRegistry;
  readonly #log: Logger;
  readonly #node_id: number;
  readonly #max_connections: number;
  /** Each connection and the promise of its end. */
  readonly #connections = new Map<SafekeeperConnection, Promise<void>>();
  readonly #accepting: Promise<void>;
  #closed = false;
  readonly #offloader: WalOffloader | undefined;
  #offload_timer: ReturnType<typeof setInterval> | undefined;
  #offloading: Promise<void> = Promise.resolve();

  private constructor(
    listener: Deno.TcpListener,
    registry: TimelineRegistry,
    opts: SafekeeperServerOptions,
    log: Logger,
  ) {
    this.#listener = listener;
    this.#registry = registry;
    this.#log = log;
    this.#node_id = opts.node_id;
    this.#max_connections = opts.max_connections ?? 256;
    const ctx = {
      node_id: opts.node_id,
      registry,
      log,
      max_frame_body_bytes: opts.max_frame_body_bytes ?? MAX_FRAME_BODY_BYTES,
      hello_timeout_ms: opts.hello_timeout_ms ?? 10_000,
      snapshot: () => this.snapshot(),
    };
    this.#accepting = this.#accept((conn) => new SafekeeperConnection(conn, ctx));
    if (opts.remote !== undefined) {
      const offloader = this.#offloader = new WalOffloader(opts.remote, log);
      let busy = false;
      this.#offload_timer = setInterval(() => {
        if (busy) return;
        busy = true;
        this.#offloading = offloader.tick(registry.served()).catch((error) =>
          log("wal_offload_failed", { error: String(error), retry_ms: OFFLOAD_EVERY_MS })
        ).finally(() => busy = false);
      }, OFFLOAD_EVERY_MS);
    }
  }

  /** Locks and opens `dir` (every timeline in it), then listens. */
  static async start(opts: SafekeeperServerOptions): Promise<SafekeeperServer> {
    if (!Number.isInteger(opts.node_id) || opts.node_id < 0 || opts.node_id >= 2 ** 32) {
      throw new RangeError(`node_id ${opts.node_id} must be an integer from 0 to 4294967295`);
    }
    const log = opts.log ?? (() => {});
    const registry = await TimelineRegistry.open({ dir: opts.dir, log, max_timelines: opts.max_timelines ?? 1024 });
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    } catch (error) {
      await registry.close();
      throw error;
    }
    return new SafekeeperServer(listener, registry, opts, log);
  }

  /** The port listened on. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** What `/status` and `/metrics` show, now. */
  snapshot(): ServerSnapshot {
    return {
      node_id: this.#node_id,
      connections: this.#connections.size,
      timelines: this.#registry.timelines().map((t) => ({
        ...t,
        offloaded_lsn: this.#offloader?.uploadedLsn(t.tenant_id, t.timeline_id),
      })),
      failed: this.#registry.failed(),
    };
  }

  async #accept(connect: (conn: Deno.TcpConn) => SafekeeperConnection): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        this.#log("accept_failed", { error: String(error), retry_ms: ACCEPT_RETRY_MS });
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      if (this.#connections.size >= this.#max_connections) {
        const peer = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
        this.#log("connection_refused", { peer, reason: `${this.#max_connections} connections open already` });
        conn.close();
        continue;
      }
      conn.setNoDelay(true);
      const connection = connect(conn);
      this.#connections.set(connection, connection.serve().finally(() => this.#connections.delete(connection)));
    }
  }

  /** Stops listening, closes every connection, waits for the messages being handled, and closes the storage. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#offload_timer);
    await this.#offloading;
    this.#listener.close();
    await this.#accepting;
    for (const connection of this.#connections.keys()) connection.close();
    await Promise.all(this.#connections.values());
    // No more WAL comes in: a clean stop leaves every committed byte in the lake, the unsealed segment included.
    await this.#offloader?.uploadPartials(this.#registry.served()).catch((error) =>
      this.#log("wal_offload_failed", { error: String(error), at: "stop" })
    );
    await this.#registry.close();
  }
}
