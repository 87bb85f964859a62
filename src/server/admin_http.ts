/**
 * Administration over HTTP on the PostgreSQL port: a connection whose first bytes are `POST` or `GET ` (which no
 * PostgreSQL startup packet can begin with) is one HTTP/1.1 request, answered and closed. Only clients on the
 * loopback interface are served: administration has no authentication of its own.
 *
 * @module
 */
import { type AdminRequest, parseAdminRequest } from "../branch_admin.ts";
import { concatBytes } from "./wire.ts";

const MAX_HEAD_BYTES = 8 * 1024;
const MAX_BODY_BYTES = 64 * 1024;
const READ_LIMIT = 64;

/** Whether a connection's first four bytes are those of an HTTP request (`GET ` or `POST`). */
export function isHttpRequest(head: Uint8Array): boolean {
  const text = new TextDecoder().decode(head.subarray(0, 4));
  return text === "POST" || text === "GET ";
}

/** What the HTTP requests reach: administration, metrics and status; each undefined when not served. */
export type AdminHandlers = {
  admin?: (request: AdminRequest) => Promise<unknown>;
  metrics?: () => Promise<string>;
  status?: () => Promise<unknown>;
};

/**
 * Serves one HTTP request: `POST /admin` with an {@linkcode AdminRequest} as JSON, `GET /metrics` (Prometheus) or
 * `GET /status` (JSON).
 */
export async function serveAdminHttp(conn: Deno.Conn, received: Uint8Array, handlers: AdminHandlers): Promise<void> {
  const reply = await answer(conn, received, handlers);
  const text = typeof reply.body === "string";
  const body = new TextEncoder().encode(text ? reply.body as string : JSON.stringify(reply.body));
  const type = text ? "text/plain; version=0.0.4" : "application/json";
  const head = `HTTP/1.1 ${reply.status}\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\n` +
    `Connection: close\r\n\r\n`;
  const bytes = concatBytes([new TextEncoder().encode(head), body]);
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

type Reply = { status: string; body: unknown };

async function answer(conn: Deno.Conn, received: Uint8Array, handlers: AdminHandlers): Promise<Reply> {
  const { admin, metrics, status } = handlers;
  const peer = (conn.remoteAddr as Deno.NetAddr).hostname;
  if (peer !== "127.0.0.1" && peer !== "::1") {
    return failure("403 Forbidden", "administration is served on loopback only");
  }
  const request = await readRequest(conn, received);
  if (typeof request === "string") return failure("400 Bad Request", request);
  if (request.method === "GET" && request.path === "/metrics" && metrics !== undefined) {
    return { status: "200 OK", body: await metrics() };
  }
  if (request.method === "GET" && request.path === "/status" && status !== undefined) {
    return { status: "200 OK", body: await status() };
  }
  if (request.method !== "POST" || request.path !== "/admin") {
    return failure("404 Not Found", "use POST /admin, GET /metrics or GET /status");
  }
  if (admin === undefined) return failure("503 Service Unavailable", "this server has no administration");
  try {
    return { status: "200 OK", body: { ok: true, value: await admin(parseAdminRequest(JSON.parse(request.body))) } };
  } catch (error) {
    const e = error as Error;
    return { status: "400 Bad Request", body: { ok: false, error: { name: e.name, message: e.message } } };
  }
}

function failure(status: string, message: string): Reply {
  return { status, body: { ok: false, error: { name: "HttpError", message } } };
}

/** The request line and body, or what is wrong with them. */
async function readRequest(conn: Deno.Conn, received: Uint8Array) {
  let bytes = received;
  const chunk = new Uint8Array(16 * 1024);
  for (let reads = 0; headEnd(bytes) < 0; reads++) {
    if (bytes.length > MAX_HEAD_BYTES || reads > READ_LIMIT) return "request head too large";
    const n = await conn.read(chunk);
    if (n === null) return "request ended early";
    bytes = concatBytes([bytes, chunk.subarray(0, n)]);
  }
  const head_end = headEnd(bytes);
  const [request_line, ...headers] = new TextDecoder().decode(bytes.subarray(0, head_end)).split("\r\n");
  const [method, path] = request_line.split(" ");
  const length_header = headers.find((h) => /^content-length:/i.test(h));
  const length = length_header === undefined ? 0 : Number(length_header.split(":")[1].trim());
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_BODY_BYTES) return "bad Content-Length";
  let body = bytes.subarray(head_end + 4);
  for (let reads = 0; body.length < length; reads++) {
    if (reads > READ_LIMIT) return "request body too slow";
    const n = await conn.read(chunk);
    if (n === null) return "request body ended early";
    body = concatBytes([body, chunk.subarray(0, n)]);
  }
  return { method, path, body: new TextDecoder().decode(body.subarray(0, length)) };
}

/** Where the blank line ending the request head starts; -1 while it has not arrived. */
function headEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}
