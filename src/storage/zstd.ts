/**
 * zstd for layer blocks, through Deno's built-in `node:zlib` (native libzstd). `bench/zstd_codecs.ts` measured it
 * against the `zstd-codec` package (Emscripten) on our layer blocks: the same ratio, about 2x faster compression and
 * 25-50% less time to decompress one 64 KiB block, and each reads the other's frames, so older layer files stay
 * readable. Frames carry their content size (`pledgedSrcSize`), as the older codec requires to read them.
 *
 * @module
 */
import assert from "node:assert";
import { constants, zstdCompressSync, zstdDecompressSync, type ZstdOptions } from "node:zlib";

/** The largest input either function accepts (1 MiB): callers compress in blocks of at most this. */
export const ZSTD_MAX_INPUT_BYTES = 1 << 20;

/** zstd's default level: fast and already far smaller than raw for page data. */
const LEVEL = 3;
/** node:zlib's smallest output chunk. */
const MIN_CHUNK_BYTES = 64;

/** Thrown when bytes do not decompress to the expected length (they are not what the compressor wrote). */
export class ZstdError extends Error {
  /** @param message what went wrong */
  constructor(message: string) {
    super(message);
    this.name = "ZstdError";
  }
}

/** zstd frame of `bytes` (at most {@linkcode ZSTD_MAX_INPUT_BYTES}), its content size in the header. */
export function zstdCompress(bytes: Uint8Array): Uint8Array {
  assert(bytes.length <= ZSTD_MAX_INPUT_BYTES, `zstd: ${bytes.length} bytes exceeds the 1 MiB block limit`);
  // Deno's ZstdOptions type lacks pledgedSrcSize, which it honours.
  const options: ZstdOptions & { pledgedSrcSize: number } = {
    params: { [constants.ZSTD_c_compressionLevel]: LEVEL },
    pledgedSrcSize: bytes.length,
  };
  const out = zstdCompressSync(bytes, options);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** The `raw_len` bytes a zstd frame decompresses to; throws {@linkcode ZstdError} if it does not. */
export function zstdDecompress(bytes: Uint8Array, raw_len: number): Uint8Array {
  assert(raw_len >= 0 && raw_len <= ZSTD_MAX_INPUT_BYTES, `zstd: raw length ${raw_len} exceeds the 1 MiB limit`);
  if (raw_len === 0) return new Uint8Array(0);
  let out: Uint8Array;
  try {
    // One output chunk of the known size; a damaged frame cannot make it allocate more than that.
    out = zstdDecompressSync(bytes, { chunkSize: Math.max(raw_len, MIN_CHUNK_BYTES), maxOutputLength: raw_len });
  } catch (error) {
    throw new ZstdError(`zstd: frame does not decompress to ${raw_len} bytes (${(error as Error).message})`);
  }
  if (out.length !== raw_len) throw new ZstdError(`zstd: frame decompresses to ${out.length}, not ${raw_len} bytes`);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
