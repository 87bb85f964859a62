// A compute's pages on a real pageserver over loopback TCP, through the page I/O Worker: a sequential read is served
// by read-ahead windows and a prefetch of the next one, and a write into a prefetched window is never read stale.
import { deepEqual, equal, ok } from "node:assert/strict";
import { PageChannel, startPageIoWorker } from "../src/compute/remote/page_channel.ts";
import { RemotePages } from "../src/compute/remote/remote_pages.ts";
import { LSN_MAX } from "../src/lsn.ts";
import type { FileEntry } from "../src/pageserver/messages.ts";
import { WalLog } from "../src/replication/wal_log.ts";
import { BLOCK_SIZE } from "../src/storage/page_api.ts";
import { spawnPageserver } from "./fixtures/tarn_process.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const PATH = "base/5/424242";
const BLOCKS = 200;

/** A page whose bytes all say `value`. */
const page = (value: number) => new Uint8Array(BLOCK_SIZE).fill(value);

/**
 * Runs `fn` with a compute's pages, owning main of a new tenant on a pageserver process (its reads block this
 * thread, so the pageserver cannot run on it).
 */
function withRemotePages(fn: (pages: RemotePages, lsn_base: bigint) => void): Promise<void> {
  return withTempDir(async (dir) => {
    const server = await spawnPageserver(dir);
    const io = startPageIoWorker();
    const channel = await PageChannel.open(io, "127.0.0.1", server.port);
    const wal = await WalLog.open({ segment_size: 16 * 1024 * 1024 });
    try {
      await channel.request({ type: "hello", tenant: "t", create: true });
      const info = await channel.request({ type: "branch_info", branch: "main" });
      ok(info.type === "branch_info_ok");
      const { timeline_id, wal_end_lsn } = info.info;
      await channel.request({ type: "attach", timeline_id, term: 1n, wal_end_lsn });
      const files: FileEntry[] = [];
      const listed = await channel.request({ type: "list_files", timeline_id, lsn: LSN_MAX, after: "" });
      ok(listed.type === "files");
      files.push(...listed.entries);
      const pages = new RemotePages(channel, timeline_id, wal_end_lsn);
      pages.own(1n, wal, files);
      fn(pages, wal_end_lsn);
    } finally {
      channel.close();
      io.terminate();
      await wal.close();
      await server.stop();
    }
  });
}

/** Writes a file of BLOCKS pages, block b holding b % 250 (sent ahead of the next read). */
function writeFile(pages: RemotePages, lsn_base: bigint): void {
  pages.putEvent(PATH, lsn_base + 1n, { kind: "create" });
  pages.putEvent(PATH, lsn_base + 2n, { kind: "resize", size_bytes: BLOCKS * BLOCK_SIZE });
  for (let b = 0; b < BLOCKS; b++) pages.putPage(PATH, b, lsn_base + 3n, { kind: "image", bytes: page(b % 250) });
}

const remoteTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });

remoteTest(
  "remote pages: a sequential read goes by growing windows and prefetches, and reads every page right",
  () =>
    withRemotePages((pages, lsn_base) => {
      writeFile(pages, lsn_base);
      for (let b = 0; b < BLOCKS; b++) deepEqual(pages.getPage(PATH, b, LSN_MAX), page(b % 250), `block ${b}`);
      // 1 + 16 + 32 + 64 + 128 would cover the file in 5 windows; the prefetches come in claimed, not re-asked for.
      ok(pages.stats.requests <= 6, `${pages.stats.requests} requests for ${BLOCKS} sequential blocks`);
      equal(pages.stats.pages, BLOCKS);
    }),
);

remoteTest(
  "remote pages: a write into a prefetched window is read back, never the prefetched older version",
  () =>
    withRemotePages((pages, lsn_base) => {
      writeFile(pages, lsn_base);
      // Blocks 0-16 read: the window [1, 17) came, and the next one, [17, 49), is prefetched.
      for (let b = 0; b <= 16; b++) deepEqual(pages.getPage(PATH, b, LSN_MAX), page(b % 250));
      pages.putPage(PATH, 20, lsn_base + 10n, { kind: "image", bytes: page(251) });
      pages.putEvent(PATH, lsn_base + 11n, { kind: "resize", size_bytes: BLOCKS * BLOCK_SIZE });
      for (let b = 17; b < BLOCKS; b++) {
        deepEqual(pages.getPage(PATH, b, LSN_MAX), page(b === 20 ? 251 : b % 250), `block ${b}`);
      }
    }),
);
