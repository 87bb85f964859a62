/**
 * The fields of a frame body: little-endian integers, flags, ids and term histories, read with bounds checks that
 * throw {@linkcode ProtocolFormatError} instead of reading past the end.
 *
 * @module
 */
import { ID_PATTERN, MAX_TERM_HISTORY } from "./messages.ts";
import { type TermHistory, termHistoryProblem } from "./term_history.ts";

/** Bytes that are not a valid frame of this protocol: the peer is broken or not a Tarn safekeeper peer. */
export class ProtocolFormatError extends Error {
  /** @param what what is wrong with the bytes */
  constructor(what: string) {
    super(`bad safekeeper protocol frame: ${what}; close the connection and check that both ends run this Tarn`);
    this.name = "ProtocolFormatError";
  }
}

/** Writes little-endian fields into a buffer sized up front. */
export class Writer {
  /** The buffer written into. */
  readonly bytes: Uint8Array;
  readonly #view: DataView;
  /** The offset of the next field. */
  at = 0;

  /** @param size_bytes the exact size of what will be written */
  constructor(size_bytes: number) {
    this.bytes = new Uint8Array(size_bytes);
    this.#view = new DataView(this.bytes.buffer);
  }

  /** Writes one byte. */
  u8(value: number): void {
    this.#view.setUint8(this.at++, value);
  }

  /** Writes a u32. */
  u32(value: number): void {
    this.#view.setUint32(this.at, value, true);
    this.at += 4;
  }

  /** Writes a u64. */
  u64(value: bigint): void {
    this.#view.setBigUint64(this.at, value, true);
    this.at += 8;
  }

  /** Copies `bytes` in. */
  raw(bytes: Uint8Array): void {
    this.bytes.set(bytes, this.at);
    this.at += bytes.length;
  }

  /** An id: u8 length, then its ASCII bytes (the caller checked it against `ID_PATTERN`). */
  id(id: string): void {
    this.u8(id.length);
    for (let i = 0; i < id.length; i++) this.u8(id.charCodeAt(i));
  }

  /** A term history: u32 count, then (term u64, start_lsn u64) per switch. */
  history(history: TermHistory): void {
    this.u32(history.length);
    for (const entry of history) {
      this.u64(entry.term);
      this.u64(entry.start_lsn);
    }
  }
}

/** Reads little-endian fields, throwing {@linkcode ProtocolFormatError} instead of reading past the end. */
export class Reader {
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
      throw new ProtocolFormatError(`body ends inside ${what} (byte ${this.#at} of ${this.#bytes.length})`);
    }
    const at = this.#at;
    this.#at += size_bytes;
    return at;
  }

  /** Reads one byte; `what` names the field in the error. */
  u8(what: string): number {
    return this.#view.getUint8(this.#take(1, what));
  }

  /** Reads a u32. */
  u32(what: string): number {
    return this.#view.getUint32(this.#take(4, what), true);
  }

  /** Reads a u64. */
  u64(what: string): bigint {
    return this.#view.getBigUint64(this.#take(8, what), true);
  }

  /** Reads a byte that must be 0 or 1. */
  flag(what: string): boolean {
    const value = this.u8(what);
    if (value > 1) throw new ProtocolFormatError(`${what} is ${value}, not 0 or 1`);
    return value === 1;
  }

  /** Reads `size_bytes` bytes, copied (they outlive the frame). */
  raw(size_bytes: number, what: string): Uint8Array {
    const at = this.#take(size_bytes, what);
    return this.#bytes.slice(at, at + size_bytes);
  }

  /** Reads an id (u8 length, ASCII bytes) and checks it against `ID_PATTERN`. */
  id(what: string): string {
    const size_bytes = this.u8(`${what} length`);
    const id = String.fromCharCode(...this.raw(size_bytes, what));
    if (!ID_PATTERN.test(id)) {
      throw new ProtocolFormatError(`${what} ${JSON.stringify(id)} is not 1-64 of [A-Za-z0-9_-]`);
    }
    return id;
  }

  /** Reads a term history and checks its rules (at most `MAX_TERM_HISTORY` switches, terms increasing). */
  history(): TermHistory {
    const count = this.u32("term history length");
    if (count > MAX_TERM_HISTORY) throw new ProtocolFormatError(`term history of ${count} switches`);
    if (count * 16 > this.#bytes.length - this.#at) {
      throw new ProtocolFormatError(`term history of ${count} switches does not fit the body`);
    }
    const history = [];
    for (let i = 0; i < count; i++) history.push({ term: this.u64("term"), start_lsn: this.u64("term start LSN") });
    const problem = termHistoryProblem(history);
    if (problem !== undefined) throw new ProtocolFormatError(`term history: ${problem}`);
    return history;
  }

  /** Checks that the whole body was read. */
  end(): void {
    if (this.#at !== this.#bytes.length) {
      throw new ProtocolFormatError(`${this.#bytes.length - this.#at} bytes left over after the message`);
    }
  }
}
