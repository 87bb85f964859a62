/**
 * What `/status`, `/metrics` and `tarn status --pageserver` show of a timeline's storage: here and in the lake.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";
import type { Timelines } from "../timelines.ts";
import type { TenantUploader } from "./tenant_uploader.ts";

/**
 * A timeline's storage: here (bytes of layers and WAL, layer files, durable LSN; undefined fields for a timeline not
 * open) and in the lake (`--remote`: bytes and layers of its index, the LSN the lake holds, and how far behind it is).
 */
export type StorageReport = {
  local_bytes: number;
  layers?: number;
  /** Reads and branches below it are refused. */
  gc_cutoff_lsn?: Lsn;
  disk_consistent_lsn?: Lsn;
  remote_bytes?: number;
  remote_layers?: number;
  remote_consistent_lsn?: Lsn;
  upload_lag_bytes?: number;
};

/** The report of one timeline of `timelines`, with what `uploader` (if any) has put in the lake. */
export async function storageReport(
  timelines: Timelines,
  uploader: TenantUploader | undefined,
  timeline_id: string,
): Promise<StorageReport> {
  const pages = timelines.opened(timeline_id)?.pages;
  const remote = uploader?.state(timeline_id);
  const durable = pages?.disk_consistent_lsn;
  return {
    local_bytes: await timelines.diskBytes(timeline_id),
    layers: pages?.layer_count,
    gc_cutoff_lsn: pages?.gc_cutoff_lsn,
    disk_consistent_lsn: durable,
    remote_bytes: remote?.remote_bytes,
    remote_layers: remote?.layers,
    remote_consistent_lsn: remote?.remote_consistent_lsn,
    upload_lag_bytes: durable === undefined || remote === undefined
      ? undefined
      : Number(durable > remote.remote_consistent_lsn ? durable - remote.remote_consistent_lsn : 0n),
  };
}
