/**
 * One TCP connection to a safekeeper. Its first bytes pick what it is: `GET ` is an HTTP request (answered once, then
 * closed); anything else is the safekeeper protocol: a Hello that binds the connection to one timeline, then
 * proposer messages, each answered in order once what the answer promises is durable.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Logger } from "../../logger.ts";
import { encodeMessage, ProtocolFormatError } from "./codec.ts";
import { FrameReader } from "./frame_reader.ts";
import { httpResponse, isRequestHeadComplete, MAX_REQUEST_HEAD_BYTES, type ServerSnapshot } from "./http_status.ts";
import type { Hello, Message, ProposerMessage } from "./messages.ts";
import { type Safekeeper, SafekeeperFailedError } from "./safekeeper.ts";
import { type Closeable, HelloRefusedError, type TimelineRegistry } from "./timeline_registry.ts";

/** What a connection needs from its server. */
export interface ConnectionContext {
  /** The safekeeper's node id, sent in every HelloResponse. */
  readonly node_id: number;
  /** The timelines served. */
  readonly registry: TimelineRegistry;
  /** Where events go. */
  readonly log: Logger;
  /** The largest frame body accepted; a header declaring more closes the connection. */
  readonly max_frame_body_bytes: number;
  /** How long a new connection may take to send its Hello (or HTTP request head). */
  readonly hello_timeout_ms: number;
  /** The state the HTTP endpoints show. */
  snapshot(): ServerSnapshot;
}

const PROPOSER_TYPES = new Set<Message["type"]>([
  "status_request",
  "vote_request",
  "elected",
  "append_request",
  "read_request",
]);
const READ_BUFFER_BYTES = 64 * 1024;
const HTTP_PREFIX = "GET ";

interface Binding {
  readonly hello: Hello;
  readonly safekeeper: Safekeeper;
}

/** Serves one accepted connection. */
export class SafekeeperConnection implements Closeable {
  readonly #conn: Deno.TcpConn;
  readonly #ctx: ConnectionContext;
  readonly #peer: string;
  readonly #buffer = new Uint8Array(READ_BUFFER_BYTES);
  #closed = false;

  /**
   * @param conn the accepted connection; this object closes it
   * @param ctx what the server shares with its connections
   */
  constructor(conn: Deno.TcpConn, ctx: ConnectionContext) {
    this.#conn = conn;
    this.#ctx = ctx;
    this.#peer = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
  }

  /** Serves until the peer leaves, breaks a rule, or {@linkcode close} is called. Never rejects: errors are logged. */
  async serve(): Promise<void> {
    const timer = setTimeout(() => {
      this.#ctx.log("hello_timeout", { peer: this.#peer, timeout_ms: this.#ctx.hello_timeout_ms });
      this.close();
    }, this.#ctx.hello_timeout_ms);
    try {
      const first = await this.#readPrefix(HTTP_PREFIX.length);
      if (first === undefined) return;
      if (new TextDecoder().decode(first.subarray(0, HTTP_PREFIX.length)) === HTTP_PREFIX) {
        await this.#serveHttp(first);
      } else {
        await this.#serveProtocol(first, () => clearTimeout(timer));
      }
    } catch (error) {
      this.#logError(error);
    } finally {
      clearTimeout(timer);
      this.close();
    }
  }

  /** Closes the socket; a read or write in progress fails, and {@linkcode serve} returns. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime after a reset: nothing is left to release.
    }
  }

  async #serveHttp(first: Uint8Array): Promise<void> {
    const decoder = new TextDecoder();
    let head = decoder.decode(first, { stream: true });
    while (!isRequestHeadComplete(head) && head.length <= MAX_REQUEST_HEAD_BYTES) {
      const chunk = await this.#read();
      if (chunk === undefined) return;
      head += decoder.decode(chunk, { stream: true });
    }
    await this.#write(httpResponse(head, this.#ctx.snapshot()));
  }

  async #serveProtocol(first: Uint8Array, onBound: () => void): Promise<void> {
    const reader = new FrameReader(this.#ctx.max_frame_body_bytes);
    let binding: Binding | undefined;
    try {
      for (let chunk: Uint8Array | undefined = first; chunk !== undefined; chunk = await this.#read()) {
        // Bounded: a chunk of READ_BUFFER_BYTES holds at most READ_BUFFER_BYTES / 16 frames.
        for (const msg of reader.push(chunk)) {
          if (binding === undefined) {
            binding = await this.#hello(msg);
            onBound();
          } else {
            await this.#answer(binding, msg);
          }
        }
      }
      if (reader.pending_bytes > 0 && !this.#closed) {
        throw new ProtocolFormatError(`the peer closed the connection inside a frame (${reader.pending_bytes} bytes)`);
      }
    } finally {
      if (binding !== undefined) this.#ctx.registry.detach(binding.hello.tenant_id, binding.hello.timeline_id, this);
    }
  }

  async #hello(msg: Message): Promise<Binding> {
    if (msg.type !== "hello") throw new ProtocolFormatError(`the first frame is ${msg.type}, expected hello`);
    const safekeeper = await this.#ctx.registry.attach(msg, this);
    const status = await this.#handle(msg, safekeeper, { type: "status_request" });
    assert(status.type === "status_response", `a status request is answered with ${status.type}`);
    const { term, flush_lsn, commit_lsn } = status;
    await this.#write(
      encodeMessage({ type: "hello_response", node_id: this.#ctx.node_id, term, flush_lsn, commit_lsn }),
    );
    this.#ctx.log("connected", { peer: this.#peer, tenant_id: msg.tenant_id, timeline_id: msg.timeline_id });
    return { hello: msg, safekeeper };
  }

  async #answer(binding: Binding, msg: Message): Promise<void> {
    if (!PROPOSER_TYPES.has(msg.type)) {
      throw new ProtocolFormatError(`a ${msg.type} frame after the hello; only proposer messages are served`);
    }
    const answer = await this.#handle(binding.hello, binding.safekeeper, msg as ProposerMessage);
    // Awaiting each write is the back-pressure: a slow reader stops this connection reading more requests.
    await this.#write(encodeMessage(answer));
  }

  async #handle(hello: Hello, safekeeper: Safekeeper, msg: ProposerMessage) {
    try {
      return await safekeeper.handle(msg);
    } catch (error) {
      if (error instanceof SafekeeperFailedError) this.#ctx.registry.fail(hello.tenant_id, hello.timeline_id, error);
      throw error;
    }
  }

  /** The first `size_bytes` or more bytes, or undefined when the peer leaves first. */
  async #readPrefix(size_bytes: number): Promise<Uint8Array | undefined> {
    let prefix = new Uint8Array(0);
    while (prefix.length < size_bytes) {
      const chunk = await this.#read();
      if (chunk === undefined) return prefix.length === 0 ? undefined : prefix;
      const joined = new Uint8Array(prefix.length + chunk.length);
      joined.set(prefix);
      joined.set(chunk, prefix.length);
      prefix = joined;
    }
    return prefix;
  }

  /** The next bytes (a view of a reused buffer: consume before reading again), or undefined at the end. */
  async #read(): Promise<Uint8Array | undefined> {
    if (this.#closed) return undefined;
    try {
      const n = await this.#conn.read(this.#buffer);
      return n === null ? undefined : this.#buffer.subarray(0, n);
    } catch (error) {
      if (this.#closed) return undefined;
      throw error;
    }
  }

  async #write(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length;) done += await this.#conn.write(bytes.subarray(done));
  }

  #logError(error: unknown): void {
    const peer = this.#peer;
    const message = error instanceof Error ? error.message : String(error);
    if (error instanceof ProtocolFormatError) this.#ctx.log("protocol_error", { peer, error: message });
    else if (error instanceof HelloRefusedError) this.#ctx.log("hello_refused", { peer, error: message });
    else if (error instanceof SafekeeperFailedError) this.#ctx.log("connection_closed", { peer, error: message });
    else if (this.#closed) return; // Closed on purpose (shutdown, timeout, a failed timeline): already logged.
    else if (error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe) {
      this.#ctx.log("disconnected", { peer, error: message });
    } else this.#ctx.log("connection_error", { peer, error: message });
  }
}
