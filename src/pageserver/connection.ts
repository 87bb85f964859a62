/**
 * One protocol connection to the pageserver: a hello binds it to a tenant, for good (a second hello is refused);
 * then requests are answered in order (a client pipelines as many as it likes; awaiting each write is the
 * back-pressure). The connection remembers the term it attached each timeline with: a put, WAL piece or persist is
 * taken only on the connection that attached with its term. Puts and WAL pieces are answered only when they fail.
 * A malformed frame gets an error reply with request id 0, then the connection closes; a refused request gets an
 * error reply naming it, and the connection goes on.
 *
 * @module
 */
import type { Logger } from "../logger.ts";
import { FrameSplitter, PageProtocolError } from "./frames.ts";
import { decodeMessage, encodeMessage, isRequest, type Reply, type Request } from "./messages.ts";
import { PageserverError } from "./pageserver_error.ts";
import type { PageserverMetrics } from "./metrics.ts";
import type { Tenant } from "./tenant.ts";
import type { TenantRegistry } from "./tenant_registry.ts";

/** What a connection needs from its server. */
export type ConnectionContext = { registry: TenantRegistry; log: Logger; metrics: PageserverMetrics };

const READ_BUFFER_BYTES = 256 * 1024;

/** Serves the protocol on `conn` after its first bytes `first`; resolves when the connection ends. */
export async function servePageProtocol(
  conn: Deno.Conn,
  first: Uint8Array,
  ctx: ConnectionContext,
): Promise<void> {
  const splitter = new FrameSplitter();
  const buffer = new Uint8Array(READ_BUFFER_BYTES);
  const peer = conn.remoteAddr.transport === "tcp" ? `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}` : "?";
  let tenant: Tenant | undefined;
  /** Timeline id to the term this connection attached it with. */
  const attached = new Map<string, bigint>();
  const write = async (reply: Reply) => {
    const bytes = encodeMessage(reply);
    for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
  };
  try {
    for (let chunk: Uint8Array | null = first; chunk !== null;) {
      for (const frame of splitter.push(chunk)) {
        const message = decodeMessage(frame);
        if (!isRequest(message)) throw new PageProtocolError(`a ${message.type} frame from a client`);
        if (message.type === "hello" && tenant !== undefined) {
          // A connection's attachments are its tenant's timelines: it stays bound to that tenant.
          const error = new PageserverError(
            "bad_request",
            `a second hello on one connection (for tenant "${message.tenant}"): it stays bound to tenant ` +
              `"${tenant.name}"; open another connection for another tenant`,
          );
          await write(errorReply(message.id, error));
          continue;
        }
        if (message.type === "hello") {
          tenant = await ctx.registry.get(message.tenant, message.create).catch(async (error) => {
            await write(errorReply(message.id, error));
            return undefined;
          });
          if (tenant !== undefined) {
            await write({
              type: "hello_ok",
              id: message.id,
              tenant_id: tenant.file.timeline_id,
              segment_size: tenant.file.segment_size,
            });
          }
          continue;
        }
        if (tenant === undefined) throw new PageProtocolError(`a ${message.type} request before a successful hello`);
        const reply = await answer(tenant, message, attached, ctx.metrics).catch((error) =>
          errorReply(message.id, error)
        );
        if (reply !== undefined) await write(reply);
      }
      const n = await conn.read(buffer);
      chunk = n === null ? null : buffer.subarray(0, n);
    }
  } catch (error) {
    if (error instanceof PageProtocolError) {
      ctx.log("protocol_error", { peer, error: error.message });
      await write({ type: "error", id: 0, code: "bad_request", message: error.message }).catch(() => {});
    } else if (
      !(error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
        error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted)
    ) {
      ctx.log("connection_error", { peer, error: String((error as Error)?.stack ?? error) });
    }
  } finally {
    for (const [timeline_id, term] of attached) tenant?.detach(timeline_id, term);
    try {
      conn.close();
    } catch {
      // Closed already (the server shutting down closed it under the read).
    }
  }
}

async function answer(
  tenant: Tenant,
  m: Exclude<Request, { type: "hello" }>,
  attached: Map<string, bigint>,
  metrics: PageserverMetrics,
): Promise<Reply | undefined> {
  const writer = (timeline_id: string, term: bigint) => ({ term, attached: attached.get(timeline_id) });
  switch (m.type) {
    case "branch_info":
      return { type: "branch_info_ok", id: m.id, info: await tenant.branchInfo(m.branch) };
    case "attach": {
      const term = await tenant.attach(m.timeline_id, m.term, m.wal_end_lsn);
      if (attached.get(m.timeline_id) !== term) {
        const previous = attached.get(m.timeline_id);
        if (previous !== undefined) tenant.detach(m.timeline_id, previous);
        tenant.attached(m.timeline_id, term);
      }
      attached.set(m.timeline_id, term);
      return { type: "attach_ok", id: m.id, term };
    }
    case "get_pages": {
      const started_ms = performance.now();
      const pages = await tenant.getPages(m.timeline_id, m.lsn, m.keys);
      metrics.getPages(m.keys.length, performance.now() - started_ms);
      return { type: "pages", id: m.id, pages };
    }
    case "stat":
      return { type: "stat_ok", id: m.id, meta: await tenant.stat(m.timeline_id, m.lsn, m.path) };
    case "readdir":
      return { type: "readdir_ok", id: m.id, names: await tenant.readdir(m.timeline_id, m.lsn, m.path) };
    case "list_files":
      return { type: "files", id: m.id, ...await tenant.listFiles(m.timeline_id, m.lsn, m.after) };
    case "put":
      await tenant.put(m.timeline_id, writer(m.timeline_id, m.term), m.records);
      return undefined;
    case "wal":
      await tenant.wal(m.timeline_id, writer(m.timeline_id, m.term), m.lsn_start, m.commit_lsn, m.bytes);
      return undefined;
    case "persist":
      return { type: "persisted", id: m.id, ...await tenant.persist(m.timeline_id, writer(m.timeline_id, m.term)) };
    case "read_wal":
      return { type: "wal_bytes", id: m.id, bytes: await tenant.readWal(m.timeline_id, m.lsn_start, m.lsn_end) };
  }
}

function errorReply(id: number, error: unknown): Reply {
  if (error instanceof PageserverError) return { type: "error", id, code: error.code, message: error.message };
  const name = (error as Error)?.name;
  if (name === "BranchNotFoundError") {
    return { type: "error", id, code: "unknown_branch", message: String((error as Error).message) };
  }
  if (name === "LsnOutOfRangeError") {
    return { type: "error", id, code: "lsn_out_of_range", message: String((error as Error).message) };
  }
  return { type: "error", id, code: "internal", message: String((error as Error)?.message ?? error) };
}
