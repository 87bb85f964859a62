/**
 * Files that live only in the compute's memory (see `file_class.ts`): sparse, so that a 16 MB `xlogtemp` file
 * extended by one byte at its end costs nothing.
 *
 * @module
 */

const CHUNK_BYTES = 65536;

/** One sparse in-memory file. */
export class EphemeralFile {
  #chunks = new Map<number, Uint8Array>();
  /** The file's size in bytes. */
  size_bytes = 0;

  /** Copies up to `length` bytes at `position` into `target[offset..]`; returns the bytes read. */
  read(target: Uint8Array, offset: number, length: number, position: number): number {
    const end = Math.min(position + length, this.size_bytes);
    let done = 0;
    for (let at = position; at < end;) {
      const index = Math.floor(at / CHUNK_BYTES);
      const within = at - index * CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - within, end - at);
      const chunk = this.#chunks.get(index);
      if (chunk === undefined) target.fill(0, offset + done, offset + done + n);
      else target.set(chunk.subarray(within, within + n), offset + done);
      at += n;
      done += n;
    }
    return done;
  }

  /** Writes `bytes` at `position`, growing the file; all-zero chunks that do not exist stay holes. */
  write(bytes: Uint8Array, position: number): void {
    let done = 0;
    while (done < bytes.length) {
      const at = position + done;
      const index = Math.floor(at / CHUNK_BYTES);
      const within = at - index * CHUNK_BYTES;
      const n = Math.min(CHUNK_BYTES - within, bytes.length - done);
      const part = bytes.subarray(done, done + n);
      let chunk = this.#chunks.get(index);
      if (chunk === undefined && !part.every((b) => b === 0)) {
        chunk = new Uint8Array(CHUNK_BYTES);
        this.#chunks.set(index, chunk);
      }
      chunk?.set(part, within);
      done += n;
    }
    this.size_bytes = Math.max(this.size_bytes, position + bytes.length);
  }

  /** A copy that shares nothing with this file. */
  clone(): EphemeralFile {
    const copy = new EphemeralFile();
    for (const [index, chunk] of this.#chunks) copy.#chunks.set(index, chunk.slice());
    copy.size_bytes = this.size_bytes;
    return copy;
  }

  /** True when no byte of the file was ever written with a non-zero value (a hole-only file). */
  isAllZero(): boolean {
    for (const chunk of this.#chunks.values()) if (!chunk.every((b) => b === 0)) return false;
    return true;
  }

  /** Sets the size; bytes past a shrink read as zeros if the file grows again. */
  truncate(size_bytes: number): void {
    for (const [index, chunk] of this.#chunks) {
      const start = index * CHUNK_BYTES;
      if (start >= size_bytes) this.#chunks.delete(index);
      else if (start + CHUNK_BYTES > size_bytes) chunk.fill(0, size_bytes - start);
    }
    this.size_bytes = size_bytes;
  }
}
