/**
 * A synchronous zstd wrapper over `zstd-codec` (Emscripten). Call {@linkcode initZstd} once before the rest.
 * The codec's WASM heap runs out above ~8 MB of input, so inputs are limited to {@linkcode ZSTD_MAX_INPUT_BYTES}.
 *
 * @module
 */
import assert from "node:assert";
import { ZstdCodec } from "zstd-codec";

/** The largest input either function accepts (1 MiB): callers compress in blocks of at most this. */
export const ZSTD_MAX_INPUT_BYTES = 1 << 20;

/** zstd's default level: fast and already far smaller than raw for page data. */
const LEVEL = 3;

type Simple = {
  compress(bytes: Uint8Array, level: number): Uint8Array | null;
  decompress(bytes: Uint8Array): Uint8Array | null;
};

let simple: Simple | undefined;
let starting: Promise<void> | undefined;

/** Thrown when bytes do not decompress to the expected length (they are not what the compressor wrote). */
export class ZstdError extends Error {
  /** @param message what went wrong */
  constructor(message: string) {
    super(message);
    this.name = "ZstdError";
  }
}

/** Loads the codec; later calls return at once. Must resolve before {@linkcode zstdCompress} is used. */
export function initZstd(): Promise<void> {
  starting ??= new Promise<void>((resolve) => {
    ZstdCodec.run((zstd: { Simple: new () => Simple }) => {
      simple = new zstd.Simple();
      resolve();
    });
  });
  return starting;
}

function codec(): Simple {
  assert(simple !== undefined, "zstd: await initZstd() before compressing");
  return simple;
}

/** zstd frame of `bytes` (at most {@linkcode ZSTD_MAX_INPUT_BYTES}). */
export function zstdCompress(bytes: Uint8Array): Uint8Array {
  assert(bytes.length <= ZSTD_MAX_INPUT_BYTES, `zstd: ${bytes.length} bytes exceeds the 1 MiB block limit`);
  const out = codec().compress(bytes, LEVEL);
  if (out === null) throw new ZstdError(`zstd: compressing ${bytes.length} bytes failed`);
  return out;
}

/** The `raw_len` bytes a zstd frame decompresses to; throws {@linkcode ZstdError} if it does not. */
export function zstdDecompress(bytes: Uint8Array, raw_len: number): Uint8Array {
  assert(raw_len >= 0 && raw_len <= ZSTD_MAX_INPUT_BYTES, `zstd: raw length ${raw_len} exceeds the 1 MiB limit`);
  // The codec reports an empty frame as a failure (its content size 0 is falsy): nothing to decode anyway.
  if (raw_len === 0) return new Uint8Array(0);
  const out = codec().decompress(bytes);
  if (out === null || out.length !== raw_len) {
    throw new ZstdError(`zstd: frame does not decompress to ${raw_len} bytes`);
  }
  return out;
}
