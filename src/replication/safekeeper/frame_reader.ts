/**
 * Cuts a byte stream (a TCP connection) into protocol messages: frames may arrive split across reads or several
 * to a read.
 *
 * @module
 */
import { decodeFrame, FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES, frameBodyLength } from "./codec.ts";
import { MAX_FRAME_BODY_BYTES, type Message } from "./messages.ts";

/**
 * Accumulates stream bytes and returns whole messages. Holds at most one frame's worth of bytes beyond what it has
 * returned; a header declaring a body over `max_body_bytes` throws {@linkcode ProtocolFormatError} at once, before
 * the body arrives. After any error the stream is out of step: close the connection.
 */
export class FrameReader {
  readonly #max_body_bytes: number;
  /** Received chunks not yet consumed; kept apart so a large frame arriving in pieces is copied once. */
  #chunks: Uint8Array[] = [];
  #pending_bytes = 0;
  /** The size of the frame at the head of the stream, once its header is in. */
  #frame_bytes: number | undefined;

  /** @param max_body_bytes the largest frame body accepted */
  constructor(max_body_bytes = MAX_FRAME_BODY_BYTES) {
    this.#max_body_bytes = max_body_bytes;
  }

  /** Bytes received but not yet part of a returned message. */
  get pending_bytes(): number {
    return this.#pending_bytes;
  }

  /** Adds `chunk` and returns every message now complete, in order. */
  push(chunk: Uint8Array): Message[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk.slice());
      this.#pending_bytes += chunk.length;
    }
    const messages: Message[] = [];
    // Each pass consumes a whole frame, so the loop is bounded by the bytes held.
    while (this.#pending_bytes >= (this.#frame_bytes ?? FRAME_HEADER_BYTES)) {
      if (this.#frame_bytes === undefined) {
        const body_bytes = frameBodyLength(this.#peek(FRAME_HEADER_BYTES), this.#max_body_bytes);
        this.#frame_bytes = FRAME_HEADER_BYTES + body_bytes + FRAME_TRAILER_BYTES;
        continue;
      }
      const frame = this.#take(this.#frame_bytes);
      this.#frame_bytes = undefined;
      messages.push(decodeFrame(frame, this.#max_body_bytes));
    }
    return messages;
  }

  #peek(size_bytes: number): Uint8Array {
    if (this.#chunks[0].length >= size_bytes) return this.#chunks[0].subarray(0, size_bytes);
    const out = new Uint8Array(size_bytes);
    let done = 0;
    for (let i = 0; done < size_bytes; i++) {
      const piece = this.#chunks[i].subarray(0, size_bytes - done);
      out.set(piece, done);
      done += piece.length;
    }
    return out;
  }

  #take(size_bytes: number): Uint8Array {
    const peeked = this.#peek(size_bytes);
    // A frame inside one chunk is a view of it: copy so the message outlives the chunk.
    const out = peeked.buffer === this.#chunks[0].buffer ? peeked.slice() : peeked;
    let left = size_bytes;
    while (left > 0) {
      const head = this.#chunks[0];
      if (head.length > left) {
        this.#chunks[0] = head.subarray(left);
        break;
      }
      this.#chunks.shift();
      left -= head.length;
    }
    this.#pending_bytes -= size_bytes;
    return out;
  }
}
