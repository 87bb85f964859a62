import { equal, match, rejects } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { enginePool, startPostgres } from "../src/compute/engine_pool.ts";
import { PageStore } from "../src/storage/page_store.ts";
import { WalLog } from "../src/replication/wal_log.ts";
import { clusterTemplate, importTemplate } from "../src/compute/cluster_template.ts";
import { segmentFileName, segmentOf } from "../src/lsn.ts";

Deno.test("engine pool: computes start on parked engines with their own settings, and the pool refills", async () => {
  await using tarn = await Tarn.open();
  const main = await tarn.connect();
  await enginePool.filled();
  equal(enginePool.size, enginePool.target, "an engine is parked after the first start");
  // A fork starts on the parked engine with settings of its own; main keeps its own.
  await using fork = await tarn.fork();
  equal((await fork.query<{ shared_buffers: string }>("show shared_buffers")).rows[0].shared_buffers, "1MB");
  equal((await main.query<{ shared_buffers: string }>("show shared_buffers")).rows[0].shared_buffers, "16MB");
  await fork.exec("create table only_here (id int)");
  await main.exec("create table t (id int)");
  equal((await fork.query("select 1 from pg_class where relname = 't'")).rows.length, 0);
  await enginePool.filled();
  equal(enginePool.size, enginePool.target, "the pool refilled");
});

Deno.test("engine pool: a start that fails is a ComputeStartError with Postgres's words, and the next start works", async () => {
  const template = await clusterTemplate();
  const pages = await PageStore.open({ timeline_id: "1".repeat(32) });
  const wal = await WalLog.open({ segment_size: template.segment_size });
  importTemplate(template, pages, wal);
  const storage = {
    pages,
    wal,
    segment_size: template.segment_size,
    wal_segments: [segmentFileName(1, segmentOf(template.wal_start_lsn, template.segment_size), template.segment_size)],
    page_cache_pages: 64,
    on_sync: async () => void await wal.flush(),
  };
  await rejects(startPostgres(storage, ["no_such_setting=1"]), (error: Error) => {
    equal(error.name, "ComputeStartError");
    match(error.message, /no_such_setting/);
    return true;
  });
  const { pg } = await startPostgres(storage);
  equal((await pg.query<{ n: number }>("select 41 + 1 as n")).rows[0].n, 42);
  await pg.close();
});
