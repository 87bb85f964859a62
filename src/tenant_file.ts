/**
 * `tarn.json`: what a data directory holds (format version, root timeline, WAL segment size), written last when a
 * directory is created, so a directory without it is an unfinished creation. Format in `docs/data_directory.md`.
 *
 * @module
 */
import { crc32c } from "./crc32c.ts";
import { CorruptDataError } from "./errors.ts";

/** The format version this code writes and reads. */
export const TENANT_FORMAT_VERSION = 1;

/** The contents of `tarn.json`. */
export type TenantFile = {
  /** Format version of the whole directory. */
  format_version: number;
  /** The root timeline (branch `main`), 32 hex characters. */
  timeline_id: string;
  /** WAL segment size in bytes, from pg_control. */
  segment_size: number;
  /** When the database was created (ISO 8601). */
  created_at: string;
};

/** A new random timeline id: 32 hex characters, as Neon's. */
export function newTimelineId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads `tarn.json`; undefined when absent; {@linkcode CorruptDataError} when damaged or of another version. */
export async function readTenantFile(dir: string): Promise<TenantFile | undefined> {
  const path = `${dir}/tarn.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  let parsed: { tenant: TenantFile; crc32c: number };
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new CorruptDataError(path, "not JSON");
  }
  if (crc32c(new TextEncoder().encode(JSON.stringify(parsed.tenant))) !== parsed.crc32c) {
    throw new CorruptDataError(path, "checksum mismatch");
  }
  if (parsed.tenant.format_version !== TENANT_FORMAT_VERSION) {
    throw new CorruptDataError(path, `format version ${parsed.tenant.format_version}, this Tarn reads 1`);
  }
  return parsed.tenant;
}

/** Writes `tarn.json` atomically and durably (temporary file, fsync, rename, directory fsync). */
export async function writeTenantFile(dir: string, tenant: TenantFile): Promise<void> {
  const body = JSON.stringify(tenant);
  const text = JSON.stringify({ tenant, crc32c: crc32c(new TextEncoder().encode(body)) }, null, 2) + "\n";
  const tmp = `${dir}/tarn.json.tmp`;
  await Deno.writeTextFile(tmp, text);
  const file = await Deno.open(tmp, { read: true, write: true });
  await file.sync();
  file.close();
  await Deno.rename(tmp, `${dir}/tarn.json`);
  await syncDir(dir);
}

/** fsyncs a directory so that a rename in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await Deno.open(dir, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}
