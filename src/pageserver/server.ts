/**
 * The pageserver role over TCP: one port serves the pageserver protocol (`docs/pageserver_protocol.md`) and, for
 * connections that start with an HTTP method, the management API (`http_api.ts`). Tenants live under its data
 * directory; committed page versions are persisted in the background.
 *
 * @module
 */
import type { Logger } from "../logger.ts";
import type { RemoteStorage } from "../remote_storage/mod.ts";
import { servePageProtocol } from "./connection.ts";
import { HTTP_METHODS, serveHttp } from "./http_api.ts";
import { PageserverMetrics } from "./metrics.ts";
import { TenantRegistry } from "./tenant_registry.ts";
import type { Tenant } from "./tenant.ts";

/** Evicts the least recently used idle timelines (across tenants) until the layers on disk fit `budget_bytes`. */
async function enforceDiskBudget(tenants: Tenant[], budget_bytes: number, idle_ms: number): Promise<void> {
  let total = 0;
  for (const t of tenants) total += await t.localLayerBytes();
  if (total <= budget_bytes) return;
  const candidates = tenants.flatMap((tenant) => tenant.idleTimelines(idle_ms).map((t) => ({ tenant, ...t })))
    .sort((a, b) => a.accessed_ms - b.accessed_ms);
  for (const c of candidates) {
    if (total <= budget_bytes) return;
    total -= await c.tenant.evict(c.timeline_id);
  }
}

/** Options of {@linkcode PageserverServer.start}. */
export type PageserverOptions = {
  /** The data directory (created if missing, locked while served). */
  dir: string;
  hostname: string;
  /** 0 picks a free port (read it from {@linkcode PageserverServer.port}). */
  port: number;
  log?: Logger;
  /** The most open connections; more are closed at once. Default 1024. */
  max_connections?: number;
  /** Committed versions in memory are persisted (and new layers uploaded) this often (ms). Default 1000. */
  persist_interval_ms?: number;
  /**
   * With `remote`: the most bytes of layer files kept on the local disk; above it, the layers of timelines idle for
   * `evict_idle_ms` are deleted (they stay in the lake and come back when used). Default: no limit.
   */
  cache_disk_bytes?: number;
  /** How long a timeline goes unused before eviction may take its layers (ms). Default 30,000. */
  evict_idle_ms?: number;
  /** How often each tenant's timelines are looked at for GC (ms). Default 10,000. */
  gc_interval_ms?: number;
  /** The lake (`--remote`): layers and indexes are uploaded to it, and tenants missing here downloaded from it. */
  remote?: RemoteStorage;
};

/** A running pageserver. */
export class PageserverServer {
  readonly #listener: Deno.TcpListener;
  readonly #registry: TenantRegistry;
  readonly #log: Logger;
  readonly #connections = new Map<Deno.Conn, Promise<void>>();
  readonly #metrics = new PageserverMetrics();
  readonly #accepting: Promise<void>;
  readonly #timer: ReturnType<typeof setInterval>;
  readonly #gc_timer: ReturnType<typeof setInterval>;
  readonly #max_connections: number;
  #closed = false;
  #evicting: Promise<void> | undefined;
  readonly #opts: PageserverOptions;

  private constructor(listener: Deno.TcpListener, registry: TenantRegistry, opts: PageserverOptions, log: Logger) {
    this.#listener = listener;
    this.#registry = registry;
    this.#log = log;
    this.#max_connections = opts.max_connections ?? 1024;
    this.#opts = opts;
    this.#accepting = this.#accept();
    this.#timer = setInterval(() => {
      this.#registry.list().then((tenants) => {
        tenants.forEach((t) => {
          t.persistIdle();
          t.uploadSoon();
        });
        this.#evictSoon(tenants);
      }).catch(() => {});
    }, opts.persist_interval_ms ?? 1000);
    this.#gc_timer = setInterval(() => {
      this.#registry.list().then((tenants) =>
        tenants.forEach((t) =>
          t.collectGarbage().catch((error) => log("gc_failed", { tenant: t.name, error: String(error) }))
        )
      ).catch(() => {});
    }, opts.gc_interval_ms ?? 10_000);
  }

  /** Locks and opens `dir`, then listens. */
  static async start(opts: PageserverOptions): Promise<PageserverServer> {
    const log = opts.log ?? (() => {});
    const registry = await TenantRegistry.open(opts.dir, log, opts.remote);
    let listener: Deno.TcpListener;
    try {
      listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    } catch (error) {
      await registry.close();
      throw error;
    }
    return new PageserverServer(listener, registry, opts, log);
  }

  /** Starts evicting idle timelines' layers while the local disk holds more than its budget, unless that runs. */
  #evictSoon(tenants: Tenant[]): void {
    const budget_bytes = this.#opts.cache_disk_bytes;
    if (budget_bytes === undefined || this.#opts.remote === undefined || this.#evicting !== undefined) return;
    this.#evicting = enforceDiskBudget(tenants, budget_bytes, this.#opts.evict_idle_ms ?? 30_000)
      .catch((error) => this.#log("eviction_failed", { error: String(error) }))
      .finally(() => this.#evicting = undefined);
  }

  /** The port listened on. */
  get port(): number {
    return this.#listener.addr.port;
  }

  async #accept(): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed) return;
        this.#log("accept_failed", { error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (this.#connections.size >= this.#max_connections) {
        conn.close();
        continue;
      }
      conn.setNoDelay(true);
      this.#connections.set(conn, this.#serve(conn).finally(() => this.#connections.delete(conn)));
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const first = new Uint8Array(64 * 1024);
    const n = await conn.read(first).catch(() => null);
    if (n === null) return void (() => conn.close())();
    const head = new TextDecoder().decode(first.subarray(0, Math.min(n, 4)));
    const bytes = first.slice(0, n);
    if (HTTP_METHODS.some((m) => head === m)) {
      const ctx = { registry: this.#registry, metrics: this.#metrics, connections: () => this.#connections.size };
      return await serveHttp(conn, bytes, ctx);
    }
    await servePageProtocol(conn, bytes, { registry: this.#registry, log: this.#log, metrics: this.#metrics });
  }

  /** Stops listening, closes every connection, persists what is committed and releases the directory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearInterval(this.#gc_timer);
    await this.#evicting;
    this.#listener.close();
    await this.#accepting;
    for (const conn of this.#connections.keys()) {
      try {
        conn.close();
      } catch {
        // Closed by its own handler meanwhile.
      }
    }
    await Promise.allSettled(this.#connections.values());
    await this.#registry.close();
  }
}
