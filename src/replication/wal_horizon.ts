/**
 * The WAL horizon in the lake: how far a pageserver holds a timeline in the lake (its `remote_consistent_lsn`), so
 * that safekeepers know which WAL nobody will ask them for again. The pageserver writes it next to the safekeepers'
 * offloaded segments, `wal/<tenant>/<timeline>/pageserver.json`, after each index it uploads; a safekeeper reads it
 * and deletes local WAL only below min(it, what it offloaded, its commit LSN). Checked JSON as `tarn.json`:
 * `{ "horizon": { "format_version": 1, "remote_consistent_lsn": "X/Y" }, "crc32c": N }`.
 *
 * @module
 */
import { crc32c } from "../crc32c.ts";
import { CorruptDataError } from "../errors.ts";
import { formatLsn, type Lsn, parseLsn } from "../lsn.ts";

/** The format version this code writes and reads. */
export const WAL_HORIZON_FORMAT_VERSION = 1;

type Horizon = { format_version: number; remote_consistent_lsn: string };

/** The key of a timeline's horizon object. */
export function walHorizonKey(tenant_id: string, timeline_id: string): string {
  return `wal/${tenant_id}/${timeline_id}/pageserver.json`;
}

/** The object saying the lake holds the timeline up to `remote_consistent_lsn`. */
export function encodeWalHorizon(remote_consistent_lsn: Lsn): Uint8Array {
  const horizon: Horizon = {
    format_version: WAL_HORIZON_FORMAT_VERSION,
    remote_consistent_lsn: formatLsn(remote_consistent_lsn),
  };
  const body = new TextEncoder().encode(JSON.stringify(horizon));
  return new TextEncoder().encode(JSON.stringify({ horizon, crc32c: crc32c(body) }));
}

/** The LSN in a horizon object; {@linkcode CorruptDataError} naming `key` when it is damaged or of another version. */
export function decodeWalHorizon(key: string, bytes: Uint8Array): Lsn {
  let parsed: { horizon?: Horizon; crc32c?: number };
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new CorruptDataError(`WAL horizon object ${key}`, "not JSON");
  }
  const horizon = parsed.horizon;
  if (horizon === undefined || crc32c(new TextEncoder().encode(JSON.stringify(horizon))) !== parsed.crc32c) {
    throw new CorruptDataError(`WAL horizon object ${key}`, "checksum mismatch");
  }
  if (horizon.format_version !== WAL_HORIZON_FORMAT_VERSION) {
    throw new CorruptDataError(`WAL horizon object ${key}`, `format version ${horizon.format_version}`);
  }
  return parseLsn(horizon.remote_consistent_lsn);
}
