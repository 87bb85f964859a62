/**
 * Brings a tenant that is in the lake but not on this pageserver's disk back to its directory (disaster recovery,
 * or a tenant moved to another pageserver): its metadata files from the newest tenant index, each timeline's GC state
 * and its WAL from what the safekeepers offloaded. `tarn.json` is written last, so a download that stops half-way is
 * an unfinished creation, removed at the next start like any other. A timeline's layers come when it is first opened
 * ({@linkcode fetchLayers}, checked against their CRC32C): the local disk is a cache of the lake.
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
export type DownloadSummary = { timelines: number; wal_bytes: number };

/**
 * Downloads tenant `tenant` into `dir`, which must not hold it yet: its metadata, and per timeline its GC state and
 * its WAL. Layers stay in the lake until a timeline is first opened ({@linkcode fetchLayers}). Undefined when the
 * lake has no index for the tenant.
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
  const summary: DownloadSummary = { timelines: 0, wal_bytes: 0 };
  for (const branch of catalog.list()) {
    const timeline_dir = `${dir}/timelines/${branch.timeline_id}`;
    await Deno.mkdir(timeline_dir, { recursive: true });
    const timeline_index = await newestTimelineIndex(store, tenant, branch.timeline_id);
    if (timeline_index?.gc !== undefined) {
      await Deno.writeTextFile(`${timeline_dir}/${GC_STATE_FILE}`, timeline_index.gc);
    }
    summary.timelines++;
    summary.wal_bytes += await downloadWal(store, file, branch.timeline_id, timeline_dir, log);
  }
  await Deno.writeTextFile(`${dir}/tarn.json.tmp`, tenant_text);
  await Deno.rename(`${dir}/tarn.json.tmp`, `${dir}/tarn.json`);
  await syncDir(dir);
  log("tenant_downloaded", { tenant, from: store.url, generation: index.generation, ...summary });
  return summary;
}

/** The timeline's WAL as the safekeepers offloaded it, into its local log; resolves with the bytes. */
async function downloadWal(
  store: RemoteStorage,
  file: TenantFile,
  timeline_id: string,
  timeline_dir: string,
  log: Logger,
): Promise<number> {
  let bytes = 0;
  const wal = await WalLog.open({ dir: timeline_dir, segment_size: file.segment_size });
  try {
    for await (const piece of readOffloadedWal(store, file.timeline_id, timeline_id, log)) {
      if (wal.end_lsn !== 0n && piece.lsn_start !== wal.end_lsn) continue; // already held
      wal.append(piece.lsn_start, piece.bytes);
      bytes += piece.bytes.length;
    }
    await wal.flush();
    log("timeline_wal_downloaded", {
      timeline_id,
      wal_start: formatLsn(wal.start_lsn),
      wal_end: formatLsn(wal.end_lsn),
    });
  } finally {
    await wal.close();
  }
  return bytes;
}

/** The newest index of a timeline in the lake, if any. */
export async function newestTimelineIndex(
  store: RemoteStorage,
  tenant: string,
  timeline_id: string,
): Promise<TimelineIndex | undefined> {
  const key = newestIndexKey(await store.list(`${tenantPrefix(tenant)}timelines/${timeline_id}/index-`), "index");
  if (key === undefined) return undefined;
  const bytes = await store.get(key);
  if (bytes === undefined) throw new CorruptDataError(`index object ${key}`, "listed but gone");
  return decodeIndex<TimelineIndex>(key, bytes);
}

/**
 * Downloads the layers `index` lists that `layer_dir` does not hold (size and CRC32C checked against the index);
 * resolves with how many and their bytes.
 */
export async function fetchLayers(
  store: RemoteStorage,
  tenant: string,
  layer_dir: string,
  index: TimelineIndex,
): Promise<{ layers: number; bytes: number }> {
  await Deno.mkdir(layer_dir, { recursive: true });
  let layers = 0;
  let bytes = 0;
  for (const layer of index.layers) {
    const path = `${layer_dir}/${layer.name}`;
    if (await exists(path)) continue;
    const object_key = layerKey(tenant, index.timeline_id, layer);
    const body = await store.get(object_key);
    if (body === undefined) throw new CorruptDataError(`layer object ${object_key}`, "listed by its index but missing");
    if (body.length !== layer.size_bytes || crc32c(body) !== layer.crc32c) {
      throw new CorruptDataError(`layer object ${object_key}`, "size or CRC32C differs from its index");
    }
    await Deno.writeFile(`${path}.tmp`, body);
    const file = await Deno.open(`${path}.tmp`, { read: true, write: true });
    await file.sync().finally(() => file.close());
    await Deno.rename(`${path}.tmp`, path);
    layers++;
    bytes += body.length;
  }
  if (layers > 0) await syncDir(layer_dir);
  return { layers, bytes };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
