/**
 * A remote compute (`tarn compute` on a `tarn pageserver` and 3 `tarn safekeeper` processes) against `tarn start`
 * (embedded storage) with its WAL on the same 3 safekeepers, and without them for reference: pgbench TPC-B, a
 * sequential scan of a ~100 MB table right after a restart (cold compute cache) and again (warm), and the time from
 * spawning a fresh process to its first answered query.
 *
 * @module
 */
import postgres from "postgres";
import { spawnCompute, spawnTarn, type TarnProcess } from "../tests/fixtures/tarn_process.ts";
import { tpcb } from "./server.ts";

/** How a setup's serving process is started (again): a fresh one each call, on a free port. */
export type Setup = { name: string; spawn(): Promise<TarnProcess> };
/** Cold and warm scan times of the big table (ms), and its size. */
export type ScanFigures = { table_mb: number; cold_ms: number; warm_ms: number };
/** Spawn to first answered `select 1` (ms) over several fresh processes, and the p50 of spawn to its listening. */
export type StartFigures = { p50_ms: number; max_ms: number; listening_p50_ms: number; runs: number };
/** What one setup measured. */
export type SetupFigures = { name: string; tps: number; scan?: ScanFigures; start?: StartFigures };
/** Sizes of a comparison run. */
export type CompareSizes = { scale: number; seconds: number; big_rows: number; starts: number };

const SCAN = "select count(*), sum(length(pad)) from big";
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const urlOf = (server: TarnProcess) => `postgresql://postgres@127.0.0.1:${server.port}/postgres`;

/** A remote compute of `tenant`. */
export function remoteSetup(pageserver: TarnProcess, safekeepers: TarnProcess[], tenant: string): Setup {
  return { name: "remote compute", spawn: () => spawnCompute(pageserver, safekeepers, tenant) };
}

/** `tarn start` on `dir`, its WAL on `safekeepers` when there are any. */
export function startSetup(name: string, dir: string, safekeepers: TarnProcess[]): Setup {
  const list = safekeepers.map((sk) => `127.0.0.1:${sk.port}`).join(",");
  const args = ["start", "--data", dir, "--port", "0", ...(list ? ["--safekeepers", list] : [])];
  return { name, spawn: () => spawnTarn(args) };
}

/** Runs `text` on a new connection to `server`; resolves with the time it took (ms), connection excluded. */
async function timeQuery(server: TarnProcess, text: string): Promise<number> {
  const sql = postgres(urlOf(server), { max: 1, onnotice: () => {} });
  try {
    await sql`select 1`;
    const started = performance.now();
    await sql.unsafe(text);
    return performance.now() - started;
  } finally {
    await sql.end();
  }
}

/** `select 1` on `server`, retrying while the connection is refused. */
async function firstQuery(server: TarnProcess): Promise<void> {
  for (let attempt = 1;; attempt++) {
    const sql = postgres(urlOf(server), { max: 1, onnotice: () => {} });
    try {
      await sql`select 1`;
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== "ECONNREFUSED" || attempt >= 100) throw error;
      await sleep(5);
    } finally {
      await sql.end();
    }
  }
}

/** Creates the big table on `server` and resolves with its size (MB). */
async function createBig(server: TarnProcess, rows: number): Promise<number> {
  const sql = postgres(urlOf(server), { max: 1, onnotice: () => {} });
  try {
    await sql`create table big as select g, repeat('x', 900) as pad from generate_series(1, ${rows}::int) g`;
    await sql`checkpoint`;
    const [{ bytes }] = await sql`select pg_table_size('big')::float8 as bytes`;
    return bytes / 1024 / 1024;
  } finally {
    await sql.end();
  }
}

/** Spawns `setup` `runs` times, each a fresh process stopped after its first answered query. */
async function startTimes(setup: Setup, runs: number): Promise<StartFigures> {
  const times: number[] = [];
  const listening: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const server = await setup.spawn();
    listening.push(performance.now() - started);
    try {
      await firstQuery(server);
      times.push(performance.now() - started);
    } finally {
      await server.stop();
    }
  }
  const p50 = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(runs / 2)];
  return { p50_ms: p50(times), max_ms: Math.max(...times), listening_p50_ms: p50(listening), runs };
}

/**
 * pgbench on a fresh `setup`; with `scan`, then the big table, a restart and the cold and warm scans, and with
 * `starts` the spawn-to-first-query times of that many fresh processes on the same data.
 */
export async function measureSetup(setup: Setup, sizes: CompareSizes, more: boolean): Promise<SetupFigures> {
  let server = await setup.spawn();
  try {
    const tps = await tpcb(urlOf(server), sizes.scale, sizes.seconds);
    if (!more) return { name: setup.name, tps };
    const table_mb = await createBig(server, sizes.big_rows);
    await server.stop();
    server = await setup.spawn();
    const cold_ms = await timeQuery(server, SCAN);
    const warm_ms = await timeQuery(server, SCAN);
    await server.stop();
    const start = await startTimes(setup, sizes.starts);
    return { name: setup.name, tps, scan: { table_mb, cold_ms, warm_ms }, start };
  } finally {
    await server.kill(); // stopped already unless something failed
  }
}
