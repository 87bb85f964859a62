/**
 * The WAL horizon in the lake: how far a pageserver holds a timeline in the lake (its `remote_consistent_lsn`), so
 * that safekeepers know which WAL nobody will ask them for again. The pageserver writes it next to the safekeepers'
 * offloaded segments, `wal/<tenant>/<timeline>/pageserver.json`, after each index it uploads; a safekeeper reads it
 * and deletes local WAL only below min(it, what it offloaded, its commit LSN). Checked JSON as `tarn.json`:
 * `{ "horizon": { "format_version": 1, "remote_consistent_lsn": "X/Y" }, "crc32c": N }`.
 *
 * @module
 */
import { decodeCheckedJson, encodeCheckedJson } from "../checked_json.ts";
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
  return encodeCheckedJson("horizon", horizon);
}

/** The LSN in a horizon object; {@linkcode CorruptDataError} naming `key` when it is damaged or of another version. */
export function decodeWalHorizon(key: string, bytes: Uint8Array): Lsn {
  const what = `WAL horizon object ${key}`;
  return parseLsn(decodeCheckedJson<Horizon>(what, "horizon", WAL_HORIZON_FORMAT_VERSION, bytes).remote_consistent_lsn);
}
