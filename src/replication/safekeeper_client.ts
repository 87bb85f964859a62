/**
 * The compute's connection to one safekeeper: TCP, a Hello naming the timeline, then safekeeper protocol frames
 * (`docs/safekeeper_protocol.md`). It reconnects by itself after any failure; messages sent while it is down are
 * dropped, which the proposer's retry timer makes good.
 *
 * @module
 */
import { encodeMessage } from "./safekeeper/codec.ts";
import { FrameReader } from "./safekeeper/frame_reader.ts";
import type { ProposerMessage, SafekeeperMessage } from "./safekeeper/messages.ts";
import type { Logger } from "../logger.ts";

/** Where a safekeeper listens. */
export type SafekeeperAddress = { hostname: string; port: number };

/** Bytes written to a safekeeper but not yet taken by its socket; beyond this the connection is dropped. */
const MAX_QUEUED_BYTES = 32 * 1024 * 1024;
const RECONNECT_MIN_MS = 50;
const RECONNECT_MAX_MS = 1000;
const READ_BYTES = 256 * 1024;

/** Thrown for a `--safekeepers` entry that is not HOST:PORT. */
export class SafekeeperAddressError extends Error {
  /** @param text the entry */
  constructor(text: string) {
    super(`safekeeper address "${text}" is not HOST:PORT (for example 127.0.0.1:7676)`);
    this.name = "SafekeeperAddressError";
  }
}

/** Parses `HOST:PORT`. */
export function parseSafekeeperAddress(text: string): SafekeeperAddress {
  const match = /^(.+):(\d{1,5})$/.exec(text.trim());
  const port = match === null ? NaN : Number(match[2]);
  if (match === null || port < 1 || port > 65535) throw new SafekeeperAddressError(text);
  return { hostname: match[1].replace(/^\[(.*)\]$/, "$1"), port };
}

/** What a connection needs to know. */
export type SafekeeperClientOptions = {
  address: SafekeeperAddress;
  tenant_id: string;
  timeline_id: string;
  segment_size: number;
  /** Each message the safekeeper sends, in order (not the Hello's answer). */
  on_message: (msg: SafekeeperMessage) => void;
  /** The connection is up (Hello answered): what was dropped while it was down may be sent again now. */
  on_ready?: () => void;
  /** Structured log line. */
  log: Logger;
};

/** How long closing waits for the frames already sent to be written. */
const CLOSE_DRAIN_MS = 1000;

/** A self-healing connection to one safekeeper. */
export class SafekeeperClient {
  readonly #options: SafekeeperClientOptions;
  #conn: Deno.TcpConn | undefined;
  #ready = false;
  #queued_bytes = 0;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;
  #outage_reported = false;
  readonly #running: Promise<void>;
  /** The safekeeper's node id and state, from its Hello answer. */
  hello: { node_id: number } | undefined;

  /** Connects in the background, and again after every failure, until {@linkcode close}. */
  constructor(options: SafekeeperClientOptions) {
    this.#options = options;
    this.#running = this.#run();
  }

  /** Whether the connection is up and past its Hello. */
  get connected(): boolean {
    return this.#ready;
  }

  /** Sends `msg` if connected; otherwise drops it (the proposer resends). */
  send(msg: ProposerMessage): void {
    if (!this.#ready || this.#conn === undefined) return;
    const frame = encodeMessage(msg);
    if (this.#queued_bytes + frame.length > MAX_QUEUED_BYTES) {
      this.#drop("the safekeeper reads too slowly");
      return;
    }
    this.#queued_bytes += frame.length;
    const conn = this.#conn;
    this.#writing = this.#writing.then(async () => {
      try {
        await writeAll(conn, frame);
      } catch {
        if (this.#conn === conn) this.#drop("write failed");
      } finally {
        this.#queued_bytes -= frame.length;
      }
    });
  }

  /** Stops reconnecting and closes the connection, once what was sent is written (for at most a second). */
  async close(): Promise<void> {
    this.#closed = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#writing, new Promise((resolve) => timer = setTimeout(resolve, CLOSE_DRAIN_MS))]);
    clearTimeout(timer);
    this.#drop("closing");
    await this.#running;
  }

  async #run(): Promise<void> {
    const { address, log } = this.#options;
    let backoff_ms = RECONNECT_MIN_MS;
    while (!this.#closed) {
      try {
        this.#conn = await Deno.connect({ hostname: address.hostname, port: address.port });
        this.#conn.setNoDelay(true);
        backoff_ms = RECONNECT_MIN_MS;
        await this.#serve(this.#conn);
      } catch (error) {
        // Logged once per outage, not at every retry: a safekeeper down for hours would flood the log.
        if (!this.#closed && !this.#outage_reported) {
          this.#outage_reported = true;
          log("safekeeper_unreachable", { ...address, message: String(error), retry_every_ms: RECONNECT_MAX_MS });
        }
      } finally {
        this.#drop("disconnected");
      }
      if (this.#closed) return;
      await new Promise((resolve) => setTimeout(resolve, backoff_ms));
      backoff_ms = Math.min(RECONNECT_MAX_MS, backoff_ms * 2);
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const { tenant_id, timeline_id, segment_size, on_message, log, address } = this.#options;
    await writeAll(conn, encodeMessage({ type: "hello", tenant_id, timeline_id, segment_size }));
    const reader = new FrameReader();
    const chunk = new Uint8Array(READ_BYTES);
    for (;;) {
      const n = await conn.read(chunk);
      if (n === null) throw new Error("the safekeeper closed the connection");
      for (const msg of reader.push(chunk.subarray(0, n))) {
        if (!this.#ready) {
          if (msg.type !== "hello_response") throw new Error(`the safekeeper answered Hello with ${msg.type}`);
          this.hello = { node_id: msg.node_id };
          this.#ready = true;
          this.#outage_reported = false;
          log("safekeeper_connected", { ...address, node_id: msg.node_id });
          this.#options.on_ready?.();
          continue;
        }
        if (msg.type === "hello" || msg.type === "hello_response" || !isSafekeeperMessage(msg)) {
          throw new Error(`unexpected ${msg.type} from the safekeeper`);
        }
        on_message(msg);
      }
    }
  }

  #drop(reason: string): void {
    if (this.#ready) this.#options.log("safekeeper_disconnected", { ...this.#options.address, reason });
    this.#ready = false;
    try {
      this.#conn?.close();
    } catch {
      // closed already
    }
    this.#conn = undefined;
  }
}

function isSafekeeperMessage(msg: { type: string }): msg is SafekeeperMessage {
  return msg.type === "status_response" || msg.type === "vote_response" || msg.type === "append_response" ||
    msg.type === "read_response";
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}
