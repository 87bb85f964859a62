/**
 * A freshly initialised cluster, made once per process and copied into every new database: initdb costs seconds,
 * copying its files costs milliseconds.
 *
 * @module
 */
import { type Lsn, LSN_MAX } from "../lsn.ts";
import type { WalSink } from "../replication/wal_api.ts";
import { WalLog } from "../replication/wal_log.ts";
import { BLOCK_SIZE, type PageSink, type PageSource } from "../storage/page_api.ts";
import { PageStore } from "../storage/page_store.ts";
import { startPostgres } from "./engine_pool.ts";
import { parseControlFile } from "./pg_control.ts";
import { readTemplate, templateCachePath, writeTemplate } from "./template_cache.ts";

/** Default WAL segment size of a new cluster (initdb's default). */
const INITDB_SEGMENT_BYTES = 16 * 1024 * 1024;

/** The files of a cleanly shut down, freshly initialised cluster and the WAL its start needs. */
export type ClusterTemplate = {
  /** Directories, parents before children. */
  dirs: string[];
  /** Durable files and their bytes. */
  files: Map<string, Uint8Array>;
  /** Where `wal` starts: the start of the segment holding the shutdown checkpoint record. */
  wal_start_lsn: Lsn;
  /** WAL bytes from `wal_start_lsn`: Postgres reads its checkpoint record at start. */
  wal: Uint8Array;
  /** WAL segment size in bytes. */
  segment_size: number;
};

let template: Promise<ClusterTemplate> | undefined;

/**
 * The process's cluster template: read from the cache on disk (`template_cache.ts`), or made by running initdb in
 * memory on first use and cached for the next process.
 */
export function clusterTemplate(): Promise<ClusterTemplate> {
  template ??= (async () => {
    const version = await pgliteVersion();
    const path = version === undefined ? undefined : templateCachePath(version);
    const cached = path === undefined ? undefined : await readTemplate(path, version!);
    if (cached !== undefined) return cached;
    const made = await makeTemplate();
    if (path !== undefined) await writeTemplate(path, version!, made).catch(() => {});
    return made;
  })();
  return template;
}

/** The version of the PGlite package in use (its package.json); undefined when it cannot be read. */
async function pgliteVersion(): Promise<string | undefined> {
  try {
    const manifest = new URL("../package.json", import.meta.resolve("@electric-sql/pglite"));
    const version = JSON.parse(await Deno.readTextFile(manifest)).version;
    return typeof version === "string" ? version : undefined;
  } catch {
    return undefined;
  }
}

async function makeTemplate(): Promise<ClusterTemplate> {
  const pages = await PageStore.open({ timeline_id: "0".repeat(32) });
  const wal = await WalLog.open({ segment_size: INITDB_SEGMENT_BYTES });
  const { pg } = await startPostgres({
    pages,
    wal,
    segment_size: INITDB_SEGMENT_BYTES,
    wal_segments: [],
    page_cache_pages: 1024,
    on_sync: async () => void await wal.flush(),
  });
  // A segment switch puts the shutdown checkpoint at the start of a fresh segment: Postgres reads a segment's
  // first page before any record in it, so the WAL a new database needs is then a few hundred bytes, not megabytes.
  await pg.exec("select pg_switch_wal()");
  await pg.close();
  const dirs: string[] = [];
  const files = new Map<string, Uint8Array>();
  collect(pages, "", dirs, files);
  const control = parseControlFile(files.get("global/pg_control")!);
  const wal_start_lsn = control.checkpoint_lsn - control.checkpoint_lsn % BigInt(control.segment_size);
  return {
    dirs,
    files,
    wal_start_lsn,
    wal: wal.read(wal_start_lsn, wal.end_lsn),
    segment_size: control.segment_size,
  };
}

function collect(pages: PageSource, dir: string, dirs: string[], files: Map<string, Uint8Array>): void {
  for (const name of pages.readdir(dir, LSN_MAX).sort()) {
    const path = dir === "" ? name : `${dir}/${name}`;
    const meta = pages.stat(path, LSN_MAX);
    if (meta?.kind === "dir") {
      dirs.push(path);
      collect(pages, path, dirs, files);
    } else if (meta?.kind === "file") {
      const bytes = new Uint8Array(meta.size_bytes);
      for (let blkno = 0; blkno * BLOCK_SIZE < meta.size_bytes; blkno++) {
        const page = pages.getPage(path, blkno, LSN_MAX)!;
        bytes.set(page.subarray(0, Math.min(BLOCK_SIZE, meta.size_bytes - blkno * BLOCK_SIZE)), blkno * BLOCK_SIZE);
      }
      files.set(path, bytes);
    }
  }
}

/** Writes the template into empty stores: its WAL, then its files as page images tagged with the WAL end. */
export function importTemplate(source: ClusterTemplate, pages: PageSink, wal: WalSink): Lsn {
  wal.append(source.wal_start_lsn, source.wal);
  const lsn = wal.end_lsn;
  for (const dir of source.dirs) pages.putEvent(dir, lsn, { kind: "mkdir" });
  for (const [path, bytes] of source.files) {
    pages.putEvent(path, lsn, { kind: "create" });
    for (let blkno = 0; blkno * BLOCK_SIZE < bytes.length; blkno++) {
      const page = new Uint8Array(BLOCK_SIZE);
      page.set(bytes.subarray(blkno * BLOCK_SIZE, (blkno + 1) * BLOCK_SIZE));
      pages.putPage(path, blkno, lsn, { kind: "image", bytes: page });
    }
    pages.putEvent(path, lsn, { kind: "resize", size_bytes: bytes.length });
  }
  return lsn;
}
