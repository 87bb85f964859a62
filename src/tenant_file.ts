/**
 * `tarn.json`: what a data directory holds (format version, root timeline, WAL segment size), written last when a
 * directory is created, so a directory without it is an unfinished creation. Format in `docs/data_directory.md`.
 *
 * @module
 */
import { readCheckedJson, writeCheckedJson } from "./checked_json.ts";

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

/** Reads `tarn.json`; undefined when absent; `CorruptDataError` when damaged or of another version. */
export async function readTenantFile(dir: string): Promise<TenantFile | undefined> {
  return await readCheckedJson<TenantFile>(`${dir}/tarn.json`, "tenant", TENANT_FORMAT_VERSION);
}

/** Writes `tarn.json` atomically and durably. */
export async function writeTenantFile(dir: string, tenant: TenantFile): Promise<void> {
  await writeCheckedJson(`${dir}/tarn.json`, "tenant", tenant);
}
