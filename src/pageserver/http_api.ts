/**
 * The pageserver's management API: HTTP/1.1 with JSON bodies on the protocol's port (a connection whose first bytes
 * are an HTTP method). One request per connection. Routes are listed in `docs/pageserver_protocol.md`.
 *
 * @module
 */
import { formatLsn, parseLsn } from "../lsn.ts";
import { type AdminRequest, parseAdminRequest, runAdmin } from "../branch_admin.ts";
import type { TenantConfig } from "./tenant_config.ts";
import { parseDuration } from "../duration.ts";
import { PageserverError } from "./pageserver_error.ts";
import type { PageserverMetrics } from "./metrics.ts";
import type { TenantRegistry } from "./tenant_registry.ts";

/** The most bytes of request head and body read. */
const MAX_REQUEST_BYTES = 1024 * 1024;
/** First bytes that mark an HTTP request. */
export const HTTP_METHODS = ["GET ", "POST", "PUT ", "DELE", "HEAD"];

/** What the API needs from its server. */
export type HttpContext = { registry: TenantRegistry; metrics: PageserverMetrics; connections: () => number };

type HttpRequest = { method: string; path: string; query: URLSearchParams; body: unknown };
type HttpAnswer = { status: number; body: unknown; type?: string };

/** Reads one request from `conn` (after its first bytes `first`), answers it and closes the connection. */
export async function serveHttp(conn: Deno.Conn, first: Uint8Array, ctx: HttpContext): Promise<void> {
  try {
    const request = await readRequest(conn, first);
    const answer = request === undefined
      ? { status: 400, body: { error: "malformed HTTP request" } }
      : await route(request, ctx).catch(errorAnswer);
    const text = answer.type === undefined ? JSON.stringify(answer.body) + "\n" : String(answer.body);
    const body = new TextEncoder().encode(text);
    const head = `HTTP/1.1 ${answer.status} ${answer.status < 300 ? "OK" : "Error"}\r\n` +
      `Content-Type: ${
        answer.type ?? "application/json"
      }\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    const bytes = new Uint8Array([...new TextEncoder().encode(head), ...body]);
    for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
  } catch {
    // The client left before its answer: nothing to tell it.
  } finally {
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }
}

async function readRequest(conn: Deno.Conn, first: Uint8Array): Promise<HttpRequest | undefined> {
  let bytes = first;
  const buffer = new Uint8Array(64 * 1024);
  const headEnd = () => {
    for (let i = 3; i < bytes.length; i++) {
      if (bytes[i - 3] === 13 && bytes[i - 2] === 10 && bytes[i - 1] === 13 && bytes[i] === 10) return i + 1;
    }
    return -1;
  };
  let end = headEnd();
  while (end < 0 || bytes.length < end + contentLength(bytes, end)) {
    if (bytes.length > MAX_REQUEST_BYTES) return undefined;
    const n = await conn.read(buffer);
    if (n === null) return undefined;
    bytes = new Uint8Array([...bytes, ...buffer.subarray(0, n)]);
    end = headEnd();
  }
  const head = new TextDecoder().decode(bytes.subarray(0, end));
  const line = /^([A-Z]+) (\S+) HTTP\/1\.[01]\r\n/.exec(head);
  if (line === null) return undefined;
  const url = new URL(line[2], "http://pageserver");
  const text = new TextDecoder().decode(bytes.subarray(end, end + contentLength(bytes, end)));
  let body: unknown = undefined;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      return undefined;
    }
  }
  return { method: line[1], path: url.pathname, query: url.searchParams, body };
}

function contentLength(bytes: Uint8Array, head_end: number): number {
  if (head_end < 0) return 0;
  const head = new TextDecoder().decode(bytes.subarray(0, head_end));
  const match = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  return match === null ? 0 : Math.min(Number(match[1]), MAX_REQUEST_BYTES);
}

async function route(r: HttpRequest, ctx: HttpContext): Promise<HttpAnswer> {
  const parts = r.path.split("/").filter((p) => p.length > 0).map(decodeURIComponent);
  const key = `${r.method} /${parts.map((p, i) => (i === 2 || i === 4) ? "*" : p).join("/")}`;
  const tenantName = parts[2];
  switch (key) {
    case "GET /status":
      return { status: 200, body: await status(ctx) };
    case "GET /metrics":
      return {
        status: 200,
        type: "text/plain; version=0.0.4",
        body: await ctx.metrics.text(await ctx.registry.list(), ctx.connections()),
      };
    case "GET /v1/tenants":
      return {
        status: 200,
        body: (await ctx.registry.list()).map((t) => ({ name: t.name, tenant_id: t.file.timeline_id })),
      };
    case "POST /v1/tenants": {
      const name = (r.body as { name?: unknown })?.name;
      if (typeof name !== "string") return { status: 400, body: { error: `the body must be {"name": "..."}` } };
      if (ctx.registry.has(name)) return { status: 409, body: { error: `tenant "${name}" exists already` } };
      const tenant = await ctx.registry.get(name, true);
      return { status: 201, body: { name: tenant.name, tenant_id: tenant.file.timeline_id } };
    }
    case "DELETE /v1/tenants/*":
      await ctx.registry.delete(tenantName);
      return { status: 200, body: { deleted: tenantName } };
    case "GET /v1/tenants/*/branches":
      return await admin(ctx, tenantName, { op: "status" });
    case "POST /v1/tenants/*/branches": {
      const b = (r.body ?? {}) as Record<string, unknown>;
      return await admin(ctx, tenantName, { op: "create", name: b.name, from: b.from, at: b.at }, 201);
    }
    case "DELETE /v1/tenants/*/branches/*":
      return await admin(ctx, tenantName, {
        op: "delete",
        name: parts[4],
        recursive: r.query.get("recursive") === "true",
      });
    case "POST /v1/tenants/*/branches/*/reset":
      return await admin(ctx, tenantName, { op: "reset", name: parts[4] });
    case "POST /v1/tenants/*/branches/*/protect":
      return await admin(ctx, tenantName, {
        op: "protect",
        name: parts[4],
        on: (r.body as { on?: unknown })?.on ?? true,
      });
    case "GET /v1/tenants/*/config":
      return { status: 200, body: configBody((await ctx.registry.get(tenantName)).config) };
    case "PUT /v1/tenants/*/config":
      return { status: 200, body: configBody(await (await ctx.registry.get(tenantName)).configure(r.body)) };
    case "POST /v1/tenants/*/gc": {
      const runs = await (await ctx.registry.get(tenantName)).collectGarbage(true);
      return {
        status: 200,
        body: runs.map((run) => ({
          ...run,
          horizon_lsn: formatLsn(run.horizon_lsn),
          wal_needed_lsn: formatLsn(run.wal_needed_lsn),
        })),
      };
    }
    case "POST /v1/tenants/*/branches/*/lease": {
      const body = (r.body ?? {}) as { lsn?: unknown; ttl?: unknown };
      const ttl_ms = typeof body.ttl === "string" ? parseDuration(body.ttl) : undefined;
      if (typeof body.lsn !== "string" || ttl_ms === undefined) {
        return { status: 400, body: { error: `the body must be {"lsn": "X/Y", "ttl": "10m"}` } };
      }
      const tenant = await ctx.registry.get(tenantName);
      const { expires_at } = await tenant.lease(parts[4], parseLsn(body.lsn), ttl_ms);
      return { status: 200, body: { lsn: body.lsn, expires_at: expires_at.toISOString() } };
    }
    case "POST /v1/tenants/*/admin":
      return await admin(ctx, tenantName, r.body);
  }
  return { status: 404, body: { error: `no route ${r.method} ${r.path}: see docs/pageserver_protocol.md` } };
}

function configBody(config: TenantConfig): unknown {
  return { pitr_ms: config.pitr_ms };
}

async function admin(ctx: HttpContext, tenant_name: string, body: unknown, created = 200): Promise<HttpAnswer> {
  const request: AdminRequest = parseAdminRequest(JSON.parse(JSON.stringify(body ?? null)));
  const rows = await runAdmin(await ctx.registry.get(tenant_name), request);
  return { status: request.op === "create" ? created : 200, body: { ok: true, value: rows } };
}

async function status(ctx: HttpContext): Promise<unknown> {
  const tenants = [];
  for (const t of await ctx.registry.list()) {
    tenants.push({
      name: t.name,
      tenant_id: t.file.timeline_id,
      branches: await Promise.all(
        t.branches().map(async (b) => {
          const r = await t.storageReport(b.timeline_id);
          const lsn = (v: bigint | undefined) => v === undefined ? undefined : formatLsn(v);
          return {
            name: b.name,
            timeline_id: b.timeline_id,
            parent: b.parent,
            storage: {
              ...r,
              disk_consistent_lsn: lsn(r.disk_consistent_lsn),
              gc_cutoff_lsn: lsn(r.gc_cutoff_lsn),
              remote_consistent_lsn: lsn(r.remote_consistent_lsn),
            },
          };
        }),
      ),
      timelines: t.owners().map((o) => {
        const storage = t.timelines.opened(o.timeline_id);
        return {
          timeline_id: o.timeline_id,
          term: Number(o.term),
          commit_lsn: formatLsn(o.commit_lsn),
          ingested_lsn: formatLsn(o.ingested_lsn),
          disk_consistent_lsn: storage === undefined ? undefined : formatLsn(storage.pages.disk_consistent_lsn),
          layers: storage?.pages.layer_count,
        };
      }),
    });
  }
  return { connections: ctx.connections(), pages_served: ctx.metrics.pages, tenants };
}

function errorAnswer(error: unknown): HttpAnswer {
  const e = error as Error;
  const status = error instanceof PageserverError
    ? (error.code === "unknown_tenant"
      ? 404
      : error.code === "bad_request"
      ? 400
      : error.code === "not_yet_ingested"
      ? 503
      : 409)
    : e?.name === "BranchNotFoundError"
    ? 404
    : ["AdminRequestError", "BranchRuleError", "BranchExistsError", "LsnOutOfRangeError", "LsnFormatError"].includes(
        e?.name,
      )
    ? 400
    : 500;
  return { status, body: { ok: false, error: { name: e?.name ?? "Error", message: String(e?.message ?? error) } } };
}
