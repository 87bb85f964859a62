/**
 * The frame of the pageserver protocol (`docs/pageserver_protocol.md`): little-endian
 * `magic u32 ("TPGS") | version u8 | type u8 | flags u16 | body_length u32 | body | crc32c u32`, the CRC covering
 * header and body. {@linkcode FrameSplitter} cuts a TCP stream into frames and checks each one; anything malformed
 * throws {@linkcode PageProtocolError}, after which the stream is out of step and must be closed.
 *
 * @module
 */
import { crc32c } from "../crc32c.ts";

/** `TPGS` in ASCII, read as a little-endian u32. */
export const FRAME_MAGIC = 0x53475054;
/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;
/** Bytes before the body. */
export const FRAME_HEADER_BYTES = 12;
/** Bytes after the body (the CRC32C). */
export const FRAME_TRAILER_BYTES = 4;
/** The largest body accepted: a put batch or a WAL piece stays well under it. */
export const MAX_FRAME_BODY_BYTES = 16 * 1024 * 1024;

/** Bytes that are not a valid frame or message of this protocol. */
export class PageProtocolError extends Error {
  /** @param what what is wrong with the bytes */
  constructor(what: string) {
    super(`bad pageserver protocol frame: ${what}; close the connection and check that both ends run this Tarn`);
    this.name = "PageProtocolError";
  }
}

/** One checked frame: its type code and body. */
export type Frame = { type: number; body: Uint8Array };

/** Wraps `body` in a frame of `type`. */
export function encodeFrame(type: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + body.length + FRAME_TRAILER_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, FRAME_MAGIC, true);
  view.setUint8(4, PROTOCOL_VERSION);
  view.setUint8(5, type);
  view.setUint32(8, body.length, true);
  out.set(body, FRAME_HEADER_BYTES);
  view.setUint32(FRAME_HEADER_BYTES + body.length, crc32c(out.subarray(0, FRAME_HEADER_BYTES + body.length)), true);
  return out;
}

function bodyLength(header: Uint8Array, max_body_bytes: number): number {
  const view = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES);
  const magic = view.getUint32(0, true);
  if (magic !== FRAME_MAGIC) throw new PageProtocolError(`magic 0x${magic.toString(16)}, not "TPGS"`);
  const version = view.getUint8(4);
  if (version !== PROTOCOL_VERSION) {
    throw new PageProtocolError(`protocol version ${version}, this Tarn speaks ${PROTOCOL_VERSION}`);
  }
  if (view.getUint16(6, true) !== 0) throw new PageProtocolError(`flags ${view.getUint16(6, true)}, expected 0`);
  const body_bytes = view.getUint32(8, true);
  if (body_bytes > max_body_bytes) {
    throw new PageProtocolError(`body of ${body_bytes} bytes is over the limit of ${max_body_bytes}`);
  }
  return body_bytes;
}

/**
 * Accumulates stream bytes and returns whole, checked frames. Holds at most one frame beyond what it returned; a
 * header declaring a body over the limit throws at once, before the body arrives.
 */
export class FrameSplitter {
  readonly #max_body_bytes: number;
  #buffer = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;

  /** @param max_body_bytes the largest body accepted */
  constructor(max_body_bytes = MAX_FRAME_BODY_BYTES) {
    this.#max_body_bytes = max_body_bytes;
  }

  /** Adds `chunk` (copied) and returns every frame now complete, in order. */
  push(chunk: Uint8Array): Frame[] {
    this.#append(chunk);
    const frames: Frame[] = [];
    // Each pass consumes one whole frame, so the loop is bounded by the bytes held.
    while (this.#end - this.#start >= FRAME_HEADER_BYTES) {
      const header = this.#buffer.subarray(this.#start, this.#start + FRAME_HEADER_BYTES);
      const body_bytes = bodyLength(header, this.#max_body_bytes);
      const frame_bytes = FRAME_HEADER_BYTES + body_bytes + FRAME_TRAILER_BYTES;
      if (this.#end - this.#start < frame_bytes) break;
      const frame = this.#buffer.subarray(this.#start, this.#start + frame_bytes);
      const body_end = FRAME_HEADER_BYTES + body_bytes;
      const stored = new DataView(frame.buffer, frame.byteOffset + body_end, 4).getUint32(0, true);
      const computed = crc32c(frame.subarray(0, body_end));
      if (stored !== computed) {
        throw new PageProtocolError(`checksum 0x${stored.toString(16)} does not match 0x${computed.toString(16)}`);
      }
      frames.push({ type: frame[5], body: frame.slice(FRAME_HEADER_BYTES, body_end) });
      this.#start += frame_bytes;
    }
    return frames;
  }

  #append(chunk: Uint8Array): void {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end + chunk.length > this.#buffer.length) {
      const held = this.#end - this.#start;
      const size = Math.max(this.#buffer.length, (held + chunk.length) * 2);
      const next = size > this.#buffer.length ? new Uint8Array(size) : this.#buffer;
      if (next === this.#buffer) next.copyWithin(0, this.#start, this.#end);
      else next.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = next;
      this.#start = 0;
      this.#end = held;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }
}
