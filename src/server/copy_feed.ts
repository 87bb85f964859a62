/**
 * The client's COPY data on its way to the engine Worker while Postgres waits for it. A COPY FROM STDIN reads the
 * client from inside a statement, and the Worker's thread is inside Postgres then: it cannot take a message. So
 * it posts the replies produced so far (`copy_output`, see `engine_protocol.ts`: postMessage works from a blocked
 * thread) and blocks on this shared memory until the server's thread has written the client's next bytes into
 * it. One feed per Worker is enough: the Worker runs one statement at a time.
 *
 * Layout: control words `[SEQ, LENGTH, ASKED]`, then up to {@linkcode FEED_BYTES} of data. The Worker numbers
 * each request (ASKED) and reads SEQ before it posts the request; the server's thread, answering request number
 * `asked`, writes the data, then LENGTH, then increments SEQ and notifies. An answer to a request the Worker gave
 * up on (it timed out) is dropped, so it can never be taken for the next COPY's data.
 *
 * @module
 */
import { COPY_INPUT_MAX_BYTES, copyFail, type CopyInput } from "../compute/engine_guard.ts";

/** Bytes one feed carries. */
export const FEED_BYTES = COPY_INPUT_MAX_BYTES;

const SEQ = 0;
const LENGTH = 1;
const ASKED = 2;

/** The shared memory of a feed: made by the server's thread, handed to the Worker. */
export type CopyFeedMemory = { control: SharedArrayBuffer; data: SharedArrayBuffer };

/** Makes a feed. */
export function makeCopyFeed(): CopyFeedMemory {
  return { control: new SharedArrayBuffer(12), data: new SharedArrayBuffer(FEED_BYTES) };
}

/** The server thread's end: puts bytes in the feed for the Worker. */
export class CopyFeedWriter {
  readonly #control: Int32Array;
  readonly #data: Uint8Array;

  /** @param memory the feed the Worker waits on */
  constructor(memory: CopyFeedMemory) {
    this.#control = new Int32Array(memory.control);
    this.#data = new Uint8Array(memory.data);
  }

  /** Hands `bytes` (1 to {@linkcode FEED_BYTES}) to the Worker, if it still waits for request `asked`. */
  put(asked: number, bytes: Uint8Array): void {
    if (bytes.length === 0 || bytes.length > FEED_BYTES) throw new Error(`copy feed: ${bytes.length} bytes`);
    if (Atomics.load(this.#control, ASKED) !== asked) return;
    this.#data.set(bytes);
    Atomics.store(this.#control, LENGTH, bytes.length);
    Atomics.add(this.#control, SEQ, 1);
    Atomics.notify(this.#control, SEQ);
  }
}

/**
 * The Worker's end: a {@linkcode CopyInput} that posts the output with `post` and blocks until the server's thread
 * feeds the client's bytes; after `timeout_ms` without them, the COPY fails instead of holding the engine.
 */
export function copyFeedInput(
  memory: CopyFeedMemory,
  post: (asked: number, output: Uint8Array) => void,
  timeout_ms: number,
): CopyInput {
  const control = new Int32Array(memory.control);
  const data = new Uint8Array(memory.data);
  return (output) => {
    const before = Atomics.load(control, SEQ);
    const asked = Atomics.add(control, ASKED, 1) + 1;
    post(asked, output);
    const deadline_ms = performance.now() + timeout_ms;
    while (Atomics.load(control, SEQ) === before) {
      const left_ms = deadline_ms - performance.now();
      if (left_ms <= 0) {
        Atomics.add(control, ASKED, 1); // a late answer finds another number and is dropped
        if (Atomics.load(control, SEQ) !== before) break;
        return copyFail(`no COPY data from the client for ${timeout_ms} ms`);
      }
      Atomics.wait(control, SEQ, before, left_ms);
    }
    return data.slice(0, Atomics.load(control, LENGTH));
  };
}
