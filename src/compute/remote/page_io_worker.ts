/**
 * The page I/O Worker: holds computes' TCP connections to the pageserver, so that an engine's thread can block
 * (Atomics.wait) on a page it needs while this thread does the network I/O. Each link (one connection, one
 * `PageChannel`) comes with its own MessagePort. A link forwards frames as they come and routes each reply by its
 * request id: ids with {@linkcode SYNC_BIT} go back through the shared reply area, the rest by its port.
 * Protocol with the engine's thread: `page_channel.ts`.
 *
 * It is started from the process's main thread (`startPageIoWorker`): a Worker started from a Worker takes about
 * 500 ms to run its first line in Deno 2.9, which would be most of a compute's start.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { FrameSplitter } from "../../pageserver/frames.ts";
import { CONTROL, type IoCommand, type IoEvent, type IoSetup, SYNC_BIT } from "./page_channel_layout.ts";

/** Prefetched replies held per link; the engine's thread keeps at most one per timeline outstanding. */
const MAX_PREFETCHED = 64;
/** The most links at once: a compute holds one per tenant, and a few while it reconnects. */
const MAX_LINKS = 64;
let links = 0;

function setup(message: IoSetup): void {
  if (message.op === "bootstrap") {
    message.port.onmessage = (event: MessageEvent<IoSetup>) => setup(event.data);
    return;
  }
  if (links >= MAX_LINKS) {
    message.port.postMessage({ op: "disconnected", reason: `${MAX_LINKS} pageserver links are open` });
    message.port.close();
    return;
  }
  links++;
  new Link(message.port, () => links--);
}

self.onmessage = (event: MessageEvent<IoSetup>) => setup(event.data);

/** One connection to the pageserver and the engine thread's port for it. */
class Link {
  readonly #port: MessagePort;
  readonly #closed: () => void;
  #conn: Deno.TcpConn | undefined;
  #control!: Int32Array;
  #reply_area!: Uint8Array;
  #request_area!: Uint8Array;
  #writing: Promise<void> = Promise.resolve();
  #sync_waiting = false;
  #done = false;
  /** Prefetched requests by id: their reply once it came, and whether the engine's thread gave up on it. */
  readonly #prefetched = new Map<number, { reply?: { type: number; body: Uint8Array }; forgotten: boolean }>();
  /** The prefetch the engine's thread is blocked on, if its reply has not come yet. */
  #claim: number | undefined;

  constructor(port: MessagePort, closed: () => void) {
    this.#port = port;
    this.#closed = closed;
    port.onmessage = (event: MessageEvent<IoCommand>) => this.#command(event.data);
  }

  #command(command: IoCommand): void {
    if (command.op === "init") {
      this.#control = new Int32Array(command.control);
      this.#request_area = new Uint8Array(command.request);
      this.#reply_area = new Uint8Array(command.reply);
    } else if (command.op === "connect") {
      this.#connect(command.hostname, command.port);
    } else if (command.op === "send") {
      this.#write(command.bytes);
    } else if (command.op === "sync") {
      this.#sync_waiting = true;
      this.#write(this.#request_area.slice(0, Atomics.load(this.#control, CONTROL.REQUEST_LENGTH)));
    } else if (command.op === "prefetch") {
      if (this.#prefetched.size >= MAX_PREFETCHED) this.#prefetched.delete(this.#prefetched.keys().next().value!);
      this.#prefetched.set(command.id, { forgotten: false });
      this.#write(command.bytes);
    } else if (command.op === "claim") {
      this.#takeClaim(command.id);
    } else if (command.op === "forget") {
      const entry = this.#prefetched.get(command.id);
      if (entry?.reply !== undefined) this.#prefetched.delete(command.id);
      else if (entry !== undefined) entry.forgotten = true;
    } else if (command.op === "close") {
      this.#disconnect("closed by the compute");
      this.#finish();
    }
  }

  #post(event: IoEvent, transfer: Transferable[] = []): void {
    if (!this.#done) this.#port.postMessage(event, transfer);
  }

  async #connect(hostname: string, port: number): Promise<void> {
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname, port });
      conn.setNoDelay(true);
    } catch (error) {
      this.#post({ op: "disconnected", reason: `cannot connect to the pageserver at ${hostname}:${port}: ${error}` });
      return;
    }
    if (this.#done) return conn.close();
    this.#conn = conn;
    this.#post({ op: "connected" });
    const splitter = new FrameSplitter();
    const buffer = new Uint8Array(256 * 1024);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        for (const frame of splitter.push(buffer.subarray(0, n))) this.#route(frame.type, frame.body);
      }
      this.#disconnect("the pageserver closed the connection");
    } catch (error) {
      this.#disconnect(`the connection to the pageserver failed: ${error}`);
    }
  }

  #takeClaim(id: number): void {
    const entry = this.#prefetched.get(id);
    if (entry === undefined || entry.forgotten) return this.#failSync(true);
    if (entry.reply === undefined) {
      this.#claim = id;
      this.#sync_waiting = true;
      return;
    }
    this.#prefetched.delete(id);
    this.#sync_waiting = true;
    this.#deliver(entry.reply.type, entry.reply.body);
  }

  #route(type: number, body: Uint8Array): void {
    const id = new DataView(body.buffer, body.byteOffset, 4).getUint32(0, true);
    const prefetched = this.#prefetched.get(id);
    if (prefetched !== undefined) {
      if (prefetched.forgotten) this.#prefetched.delete(id);
      else if (this.#claim === id) {
        this.#prefetched.delete(id);
        this.#claim = undefined;
        this.#deliver(type, body);
      } else prefetched.reply = { type, body };
      return;
    }
    if ((id & SYNC_BIT) === 0 || !this.#sync_waiting) {
      this.#post({ op: "reply", type, body }, [body.buffer as ArrayBuffer]);
      return;
    }
    this.#deliver(type, body);
  }

  /** Puts a reply in the shared area and wakes the engine's thread blocked on it. */
  #deliver(type: number, body: Uint8Array): void {
    this.#sync_waiting = false;
    this.#reply_area[0] = type;
    this.#reply_area.set(body, 1);
    Atomics.store(this.#control, CONTROL.REPLY_LENGTH, body.length + 1);
    Atomics.add(this.#control, CONTROL.REPLY_SEQ, 1);
    Atomics.notify(this.#control, CONTROL.REPLY_SEQ);
  }

  #write(bytes: Uint8Array): void {
    const target = this.#conn;
    if (target === undefined) return this.#failSync();
    this.#writing = this.#writing.then(async () => {
      for (let done = 0; done < bytes.length;) done += await target.write(bytes.subarray(done));
    }).catch((error) => this.#disconnect(`writing to the pageserver failed: ${error}`));
  }

  #disconnect(reason: string): void {
    if (this.#conn === undefined) return;
    try {
      this.#conn.close();
    } catch {
      // Closed by the peer already.
    }
    this.#conn = undefined;
    this.#failSync();
    this.#post({ op: "disconnected", reason });
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.#port.close();
    this.#closed();
  }

  /** Wakes an engine thread waiting for a reply that will not come (`now`: it is about to wait). */
  #failSync(now = false): void {
    if (!this.#sync_waiting && !now) return;
    this.#sync_waiting = false;
    this.#claim = undefined;
    Atomics.store(this.#control, CONTROL.REPLY_LENGTH, -1);
    Atomics.add(this.#control, CONTROL.REPLY_SEQ, 1);
    Atomics.notify(this.#control, CONTROL.REPLY_SEQ);
  }
}
