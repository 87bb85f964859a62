/**
 * CRC32C (Castagnoli), the checksum of every Tarn on-disk and on-wire format.
 *
 * @module
 */
import { crc32c as crc32cImpl } from "@aws-crypto/crc32c";

/** CRC32C of `bytes`, as an unsigned 32-bit number. */
export function crc32c(bytes: Uint8Array): number {
  return crc32cImpl(bytes) >>> 0;
}
