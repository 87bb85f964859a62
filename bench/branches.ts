/**
 * Branch benchmarks: createBranch at two database sizes, fork() against PGlite's clone() on the same data, RSS per
 * open fork, and a 200-test suite with a fork per test against one shared database rolled back after each test.
 *
 * @module
 */
import { PGlite, type PGliteInterface } from "@electric-sql/pglite";
import { Tarn, type TarnClient } from "../mod.ts";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function load(query: (sql: string, params?: unknown[]) => Promise<unknown>, size_mb: number): Promise<void> {
  await query("create table big (id int primary key, pad text)");
  const rows = Math.round(size_mb * 1024 * 1024 / 1000);
  for (let start = 1; start <= rows; start += 10_000) {
    await query("insert into big select g, repeat(md5(g::text), 28) from generate_series($1::int, $2::int) g", [
      start,
      Math.min(rows, start + 9_999),
    ]);
  }
}

/** createBranch time (median of 20) on a database of each size. */
export async function benchCreateBranch(sizes_mb: number[]): Promise<{ size_mb: number; create_ms: number }[]> {
  const out = [];
  for (const size_mb of sizes_mb) {
    const dir = await Deno.makeTempDir({ prefix: `tarn-bench-branch-${size_mb}-` });
    try {
      const tarn = await Tarn.open(dir);
      const db = await tarn.connect();
      await load((sql, params) => db.query(sql, params), size_mb);
      const times = [];
      for (let i = 0; i < 20; i++) {
        const started = performance.now();
        await tarn.createBranch(`b${i}`);
        times.push(performance.now() - started);
      }
      await tarn.close();
      out.push({ size_mb, create_ms: median(times) });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return out;
}

/** What {@linkcode benchFork} measures, in ms and MB. */
export type ForkFigures = {
  cold_fork_ms: number;
  pooled_fork_ms: number;
  rewind_ms: number;
  clone_ms: number;
  rss_per_fork_mb: number;
};

/**
 * fork() + first query cold (nothing pooled: each fork at a new branch point) and pooled (a closed fork reused),
 * rewind() + first query, against PGlite clone() + first query on the same data; RSS per live fork.
 */
export async function benchFork(size_mb: number): Promise<ForkFigures> {
  const tarn = await Tarn.open();
  const db = await tarn.connect();
  await load((sql, params) => db.query(sql, params), size_mb);
  const timed = async (fn: () => Promise<unknown>) => {
    const started = performance.now();
    await fn();
    return performance.now() - started;
  };
  const cold = [];
  for (let i = 0; i < 5; i++) {
    await db.query("insert into big values ($1, 'moves the head: no pooled fork fits')", [-1 - i]);
    let fork!: TarnClient;
    cold.push(await timed(async () => (fork = await tarn.fork()).query("select count(*) from big where id < 10")));
    await fork.close();
  }
  const pooled = [];
  for (let i = 0; i < 10; i++) {
    let fork!: TarnClient;
    pooled.push(await timed(async () => (fork = await tarn.fork()).query("select count(*) from big where id < 10")));
    await fork.query("delete from big where id < 100");
    await fork.close();
  }
  const rewinds = [];
  {
    await using fork = await tarn.fork();
    for (let i = 0; i < 10; i++) {
      await fork.query("delete from big where id < 100");
      rewinds.push(
        await timed(async () => {
          await tarn.rewind(fork);
          await fork.query("select count(*) from big where id < 10");
        }),
      );
    }
  }
  const rss_before = Deno.memoryUsage().rss;
  const live = [];
  for (let i = 0; i < 5; i++) {
    const fork = await tarn.fork();
    await fork.query("select count(*) from big where id < 10");
    live.push(fork);
  }
  const rss_per_fork_mb = (Deno.memoryUsage().rss - rss_before) / 5 / 1024 / 1024;
  for (const fork of live) await fork.close();
  await tarn.close();

  const pg = await PGlite.create();
  await load((sql, params) => pg.query(sql, params), size_mb);
  const clones = [];
  for (let i = 0; i < 3; i++) {
    let clone!: PGliteInterface;
    clones.push(await timed(async () => (clone = await pg.clone()).query("select count(*) from big where id < 10")));
    await clone.close();
  }
  await pg.close();
  return {
    cold_fork_ms: median(cold),
    pooled_fork_ms: median(pooled),
    rewind_ms: median(rewinds),
    clone_ms: median(clones),
    rss_per_fork_mb,
  };
}

async function testBody(db: { query(sql: string, params?: unknown[]): Promise<unknown> }, i: number): Promise<void> {
  await db.query("insert into users (email) values ($1)", [`new${i}@example.com`]);
  await db.query("update orders set total = total + 1 where user_id = $1", [1 + i % 100]);
  await db.query("select count(*) from orders join users on users.id = orders.user_id where users.id = $1", [i % 100]);
}

const SCHEMA = `
  create table users (id serial primary key, email text unique not null);
  create table orders (id serial primary key, user_id int not null references users, total numeric not null);
  insert into users (email) select 'user' || g || '@example.com' from generate_series(1, 100) g;
  insert into orders (user_id, total) select 1 + g % 100, g from generate_series(1, 1000) g;`;

/** 200 tests, each on its own fork, vs the same 200 on one shared database with a rollback after each. */
export async function benchSuite(tests: number): Promise<{ fork_suite_ms: number; rollback_suite_ms: number }> {
  const tarn = await Tarn.open();
  const main = await tarn.connect();
  await main.exec(SCHEMA);
  let started = performance.now();
  for (let i = 0; i < tests; i++) {
    await using db = await tarn.fork();
    await testBody(db, i);
  }
  const fork_suite_ms = performance.now() - started;
  started = performance.now();
  for (let i = 0; i < tests; i++) {
    await main.query("begin");
    await testBody(main, i);
    await main.query("rollback");
  }
  const rollback_suite_ms = performance.now() - started;
  await tarn.close();
  return { fork_suite_ms, rollback_suite_ms };
}
