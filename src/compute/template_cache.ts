/**
 * The cluster template kept on disk between processes (`$XDG_CACHE_HOME/tarn` or `~/.cache/tarn`): initdb costs
 * seconds in every process that creates a database, reading the template a few milliseconds. One file per PGlite
 * version; a file that is damaged, of another format or of another PGlite is ignored (and replaced). Writing is
 * best effort: a read-only or missing home only means initdb runs each time. Format: docs/data_directory.md,
 * "Cluster template cache".
 *
 * @module
 */
import { crc32c } from "../crc32c.ts";
import type { ClusterTemplate } from "./cluster_template.ts";

const MAGIC = "TARNTPL\n";
const FORMAT_VERSION = 1;
/** magic (8), format version (u32), CRC32C of the rest (u32), header length (u32). */
const PREFIX_BYTES = 20;
/** A template is ~20 MB at most (PGlite's initdb leaves ~17 MB); anything larger is not one. */
const MAX_FILE_BYTES = 256 * 1024 * 1024;

type Header = {
  pglite_version: string;
  dirs: string[];
  files: [string, number][];
  wal_start_lsn: string;
  wal_bytes: number;
  segment_size: number;
};

/** Where the template of `pglite_version` is cached; undefined when there is no cache directory. */
export function templateCachePath(pglite_version: string): string | undefined {
  const base = env("XDG_CACHE_HOME") ?? (env("HOME") === undefined ? undefined : `${env("HOME")}/.cache`);
  if (base === undefined || !/^[0-9A-Za-z.+-]+$/.test(pglite_version)) return undefined;
  return `${base}/tarn/cluster-template-${pglite_version}.bin`;
}

/** The cached template at `path` for `pglite_version`; undefined when absent, damaged or another version's. */
export async function readTemplate(path: string, pglite_version: string): Promise<ClusterTemplate | undefined> {
  let bytes: Uint8Array;
  try {
    if ((await Deno.stat(path)).size > MAX_FILE_BYTES) return undefined;
    bytes = await Deno.readFile(path);
  } catch {
    return undefined;
  }
  if (bytes.length < PREFIX_BYTES || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(8, true) !== FORMAT_VERSION) return undefined;
  if (view.getUint32(12, true) !== crc32c(bytes.subarray(16))) return undefined;
  const header_end = PREFIX_BYTES + view.getUint32(16, true);
  if (header_end > bytes.length) return undefined;
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(PREFIX_BYTES, header_end)));
  } catch {
    return undefined;
  }
  if (header.pglite_version !== pglite_version) return undefined;
  let at = header_end;
  const take = (n: number) => bytes.slice(at, at += n);
  const files = new Map(header.files.map(([file, length]) => [file, take(length)] as const));
  const wal = take(header.wal_bytes);
  if (at !== bytes.length) return undefined;
  return {
    dirs: header.dirs,
    files,
    wal_start_lsn: BigInt(header.wal_start_lsn),
    wal,
    segment_size: header.segment_size,
  };
}

/** Writes `template` to `path` (through a temporary file and a rename: a reader never sees half of it). */
export async function writeTemplate(path: string, pglite_version: string, template: ClusterTemplate): Promise<void> {
  const header: Header = {
    pglite_version,
    dirs: template.dirs,
    files: [...template.files].map(([file, bytes]) => [file, bytes.length]),
    wal_start_lsn: String(template.wal_start_lsn),
    wal_bytes: template.wal.length,
    segment_size: template.segment_size,
  };
  const header_bytes = new TextEncoder().encode(JSON.stringify(header));
  const parts = [header_bytes, ...template.files.values(), template.wal];
  const out = new Uint8Array(PREFIX_BYTES + parts.reduce((n, part) => n + part.length, 0));
  out.set(new TextEncoder().encode(MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(16, header_bytes.length, true);
  let at = PREFIX_BYTES;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  view.setUint32(12, crc32c(out.subarray(16)), true);
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.writeFile(temporary, out);
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: no cache
  }
}
