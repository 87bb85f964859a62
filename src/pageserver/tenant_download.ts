/**
 * Brings a tenant that is in the lake but not on this pageserver's disk back to its directory (disaster recovery,
 * or a tenant moved to another pageserver): its metadata files from the newest tenant index, each timeline's layers
 * from the newest timeline index (checked against their CRC32C), and each timeline's WAL from what the safekeepers
 * offloaded. `tarn.json` is written last, so a download that stops half-way is an unfinished creation, removed at
 * the next start like any other.
 *
 * @module
 */
import { syncDir } from "../checked_json.ts";
import { crc32c } from "../crc32c.ts";
import { CorruptDataError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import { formatLsn } from "../lsn.ts";
import type { RemoteStorage } from "../remote_storage/mod.ts";
import { readOffloadedWal } from "../replication/safekeeper/wal_offload.ts";
import { WalLog } from "../replication/wal_log.ts";
import { BranchCatalog } from "../storage/branch_catalog.ts";
import { GC_STATE_FILE } from "../storage/gc_state.ts";
import type { TenantFile } from "../tenant_file.ts";
import {
  decodeIndex,
  layerKey,
  newestIndexKey,
  type TenantIndex,
  tenantPrefix,
  type TimelineIndex,
} from "./remote_index.ts";

/** What a download brought back, for the log. */
export type DownloadSummary = { timelines: number; layers: number; bytes: number };

/**
 * Downloads tenant `tenant` into `dir`, which must not hold it yet. Undefined when the lake has no index for it.
 */
export async function downloadTenant(
  store: RemoteStorage,
  tenant: string,
  dir: string,
  log: Logger,
): Promise<DownloadSummary | undefined> {
  const key = newestIndexKey(await store.list(`${tenantPrefix(tenant)}tenant-`), "tenant");
  if (key === undefined) return undefined;
  const bytes = await store.get(key);
  if (bytes === undefined) return undefined;
  const index = decodeIndex<TenantIndex>(key, bytes);
  const tenant_text = index.files["tarn.json"];
  if (tenant_text === undefined) throw new CorruptDataError(`index object ${key}`, "no tarn.json in it");
  const file = JSON.parse(tenant_text).tenant as TenantFile;
  await Deno.mkdir(dir, { recursive: true });
  for (const name of ["branches.json", "config.json"]) {
    if (index.files[name] !== undefined) await Deno.writeTextFile(`${dir}/${name}`, index.files[name]);
  }
  const catalog = await BranchCatalog.open(dir, file.timeline_id, new Date(file.created_at));
  const summary: DownloadSummary = { timelines: 0, layers: 0, bytes: 0 };
  for (const branch of catalog.list()) {
    const got = await downloadTimeline(store, tenant, `${dir}/timelines/${branch.timeline_id}`, branch.timeline_id);
    summary.timelines++;
    summary.layers += got.layers;
    summary.bytes += got.bytes;
    const wal = await WalLog.open({ dir: `${dir}/timelines/${branch.timeline_id}`, segment_size: file.segment_size });
    try {
      for await (const piece of readOffloadedWal(store, file.timeline_id, branch.timeline_id, log)) {
        if (wal.end_lsn !== 0n && piece.lsn_start !== wal.end_lsn) continue; // already held
        wal.append(piece.lsn_start, piece.bytes);
        summary.bytes += piece.bytes.length;
      }
      await wal.flush();
      log("timeline_downloaded", {
        tenant,
        timeline_id: branch.timeline_id,
        layers: got.layers,
        disk_consistent_lsn: got.disk_consistent_lsn,
        wal_start: formatLsn(wal.start_lsn),
        wal_end: formatLsn(wal.end_lsn),
      });
    } finally {
      await wal.close();
    }
  }
  await Deno.writeTextFile(`${dir}/tarn.json.tmp`, tenant_text);
  await Deno.rename(`${dir}/tarn.json.tmp`, `${dir}/tarn.json`);
  await syncDir(dir);
  log("tenant_downloaded", { tenant, from: store.url, generation: index.generation, ...summary });
  return summary;
}

/** Downloads the layers of a timeline's newest index into `layer_dir`. */
async function downloadTimeline(
  store: RemoteStorage,
  tenant: string,
  layer_dir: string,
  timeline_id: string,
): Promise<{ layers: number; bytes: number; disk_consistent_lsn: string }> {
  await Deno.mkdir(layer_dir, { recursive: true });
  const key = newestIndexKey(await store.list(`${tenantPrefix(tenant)}timelines/${timeline_id}/index-`), "index");
  if (key === undefined) return { layers: 0, bytes: 0, disk_consistent_lsn: "0/0" };
  const bytes = await store.get(key);
  if (bytes === undefined) throw new CorruptDataError(`index object ${key}`, "listed but gone");
  const index = decodeIndex<TimelineIndex>(key, bytes);
  let total = 0;
  for (const layer of index.layers) {
    const object_key = layerKey(tenant, timeline_id, layer);
    const body = await store.get(object_key);
    if (body === undefined) throw new CorruptDataError(`layer object ${object_key}`, `listed by ${key} but missing`);
    if (body.length !== layer.size_bytes || crc32c(body) !== layer.crc32c) {
      throw new CorruptDataError(`layer object ${object_key}`, "size or CRC32C differs from its index");
    }
    const path = `${layer_dir}/${layer.name}`;
    await Deno.writeFile(`${path}.tmp`, body);
    const file = await Deno.open(`${path}.tmp`, { read: true, write: true });
    await file.sync().finally(() => file.close());
    await Deno.rename(`${path}.tmp`, path);
    total += body.length;
  }
  if (index.gc !== undefined) await Deno.writeTextFile(`${layer_dir}/${GC_STATE_FILE}`, index.gc);
  await syncDir(layer_dir);
  return { layers: index.layers.length, bytes: total, disk_consistent_lsn: index.disk_consistent_lsn };
}
