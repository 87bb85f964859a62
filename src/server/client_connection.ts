/**
 * A client's socket as a session uses it: whole messages out of a bounded reader, one read in flight at a time
 * (a statement's disconnect watch, a COPY's feed and the next message may all wait on it), and writes in full.
 *
 * @module
 */
import { MessageReader } from "./wire.ts";

const READ_BYTES = 64 * 1024;
/** What a client may send ahead while its statement runs before its socket is left unread (bytes). */
const WATCH_BUFFER_BYTES = 1024 * 1024;

/** One client's socket. */
export class ClientConnection {
  /** The socket. */
  readonly conn: Deno.Conn;
  /** What was read and not yet taken. */
  readonly reader: MessageReader;
  readonly #chunk = new Uint8Array(READ_BYTES);
  /** The socket read in progress, if any. */
  #reading: Promise<boolean> | undefined;
  /** The client closed its side. */
  #eof = false;
  #closed = false;
  /** Since when a wait inside a transaction (or a batch) has lasted; undefined when no such wait runs. */
  waiting_since_ms: number | undefined;

  /**
   * @param conn the client's socket
   * @param max_message_bytes the largest message accepted
   */
  constructor(conn: Deno.Conn, max_message_bytes: number) {
    this.conn = conn;
    this.reader = new MessageReader(max_message_bytes);
  }

  /** Whether at least `n` bytes are buffered. */
  buffered(n: number): boolean {
    return this.reader.buffered_bytes >= n;
  }

  /**
   * The next item `take` finds, reading the socket as needed; undefined at end of stream. While `in_transaction`,
   * the wait is visible in {@linkcode waiting_since_ms}.
   */
  async next<T>(take: () => T | undefined, in_transaction = false): Promise<T | undefined> {
    for (;;) {
      const item = take();
      if (item !== undefined) return item;
      this.waiting_since_ms = in_transaction ? performance.now() : undefined;
      const more = await this.fill();
      this.waiting_since_ms = undefined;
      if (!more) return undefined;
    }
  }

  /**
   * Reads the socket once into the reader; false at end of stream. Callers that come while a read is pending
   * share it.
   */
  fill(): Promise<boolean> {
    if (this.#eof) return Promise.resolve(false);
    this.#reading ??= this.conn.read(this.#chunk).catch((error) => {
      if (this.#closed) return null; // closed under a pending read: by a timeout, or the server stopping
      throw error;
    }).then((n) => {
      this.#reading = undefined;
      if (n === null) this.#eof = true;
      else this.reader.push(this.#chunk.subarray(0, n));
      return n !== null;
    });
    return this.#reading;
  }

  /**
   * Reads the socket while `call` runs; resolves true as soon as the client has gone away, false when `call`
   * ended first. What the client sends meanwhile is kept, up to a bound; beyond it, reading waits for the call.
   */
  async watch(call: Promise<unknown>): Promise<boolean> {
    let running = true;
    const ended = call.then(() => running = false, () => running = false);
    while (running && this.reader.buffered_bytes < WATCH_BUFFER_BYTES) {
      const more = await Promise.race([this.fill().catch(() => false), ended]);
      if (running && more === false) return true;
    }
    return false;
  }

  /** Writes all of `bytes`. */
  async write(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length;) done += await this.conn.write(bytes.subarray(done));
  }

  /** Closes the socket (a pending read then ends as end of stream). */
  close(): void {
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}
