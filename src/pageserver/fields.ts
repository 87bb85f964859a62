/**
 * The fields of a pageserver message body: little-endian integers, LSNs, strings and byte strings. The writer grows
 * as it goes; the reader checks bounds and throws {@linkcode PageProtocolError} instead of reading past the end.
 *
 * @module
 */
import { PageProtocolError } from "./frames.ts";

/** The longest string field (a path, a tenant or branch name, an error message), in bytes. */
export const MAX_STRING_BYTES = 4096;
const TIMELINE_ID = /^[0-9a-f]{32}$/;

/** Writes fields into a buffer that grows. */
export class FieldWriter {
  #bytes: Uint8Array;
  #view: DataView;
  #at = 0;

  /** @param size_hint expected size in bytes */
  constructor(size_hint = 256) {
    this.#bytes = new Uint8Array(size_hint);
    this.#view = new DataView(this.#bytes.buffer);
  }

  #room(size_bytes: number): number {
    if (this.#at + size_bytes > this.#bytes.length) {
      const next = new Uint8Array(Math.max(this.#bytes.length * 2, this.#at + size_bytes));
      next.set(this.#bytes.subarray(0, this.#at));
      this.#bytes = next;
      this.#view = new DataView(next.buffer);
    }
    const at = this.#at;
    this.#at += size_bytes;
    return at;
  }

  /** Bytes written so far. */
  get size_bytes(): number {
    return this.#at;
  }

  /** One byte. */
  u8(value: number): this {
    const at = this.#room(1); // first: it may replace the buffer
    this.#view.setUint8(at, value);
    return this;
  }

  /** A u16. */
  u16(value: number): this {
    const at = this.#room(2); // first: it may replace the buffer
    this.#view.setUint16(at, value, true);
    return this;
  }

  /** A u32. */
  u32(value: number): this {
    const at = this.#room(4); // first: it may replace the buffer
    this.#view.setUint32(at, value, true);
    return this;
  }

  /** A u64 (an LSN, a term, a size). */
  u64(value: bigint): this {
    const at = this.#room(8); // first: it may replace the buffer
    this.#view.setBigUint64(at, value, true);
    return this;
  }

  /** Bytes as they are (the reader knows their length). */
  raw(bytes: Uint8Array): this {
    const at = this.#room(bytes.length); // first: it may replace the buffer
    this.#bytes.set(bytes, at);
    return this;
  }

  /** Bytes with a u32 length before them. */
  bytes(bytes: Uint8Array): this {
    return this.u32(bytes.length).raw(bytes);
  }

  /** A UTF-8 string with a u16 length before it. */
  str(text: string): this {
    const encoded = new TextEncoder().encode(text);
    if (encoded.length > MAX_STRING_BYTES) throw new RangeError(`string field of ${encoded.length} bytes`);
    return this.u16(encoded.length).raw(encoded);
  }

  /** A timeline id: 16 bytes. */
  timeline(timeline_id: string): this {
    if (!TIMELINE_ID.test(timeline_id)) throw new RangeError(`timeline id ${timeline_id} is not 32 hex digits`);
    for (let i = 0; i < 32; i += 2) this.u8(parseInt(timeline_id.slice(i, i + 2), 16));
    return this;
  }

  /** The body written. */
  finish(): Uint8Array {
    return this.#bytes.subarray(0, this.#at);
  }
}

/** Reads fields, throwing {@linkcode PageProtocolError} instead of reading past the end. */
export class FieldReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #at = 0;

  /** @param bytes a frame body */
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  #take(size_bytes: number, what: string): number {
    if (this.#bytes.length - this.#at < size_bytes) {
      throw new PageProtocolError(`body ends inside ${what} (byte ${this.#at} of ${this.#bytes.length})`);
    }
    const at = this.#at;
    this.#at += size_bytes;
    return at;
  }

  /** Bytes not read yet. */
  get left_bytes(): number {
    return this.#bytes.length - this.#at;
  }

  /** One byte; `what` names the field in an error. */
  u8(what: string): number {
    return this.#view.getUint8(this.#take(1, what));
  }

  /** A u16. */
  u16(what: string): number {
    return this.#view.getUint16(this.#take(2, what), true);
  }

  /** A u32. */
  u32(what: string): number {
    return this.#view.getUint32(this.#take(4, what), true);
  }

  /** A u64. */
  u64(what: string): bigint {
    return this.#view.getBigUint64(this.#take(8, what), true);
  }

  /** `size_bytes` bytes, as a view of the body (copy to keep them past the body's life). */
  raw(size_bytes: number, what: string): Uint8Array {
    const at = this.#take(size_bytes, what);
    return this.#bytes.subarray(at, at + size_bytes);
  }

  /** Bytes with a u32 length before them. */
  bytes(what: string): Uint8Array {
    return this.raw(this.u32(`${what} length`), what);
  }

  /** A UTF-8 string with a u16 length before it. */
  str(what: string): string {
    const size_bytes = this.u16(`${what} length`);
    if (size_bytes > MAX_STRING_BYTES) throw new PageProtocolError(`${what} of ${size_bytes} bytes`);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(this.raw(size_bytes, what));
    } catch (error) {
      if (error instanceof PageProtocolError) throw error;
      throw new PageProtocolError(`${what} is not UTF-8`);
    }
  }

  /** A timeline id (16 bytes) as 32 lower-case hex digits. */
  timeline(what: string): string {
    const raw = this.raw(16, what);
    let id = "";
    for (const byte of raw) id += byte.toString(16).padStart(2, "0");
    return id;
  }

  /** Checks that the whole body was read. */
  end(): void {
    if (this.#at !== this.#bytes.length) {
      throw new PageProtocolError(`${this.#bytes.length - this.#at} bytes left over after the message`);
    }
  }
}
