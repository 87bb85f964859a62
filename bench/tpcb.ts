/**
 * TPC-B-like transactions over a 100k-account table through `connect()`: Tarn against plain PGlite on NodeFS with
 * full_page_writes=on (PGlite's NodeFS never fsyncs; Tarn fsyncs its WAL on every commit).
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import { parseLsn } from "../src/lsn.ts";
import { Tarn } from "../mod.ts";

const ACCOUNTS = 100_000;
const TELLERS = 10;

/** Runs statements: the same workload code drives both databases. */
type Runner = { query(sql: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }> };

/** What one side measured. */
export type TpcbResult = { tps: number; wal_bytes_per_txn: number };

async function load(db: Runner): Promise<void> {
  await db.query(`create table branches (bid int primary key, bbalance int, filler char(88))`);
  await db.query(`create table tellers (tid int primary key, bid int, tbalance int, filler char(84))`);
  await db.query(`create table accounts (aid int primary key, bid int, abalance int, filler char(84))`);
  await db.query(`create table history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))`);
  await db.query(`insert into branches values (1, 0, '')`);
  await db.query(`insert into tellers select g, 1, 0, '' from generate_series(1, ${TELLERS}) g`);
  await db.query(`insert into accounts select g, 1, 0, '' from generate_series(1, ${ACCOUNTS}) g`);
  await db.query("checkpoint");
}

async function walLsn(db: Runner): Promise<bigint> {
  const { rows } = await db.query("select pg_current_wal_insert_lsn()::text as lsn");
  return parseLsn(String(rows[0].lsn));
}

async function run(db: Runner, transactions: number): Promise<TpcbResult> {
  let seed = 42;
  const random = (n: number) => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return 1 + (seed % n);
  };
  const lsn_start = await walLsn(db);
  const started_ms = performance.now();
  for (let i = 0; i < transactions; i++) {
    const aid = random(ACCOUNTS), tid = random(TELLERS), delta = random(10_000) - 5_000;
    await db.query("begin");
    await db.query("update accounts set abalance = abalance + $1 where aid = $2", [delta, aid]);
    await db.query("select abalance from accounts where aid = $1", [aid]);
    await db.query("update tellers set tbalance = tbalance + $1 where tid = $2", [delta, tid]);
    await db.query("update branches set bbalance = bbalance + $1 where bid = 1", [delta]);
    await db.query("insert into history values ($1, 1, $2, $3, now(), '')", [tid, aid, delta]);
    await db.query("commit");
  }
  const elapsed_s = (performance.now() - started_ms) / 1000;
  const lsn_end = await walLsn(db);
  return { tps: transactions / elapsed_s, wal_bytes_per_txn: Number(lsn_end - lsn_start) / transactions };
}

/** Runs the workload on both and returns their figures. */
export async function benchTpcb(transactions: number): Promise<{ tarn: TpcbResult; baseline: TpcbResult }> {
  const base_dir = await Deno.makeTempDir({ prefix: "tarn-bench-pglite-" });
  const tarn_dir = await Deno.makeTempDir({ prefix: "tarn-bench-tarn-" });
  try {
    const pg = await PGlite.create({
      dataDir: base_dir,
      startParams: [...PGlite.defaultStartParams, "-c", "full_page_writes=on", "-c", "shared_buffers=16MB"],
    });
    await load(pg);
    const baseline = await run(pg, transactions);
    await pg.close();
    const tarn = await Tarn.open(tarn_dir);
    const db = await tarn.connect();
    await load(db);
    const result = await run(db, transactions);
    await tarn.close();
    return { tarn: result, baseline };
  } finally {
    await Deno.remove(base_dir, { recursive: true });
    await Deno.remove(tarn_dir, { recursive: true });
  }
}
