/**
 * A fast lane for `exec` between the server's thread and the engine Worker: one request at a time in shared
 * memory, signalled with Atomics. A Worker woken through its event loop (postMessage) costs ~65 us a round trip
 * here; one that blocks in Atomics.wait for the next request answers in ~30 us. So each side first blocks briefly
 * (the Worker {@linkcode WAIT_SYNC_MS} after each answer, the server's thread a fraction of a millisecond for a
 * reply), then waits through its event loop. The Worker also gives its event loop a turn at least once a
 * millisecond and whenever a message waits, so timers, file I/O and postMessage requests still run.
 *
 * Waiting through the event loop cannot rely on `Atomics.waitAsync` alone: Deno does not always wake an idle event
 * loop for it (denoland/deno#15358). A side going to sleep raises its "asleep" word; the other side, after changing
 * what it waits for, sees the word and sends a postMessage wake-up. Both sides re-check after raising the word, so
 * with sequentially consistent atomics one of them always sees the other.
 *
 * @module
 */

/** How long the Worker blocks waiting for the next request before it waits through its event loop (ms). */
export const WAIT_SYNC_MS = 2;
/** How long the server's thread blocks for a reply before it waits through its event loop (ms). */
const CLIENT_WAIT_SYNC_MS = 0.3;
/** While serving requests back to back, the Worker's event loop still gets a turn this often (ms). */
const TURN_EVERY_MS = 1;
/** Bytes a request or a reply may take in the lane. */
export const LANE_BYTES = 1024 * 1024;

/** Rung (incremented and notified) for every request and every poke: the one word the Worker waits on. */
const DOORBELL = 0;
const REQUEST_SEQ = 1;
const REPLY_SEQ = 2;
const REPLY_LENGTH = 3;
const REQUEST_LENGTH = 4;
/** Messages the server's thread has posted to the Worker (besides the lane). */
const POSTED = 5;
/** 1 while the Worker waits through its event loop: ring it, then wake it by postMessage. */
const WORKER_ASLEEP = 6;
/** 1 while the server's thread waits for a reply through its event loop: wake it by postMessage. */
const CLIENT_ASLEEP = 7;
/** Where a request's integer fields start. */
const REQUEST_FIELDS = 8;
/** Integer fields a request carries. */
export const FIELD_COUNT = 8;
/** REPLY_LENGTH of a reply sent by postMessage instead (too large, or an error). */
const REPLY_ELSEWHERE = -1;

/** The shared memory of a lane: made by the server's thread, handed to the Worker. */
export type Lane = { control: SharedArrayBuffer; request: SharedArrayBuffer; reply: SharedArrayBuffer };

/** Makes a lane. */
export function makeLane(): Lane {
  return {
    control: new SharedArrayBuffer(4 * (REQUEST_FIELDS + FIELD_COUNT)),
    request: new SharedArrayBuffer(LANE_BYTES),
    reply: new SharedArrayBuffer(LANE_BYTES),
  };
}

/**
 * Sleeps through the event loop until `control[index]` is no longer `value`: by `Atomics.waitAsync`, or by the
 * wake-up the other side sends when it sees `control[asleep]` raised.
 */
async function sleepUntilChanged(
  control: Int32Array,
  index: number,
  value: number,
  asleep: number,
  woken: Promise<void>,
): Promise<void> {
  Atomics.store(control, asleep, 1);
  try {
    if (Atomics.load(control, index) !== value) return;
    const waiting = Atomics.waitAsync(control, index, value);
    if (waiting.async) await Promise.race([waiting.value, woken]);
  } finally {
    Atomics.store(control, asleep, 0);
  }
}

/** A promise the next wake-up message resolves. */
class WakeUp {
  #resolve: () => void = () => {};
  #promise: Promise<void> = Promise.resolve();

  /** A fresh promise for the next {@linkcode wake}. */
  arm(): Promise<void> {
    this.#promise = new Promise((resolve) => this.#resolve = resolve);
    return this.#promise;
  }

  /** A wake-up message arrived. */
  wake(): void {
    this.#resolve();
  }
}

/** The server thread's end: sends one request at a time and waits for its reply without blocking for long. */
export class LaneClient {
  readonly #control: Int32Array;
  readonly #request: Uint8Array;
  readonly #reply: Uint8Array;
  readonly #wake_worker: () => void;
  readonly #woken = new WakeUp();
  #busy = false;

  /**
   * @param lane the shared memory the Worker also has (call {@linkcode posted} after each postMessage to it)
   * @param wake_worker posts a wake-up message to the Worker (the lane counts it)
   */
  constructor(lane: Lane, wake_worker: () => void) {
    this.#control = new Int32Array(lane.control);
    this.#request = new Uint8Array(lane.request);
    this.#reply = new Uint8Array(lane.reply);
    this.#wake_worker = wake_worker;
  }

  /** Whether a request of `bytes` can go now. */
  available(bytes: Uint8Array): boolean {
    return !this.#busy && bytes.length <= LANE_BYTES;
  }

  /**
   * Sends `fields` and `bytes`; resolves with the reply's bytes, or undefined when the Worker answered by
   * postMessage instead (the caller waits for that).
   */
  async call(fields: number[], bytes: Uint8Array): Promise<Uint8Array | undefined> {
    if (!this.available(bytes) || fields.length !== FIELD_COUNT) throw new Error("engine lane misused");
    this.#busy = true;
    try {
      const control = this.#control;
      for (let i = 0; i < FIELD_COUNT; i++) control[REQUEST_FIELDS + i] = fields[i];
      this.#request.set(bytes);
      Atomics.store(control, REQUEST_LENGTH, bytes.length);
      const seq = Atomics.add(control, REQUEST_SEQ, 1) + 1;
      this.#ring();
      // Most statements answer within a fraction of a millisecond: blocking briefly saves an event-loop wake-up.
      const before = Atomics.load(control, REPLY_SEQ);
      if (before !== seq) Atomics.wait(control, REPLY_SEQ, before, CLIENT_WAIT_SYNC_MS);
      for (
        let current = Atomics.load(control, REPLY_SEQ);
        current !== seq;
        current = Atomics.load(control, REPLY_SEQ)
      ) {
        await sleepUntilChanged(control, REPLY_SEQ, current, CLIENT_ASLEEP, this.#woken.arm());
      }
      const length = Atomics.load(control, REPLY_LENGTH);
      return length === REPLY_ELSEWHERE ? undefined : this.#reply.slice(0, length);
    } finally {
      this.#busy = false;
    }
  }

  /** The Worker's wake-up message arrived. */
  woken(): void {
    this.#woken.wake();
  }

  /** Counts a message just posted to the Worker and wakes it, so its event loop takes the message. */
  posted(): void {
    Atomics.add(this.#control, POSTED, 1);
    this.#ring();
  }

  #ring(): void {
    Atomics.add(this.#control, DOORBELL, 1);
    Atomics.notify(this.#control, DOORBELL);
    if (Atomics.load(this.#control, WORKER_ASLEEP) === 1) {
      Atomics.add(this.#control, POSTED, 1);
      this.#wake_worker();
    }
  }
}

/** The Worker's end: a loop serving requests until the Worker ends. */
export class LaneServer {
  readonly #control: Int32Array;
  readonly #request: Uint8Array;
  readonly #reply: Uint8Array;
  readonly #wake_client: () => void;
  readonly #woken = new WakeUp();

  /**
   * @param lane the shared memory the server's thread made
   * @param wake_client posts a wake-up message to the server's thread
   */
  constructor(lane: Lane, wake_client: () => void) {
    this.#control = new Int32Array(lane.control);
    this.#request = new Uint8Array(lane.request);
    this.#reply = new Uint8Array(lane.reply);
    this.#wake_client = wake_client;
  }

  /** The server thread's wake-up message arrived. */
  woken(): void {
    this.#woken.wake();
  }

  /**
   * Serves forever: `handle` gets each request's fields and bytes and resolves with reply bytes (at most
   * {@linkcode LANE_BYTES}) to put in the lane, or undefined when it answered by postMessage itself; it never
   * rejects. It blocks its thread only while `may_block(posted)` says the Worker has nothing else to do: it has
   * received all `posted` messages and answered them.
   */
  async serve(
    handle: (fields: number[], bytes: Uint8Array) => Promise<Uint8Array | undefined>,
    may_block: (posted: number) => boolean,
  ): Promise<never> {
    const control = this.#control;
    let bell = Atomics.load(control, DOORBELL);
    let turn_ms = performance.now();
    for (let handled = Atomics.load(control, REQUEST_SEQ);;) {
      if (
        !may_block(Atomics.load(control, POSTED)) || Atomics.wait(control, DOORBELL, bell, WAIT_SYNC_MS) === "timed-out"
      ) {
        await sleepUntilChanged(control, DOORBELL, bell, WORKER_ASLEEP, this.#woken.arm());
      }
      bell = Atomics.load(control, DOORBELL);
      if (Atomics.load(control, REQUEST_SEQ) === handled) {
        await macrotask(); // rung for a postMessage request: let the event loop take it
        continue;
      }
      handled = Atomics.load(control, REQUEST_SEQ);
      const fields = Array.from(control.subarray(REQUEST_FIELDS, REQUEST_FIELDS + FIELD_COUNT));
      const bytes = this.#request.slice(0, Atomics.load(control, REQUEST_LENGTH));
      const reply = await handle(fields, bytes);
      if (reply !== undefined) {
        if (reply.length > LANE_BYTES) throw new Error(`engine lane: a ${reply.length}-byte reply does not fit`);
        this.#reply.set(reply);
      }
      Atomics.store(control, REPLY_LENGTH, reply === undefined ? REPLY_ELSEWHERE : reply.length);
      Atomics.store(control, REPLY_SEQ, handled);
      Atomics.notify(control, REPLY_SEQ);
      if (Atomics.load(control, CLIENT_ASLEEP) === 1) this.#wake_client();
      // A turn costs ~40 us: take one when a message waits, else once a millisecond for timers and I/O.
      if (!may_block(Atomics.load(control, POSTED)) || performance.now() - turn_ms >= TURN_EVERY_MS) {
        await macrotask();
        turn_ms = performance.now();
      }
    }
  }
}

/**
 * Resolves after the event loop has had a turn (timers, I/O completions, messages). A message to itself, not
 * `setTimeout(0)`: timers are clamped to a millisecond or more, which would be most of a statement's time.
 */
function macrotask(): Promise<void> {
  const { port1, port2 } = new MessageChannel();
  return new Promise<void>((resolve) => {
    port2.onmessage = () => {
      port1.close();
      port2.close();
      resolve();
    };
    port1.postMessage(null);
  });
}
