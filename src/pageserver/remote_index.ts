/**
 * A tenant in the lake: the keys of its objects, the index objects that say which layers make up each timeline, and
 * the generation numbers that keep two pageservers holding the same tenant from overwriting each other's objects.
 * Formats in docs/remote_storage.md ("Pageserver objects").
 *
 *     tenants/<tenant>/generations/<generation>-<node>          a pageserver's claim of a generation (empty)
 *     tenants/<tenant>/tenant-<generation>.json                 tarn.json and branches.json, as the tenant had them
 *     tenants/<tenant>/timelines/<timeline>/index-<generation>.json   the timeline's layers, disk_consistent_lsn
 *     tenants/<tenant>/timelines/<timeline>/<layer file name>-<generation>   a layer file, byte for byte
 *
 * Every object a pageserver writes carries its generation, so it never replaces another generation's object; readers
 * take the index of the highest generation. Layers are uploaded before the index that lists them, and an object no
 * index lists is not part of the timeline.
 *
 * @module
 */
import { decodeCheckedJson, encodeCheckedJson } from "../checked_json.ts";
import { CorruptDataError } from "../errors.ts";
import type { RemoteStorage } from "../remote_storage/mod.ts";

/** The version of the index objects this code writes and reads. */
export const REMOTE_INDEX_FORMAT_VERSION = 1;
/** A generation is written as this many hex digits, so that keys sort by generation. */
const GENERATION_DIGITS = 8;
/** Claims tried before giving up on a tenant whose generations keep being taken by others. */
const MAX_CLAIM_ATTEMPTS = 8;

/** One layer of a timeline's index. */
export type IndexedLayer = {
  /** The local file name (`<gen>_<lsn_start>_<lsn_end>.layer`). */
  name: string;
  /** The generation of the pageserver that uploaded it: part of its key. */
  generation: number;
  size_bytes: number;
  /** CRC32C of the whole file. */
  crc32c: number;
};

/** A timeline's index object. */
export type TimelineIndex = {
  format_version: number;
  generation: number;
  timeline_id: string;
  /** The highest `lsn_end` of the layers: every version up to it is in them. As `X/Y`. */
  disk_consistent_lsn: string;
  layers: IndexedLayer[];
  /** The exact text of the timeline's `gc.json` (its GC cutoff and kept points); absent before its first GC. */
  gc?: string;
};

/** A tenant's index object: its metadata files, each as the exact text the tenant directory holds. */
export type TenantIndex = {
  format_version: number;
  generation: number;
  files: Record<string, string>;
};

/** The key of a tenant's prefix. */
export function tenantPrefix(tenant: string): string {
  return `tenants/${tenant}/`;
}

function hexGeneration(generation: number): string {
  return generation.toString(16).padStart(GENERATION_DIGITS, "0");
}

/** The key of a layer object. */
export function layerKey(tenant: string, timeline_id: string, layer: { name: string; generation: number }): string {
  return `${tenantPrefix(tenant)}timelines/${timeline_id}/${layer.name}-${hexGeneration(layer.generation)}`;
}

/** The key of a timeline's index object of `generation`. */
export function timelineIndexKey(tenant: string, timeline_id: string, generation: number): string {
  return `${tenantPrefix(tenant)}timelines/${timeline_id}/index-${hexGeneration(generation)}.json`;
}

/** The key of a tenant's index object of `generation`. */
export function tenantIndexKey(tenant: string, generation: number): string {
  return `${tenantPrefix(tenant)}tenant-${hexGeneration(generation)}.json`;
}

/** The generation in an index key (`...index-0000000a.json`), or undefined when `key` is not one. */
function indexGeneration(key: string, stem: string): number | undefined {
  const m = new RegExp(`/${stem}-([0-9a-f]{${GENERATION_DIGITS}})\\.json$`).exec(key);
  return m === null ? undefined : parseInt(m[1], 16);
}

/** Encodes an index as checked JSON: `{ "index": ..., "crc32c": N }`. */
export function encodeIndex(index: TimelineIndex | TenantIndex): Uint8Array {
  return encodeCheckedJson("index", index);
}

/** Decodes an index object; a damaged one or another version is a {@linkcode CorruptDataError} naming `key`. */
export function decodeIndex<T extends TimelineIndex | TenantIndex>(key: string, bytes: Uint8Array): T {
  return decodeCheckedJson<T>(`index object ${key}`, "index", REMOTE_INDEX_FORMAT_VERSION, bytes);
}

/** The newest (highest-generation) index among `keys` whose stem is `tenant` or `index`, and its generation. */
export function newestIndexKey(keys: string[], stem: "tenant" | "index"): string | undefined {
  let best: { key: string; generation: number } | undefined;
  for (const key of keys) {
    const generation = indexGeneration(key, stem);
    if (generation !== undefined && (best === undefined || generation > best.generation)) best = { key, generation };
  }
  return best?.key;
}

/** The names of the tenants that have an index in the store. */
export async function remoteTenants(store: RemoteStorage): Promise<string[]> {
  const names = new Set<string>();
  for (const key of await store.list("tenants/")) {
    const m = /^tenants\/([^/]+)\/tenant-[0-9a-f]+\.json$/.exec(key);
    if (m !== null) names.add(m[1]);
  }
  return [...names].sort();
}

/** The highest generation claimed for a tenant (0: none). */
export async function highestGeneration(store: RemoteStorage, tenant: string): Promise<number> {
  let highest = 0;
  for (const key of await store.list(`${tenantPrefix(tenant)}generations/`)) {
    const m = /\/([0-9a-f]+)-[^/]+$/.exec(key);
    if (m !== null) highest = Math.max(highest, parseInt(m[1], 16));
  }
  return highest;
}

/**
 * Claims the next generation of a tenant for the pageserver `node`: one above every claim listed, written as an
 * object, then listed again. Two pageservers that claimed the same number at once both see it; the one whose node
 * name sorts first keeps it and the other claims again. Every later write of this pageserver carries the number.
 */
export async function claimGeneration(store: RemoteStorage, tenant: string, node: string): Promise<number> {
  const prefix = `${tenantPrefix(tenant)}generations/`;
  for (let attempt = 0; attempt < MAX_CLAIM_ATTEMPTS; attempt++) {
    const generation = (await highestGeneration(store, tenant)) + 1;
    const mine = `${prefix}${hexGeneration(generation)}-${node}`;
    await store.put(mine, new Uint8Array());
    const rivals = (await store.list(`${prefix}${hexGeneration(generation)}-`)).filter((k) => k !== mine);
    if (rivals.every((k) => k > mine)) return generation;
  }
  throw new CorruptDataError(
    `tenant ${tenant} in ${store.url}`,
    `${MAX_CLAIM_ATTEMPTS} generations in a row were claimed by other pageservers at the same time`,
  );
}
