/**
 * A compute's channel to the pageserver, on the engine's thread: asynchronous requests and one-way sends go through
 * the page I/O Worker by postMessage; {@linkcode PageChannel.requestSync} blocks the thread (Postgres's file reads
 * are synchronous) until the Worker puts the reply in shared memory. Everything leaves in the order it was issued,
 * so a read sent after a write sees it.
 *
 * @module
 */
import { decodeMessage, encodeMessage, type Reply, type Request, type RequestBody } from "../../pageserver/messages.ts";
import {
  CONTROL,
  type IoCommand,
  type IoEvent,
  type IoSetup,
  REPLY_AREA_BYTES,
  REQUEST_AREA_BYTES,
  SYNC_BIT,
} from "./page_channel_layout.ts";

/** Where links to the page I/O Worker are made: the Worker, or a bootstrap port it listens on. */
export type PageIo = { postMessage(message: IoSetup, transfer: Transferable[]): void };

/**
 * Starts a page I/O Worker. Call it on the process's main thread (a Worker's Worker starts slowly) and hand other
 * threads a bootstrap port ({@linkcode pageIoPort}).
 */
export function startPageIoWorker(): Worker {
  return new Worker(new URL("./page_io_worker.ts", import.meta.url), { type: "module" });
}

/** A port through which another thread makes links to `worker`. */
export function pageIoPort(worker: Worker): MessagePort {
  const { port1, port2 } = new MessageChannel();
  worker.postMessage({ op: "bootstrap", port: port1 } satisfies IoSetup, [port1]);
  return port2;
}

/** How long a synchronous request waits for its reply before the compute gives up on the pageserver (ms). */
const SYNC_TIMEOUT_MS = 60_000;
/** The most asynchronous requests waiting for replies. */
const MAX_PENDING = 4096;
/** One-way sends remembered until a reply shows the pageserver took them (a refusal then still names its timeline). */
const MAX_ONE_WAY = 65_536;

/** The pageserver cannot be reached, or the connection to it was lost. */
export class PageserverUnavailableError extends Error {
  /** @param reason what happened */
  constructor(reason: string) {
    super(`${reason}; the compute restarts from storage once the pageserver is back`);
    this.name = "PageserverUnavailableError";
  }
}

/** A request the pageserver refused (its error reply). */
export class PageserverRequestError extends Error {
  /** The protocol's error code. */
  readonly code: string;
  /**
   * @param code the error code
   * @param message the pageserver's message
   */
  constructor(code: string, message: string) {
    super(message);
    this.name = "PageserverRequestError";
    this.code = code;
  }
}

type Waiter = { resolve: (reply: Reply) => void; reject: (error: Error) => void };

/** One connection to a pageserver, as the engine's thread uses it. */
export class PageChannel {
  readonly #port: MessagePort;
  readonly #control = new Int32Array(new SharedArrayBuffer(4 * CONTROL.WORDS));
  readonly #request_area = new Uint8Array(new SharedArrayBuffer(REQUEST_AREA_BYTES));
  readonly #reply_area = new Uint8Array(new SharedArrayBuffer(REPLY_AREA_BYTES));
  readonly #waiters = new Map<number, Waiter>();
  #next_id = 1;
  #connected: Promise<void>;
  /** Why the channel stopped working (a lost connection, a refused one-way send); every use throws it. */
  failure: Error | undefined;
  /** Called once when the channel fails. */
  on_failure: (error: Error) => void = () => {};
  /** Called when the pageserver refused a one-way send to `timeline_id` because a newer compute took it over. */
  on_fenced: (timeline_id: string, error: PageserverRequestError) => void = (_, error) => this.#fail(error);
  /** Timelines of one-way sends not yet known to be accepted, by request id (a later reply accepts them). */
  readonly #one_way = new Map<number, string>();

  /** Connects to the pageserver at `hostname:port` through a link of the page I/O Worker `io`. */
  static async open(io: PageIo, hostname: string, port: number): Promise<PageChannel> {
    const channel = new PageChannel(io, hostname, port);
    try {
      await channel.#connected;
    } catch (error) {
      channel.close();
      throw error;
    }
    return channel;
  }

  private constructor(io: PageIo, hostname: string, port: number) {
    const { port1, port2 } = new MessageChannel();
    io.postMessage({ op: "link", port: port2 }, [port2]);
    this.#port = port1;
    this.#command({
      op: "init",
      control: this.#control.buffer as SharedArrayBuffer,
      request: this.#request_area.buffer as SharedArrayBuffer,
      reply: this.#reply_area.buffer as SharedArrayBuffer,
    });
    this.#connected = new Promise((resolve, reject) => {
      this.#port.onmessage = (event: MessageEvent<IoEvent>) => {
        const e = event.data;
        if (e.op === "connected") resolve();
        else if (e.op === "disconnected") {
          const error = new PageserverUnavailableError(e.reason);
          reject(error);
          this.#fail(error);
        } else this.#reply(e.type, e.body);
      };
    });
    this.#command({ op: "connect", hostname, port });
  }

  /** Sends `request` and resolves with its reply; an error reply rejects with {@linkcode PageserverRequestError}. */
  request(request: RequestBody): Promise<Reply> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.#waiters.size >= MAX_PENDING) {
      return Promise.reject(new PageserverUnavailableError(`${MAX_PENDING} requests wait for the pageserver`));
    }
    const id = this.#id();
    return new Promise((resolve, reject) => {
      this.#waiters.set(id, { resolve, reject });
      this.#command({ op: "send", bytes: encodeMessage({ ...request, id } as Request) });
    });
  }

  /**
   * Sends a request that is answered only when it fails (a put, a WAL piece). A refusal because a newer compute
   * fenced the timeline goes to {@linkcode PageChannel.on_fenced}; any other failure poisons the channel.
   */
  send(request: RequestBody & { timeline_id: string }): void {
    if (this.failure !== undefined) throw this.failure;
    const id = this.#id();
    if (this.#one_way.size >= MAX_ONE_WAY) this.#one_way.delete(this.#one_way.keys().next().value!);
    this.#one_way.set(id, request.timeline_id);
    this.#command({ op: "send", bytes: encodeMessage({ ...request, id } as Request) });
  }

  /** Sends `request` and blocks this thread until its reply is in. */
  requestSync(request: RequestBody): Reply {
    if (this.failure !== undefined) throw this.failure;
    const id = (this.#id() | SYNC_BIT) >>> 0;
    const frame = encodeMessage({ ...request, id } as Request);
    if (frame.length > this.#request_area.length) throw new RangeError(`a request of ${frame.length} bytes`);
    this.#request_area.set(frame);
    Atomics.store(this.#control, CONTROL.REQUEST_LENGTH, frame.length);
    return this.#waitSync({ op: "sync" });
  }

  /**
   * Sends `request` now and returns its id: the I/O Worker keeps the reply for {@linkcode claimSync}, so the
   * pageserver works on the next pages while Postgres reads these. Each prefetch is claimed or forgotten.
   */
  prefetch(request: RequestBody): number {
    if (this.failure !== undefined) throw this.failure;
    const id = (this.#id() | SYNC_BIT) >>> 0;
    this.#command({ op: "prefetch", id, bytes: encodeMessage({ ...request, id } as Request) });
    return id;
  }

  /** Blocks this thread until the reply to prefetch `id` is in, and returns it. */
  claimSync(id: number): Reply {
    if (this.failure !== undefined) throw this.failure;
    return this.#waitSync({ op: "claim", id });
  }

  /** The reply to prefetch `id` will not be claimed: the I/O Worker drops it. */
  forget(id: number): void {
    if (this.failure === undefined) this.#command({ op: "forget", id });
  }

  #waitSync(command: IoCommand): Reply {
    const seq = Atomics.load(this.#control, CONTROL.REPLY_SEQ);
    this.#command(command);
    if (Atomics.wait(this.#control, CONTROL.REPLY_SEQ, seq, SYNC_TIMEOUT_MS) === "timed-out") {
      const error = new PageserverUnavailableError(`the pageserver did not answer within ${SYNC_TIMEOUT_MS} ms`);
      this.#fail(error);
      throw error;
    }
    const length = Atomics.load(this.#control, CONTROL.REPLY_LENGTH);
    if (length < 0) throw this.failure ?? new PageserverUnavailableError("the connection to the pageserver was lost");
    const reply = decodeMessage({ type: this.#reply_area[0], body: this.#reply_area.slice(1, length) }) as Reply;
    this.#accepted(reply.id);
    if (reply.type === "error") throw new PageserverRequestError(reply.code, reply.message);
    return reply;
  }

  /** Closes the connection and its link. */
  close(): void {
    this.#fail(new PageserverUnavailableError("the channel to the pageserver is closed"));
    this.#command({ op: "close" });
    this.#port.close();
  }

  #id(): number {
    const id = this.#next_id;
    this.#next_id = this.#next_id >= 0x7fff_ffff ? 1 : this.#next_id + 1;
    return id;
  }

  #reply(type: number, body: Uint8Array): void {
    let reply: Reply;
    try {
      reply = decodeMessage({ type, body }) as Reply;
    } catch (error) {
      return this.#fail(error as Error);
    }
    const waiter = this.#waiters.get(reply.id);
    if (waiter === undefined) {
      // No one waits for it: the failure of a one-way send (or of the stream itself, id 0).
      if (reply.type !== "error") return;
      const error = new PageserverRequestError(reply.code, reply.message);
      const timeline_id = this.#one_way.get(reply.id);
      if (reply.code === "fenced" && timeline_id !== undefined) this.on_fenced(timeline_id, error);
      else this.#fail(error);
      return;
    }
    this.#accepted(reply.id);
    this.#waiters.delete(reply.id);
    if (reply.type === "error") waiter.reject(new PageserverRequestError(reply.code, reply.message));
    else waiter.resolve(reply);
  }

  /** The pageserver answers in order: every one-way send before request `reply_id` was taken. */
  #accepted(reply_id: number): void {
    const upto = reply_id & ~SYNC_BIT;
    for (const id of this.#one_way.keys()) {
      if (id >= upto) break;
      this.#one_way.delete(id);
    }
  }

  #fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    for (const waiter of this.#waiters.values()) waiter.reject(error);
    this.#waiters.clear();
    this.on_failure(error);
  }

  #command(command: IoCommand): void {
    this.#port.postMessage(command);
  }
}
