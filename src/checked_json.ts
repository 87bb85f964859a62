/**
 * Small metadata files (`tarn.json`, `branches.json`): JSON as `{ "<key>": value, "crc32c": N }`, where N is the
 * CRC32C of `JSON.stringify(value)`, with `value.format_version` checked on read; written atomically and durably.
 *
 * @module
 */
import { crc32c } from "./crc32c.ts";
import { CorruptDataError } from "./errors.ts";

/** Reads `path`; undefined when it does not exist; {@linkcode CorruptDataError} when damaged or of another version. */
export async function readCheckedJson<T extends { format_version: number }>(
  path: string,
  key: string,
  format_version: number,
): Promise<T | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  return decodeCheckedJson<T>(path, key, format_version, bytes);
}

/** `{ key: value, crc32c }` as UTF-8 bytes, one line: what an object in the lake holds. */
export function encodeCheckedJson(key: string, value: unknown): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(value));
  return new TextEncoder().encode(JSON.stringify({ [key]: value, crc32c: crc32c(body) }));
}

/**
 * The value under `key` in checked JSON bytes; {@linkcode CorruptDataError} naming `what` when they are not JSON,
 * fail their CRC32C, or hold another `format_version`.
 */
export function decodeCheckedJson<T extends { format_version: number }>(
  what: string,
  key: string,
  format_version: number,
  bytes: Uint8Array,
): T {
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new CorruptDataError(what, "not JSON");
  }
  const value = parsed[key] as T | undefined;
  if (value === undefined || crc32c(new TextEncoder().encode(JSON.stringify(value))) !== parsed.crc32c) {
    throw new CorruptDataError(what, "checksum mismatch");
  }
  if (value.format_version !== format_version) {
    throw new CorruptDataError(what, `format version ${value.format_version}, this Tarn reads ${format_version}`);
  }
  return value;
}

/** Writes `{ key: value, crc32c }` to `path` atomically: temporary file, fsync, rename, directory fsync. */
export async function writeCheckedJson(path: string, key: string, value: unknown): Promise<void> {
  const body = JSON.stringify(value);
  const text = JSON.stringify({ [key]: value, crc32c: crc32c(new TextEncoder().encode(body)) }, null, 1) + "\n";
  const tmp = `${path}.tmp`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await file.write(new TextEncoder().encode(text));
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(tmp, path);
  await syncDir(path.slice(0, Math.max(0, path.lastIndexOf("/"))) || ".");
}

/** fsync of a directory, so that a rename or unlink in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}
