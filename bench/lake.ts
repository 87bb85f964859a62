/**
 * Lake (object storage) benchmark, run with `deno run -A bench/lake.ts`.
 *
 * 1. Objects per GB of WAL: 3 safekeepers and a pageserver with `--remote file://<tmp>/lake`, a compute under
 *    pgbench TPC-B (`-i -s 10`, then 4 clients for 30 s); everything stopped cleanly, then the lake is walked and its
 *    objects (WAL segments, layers, indexes, generation claims) counted and sized per GB of WAL written (the LSN
 *    advance), with the layers' compression ratio (page bytes the blocks decode to / layer file bytes).
 * 2. Disaster recovery: a second lake with a ~100 MB table; a fresh compute's first `count(*)` on the populated
 *    cluster (baseline); then every local directory deleted, fresh safekeepers and pageserver on empty directories with
 *    the same `--remote`, and the time from pageserver spawn to listening (tenant downloaded) and to the first answer.
 *
 * @module
 */
import postgres from "postgres";
import { parseLsn } from "../src/lsn.ts";
import { LayerReader } from "../src/storage/layer_file.ts";
import { spawnCompute, spawnPageserver, spawnSafekeeper, type TarnProcess } from "../tests/fixtures/tarn_process.ts";

const TENANT = "bench";
const PGBENCH_SCALE = 10;
const PGBENCH_SECONDS = 30;
const BIG_ROWS = 400_000;
const GB_BYTES = 1024 ** 3;
/** A put's temporary file in a `file://` store: `<key>.<uuid>.partial` (a WAL `<segno>.partial` is an object). */
const TEMP_FILE = /\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.partial$/;

type Cluster = { sks: TarnProcess[]; ps: TarnProcess; ps_spawned_ms: number; ps_listen_ms: number };
type Kind = "wal" | "layer" | "index" | "claim" | "other";
type LakeCount = Record<Kind, { objects: number; bytes: number }> & { layer_paths: string[] };

/** Every process still running: stopped in order on success, killed on error. */
const running: TarnProcess[] = [];

const elapsedSince = (started_ms: number) => performance.now() - started_ms;
const connect = (p: TarnProcess) =>
  postgres(`postgresql://postgres@127.0.0.1:${p.port}/postgres`, { max: 1, onnotice: () => {}, connect_timeout: 60 });

async function startCluster(dir: string, lake: string): Promise<Cluster> {
  const remote = ["--remote", `file://${lake}`];
  const sks = await Promise.all([1, 2, 3].map((id) => spawnSafekeeper(`${dir}/sk${id}`, id, 0, remote)));
  running.push(...sks);
  const ps_spawned_ms = performance.now();
  const ps = await spawnPageserver(`${dir}/ps`, 0, remote);
  const ps_listen_ms = elapsedSince(ps_spawned_ms);
  running.push(ps);
  return { sks, ps, ps_spawned_ms, ps_listen_ms };
}

async function startCompute(cluster: Cluster): Promise<TarnProcess> {
  const compute = await spawnCompute(cluster.ps, cluster.sks, TENANT);
  running.push(compute);
  return compute;
}

/** SIGTERMs `processes` one after the other (computes first, then the pageserver, then the safekeepers). */
async function stopInOrder(processes: TarnProcess[]): Promise<void> {
  for (const p of processes) {
    const code = await p.stop();
    running.splice(running.indexOf(p), 1);
    if (code !== 0) throw new Error(`a tarn process (port ${p.port}) exited with code ${code}`);
  }
}

async function walLsn(compute: TarnProcess): Promise<bigint> {
  const sql = connect(compute);
  try {
    const [row] = await sql`select pg_current_wal_lsn()::text as lsn`;
    return parseLsn(row.lsn);
  } finally {
    await sql.end();
  }
}

async function pgbench(compute: TarnProcess, args: string[]): Promise<string> {
  const url = `postgresql://postgres@127.0.0.1:${compute.port}/postgres`;
  const output = await new Deno.Command("pgbench", { args: [...args, url], stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`pgbench ${args.join(" ")} failed: ${text.slice(-800)}`);
  return text;
}

function kindOf(key: string): Kind {
  if (key.startsWith("wal/")) return "wal";
  if (/^tenants\/[^/]+\/generations\//.test(key)) return "claim";
  if (/^tenants\/[^/]+\/timelines\/[^/]+\//.test(key)) return key.endsWith(".json") ? "index" : "layer";
  return "other";
}

/** Walks the lake directory: objects and bytes by kind, and the layer objects' paths. */
async function countLake(lake: string): Promise<LakeCount> {
  const count = { layer_paths: [] as string[] } as LakeCount;
  for (const kind of ["wal", "layer", "index", "claim", "other"] as const) count[kind] = { objects: 0, bytes: 0 };
  const pending = [""];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    for await (const entry of Deno.readDir(`${lake}/${dir}`)) {
      const key = `${dir}${entry.name}`;
      if (entry.isDirectory) pending.push(`${key}/`);
      if (!entry.isFile || TEMP_FILE.test(key)) continue;
      const kind = kindOf(key);
      count[kind].objects++;
      count[kind].bytes += (await Deno.stat(`${lake}/${key}`)).size;
      if (kind === "layer") count.layer_paths.push(`${lake}/${key}`);
    }
  }
  return count;
}

/** Page bytes the layers' blocks decode to (images 8192, deltas their ranges + 4 each) over the files' bytes. */
function compressionRatio(paths: string[]): number {
  let raw_bytes = 0;
  let file_bytes = 0;
  for (const path of paths) {
    const reader = LayerReader.open(path);
    try {
      file_bytes += reader.size_bytes;
      for (let i = 0; i < reader.block_count; i++) {
        for (const { value } of reader.readBlock(i)) {
          if (value.kind === "image") raw_bytes += 8192;
          else for (const range of value.ranges) raw_bytes += range.bytes.length + 4;
        }
      }
    } finally {
      reader.close();
    }
  }
  return raw_bytes / file_bytes;
}

/** Part 1: pgbench on a lake-backed cluster, then the lake's objects per GB of WAL. */
async function benchObjects(dir: string) {
  const lake = `${dir}/lake`;
  const cluster = await startCluster(`${dir}/local`, lake);
  const compute = await startCompute(cluster);
  const lsn_start = await walLsn(compute);
  let started_ms = performance.now();
  await pgbench(compute, ["-i", "-s", String(PGBENCH_SCALE)]);
  const init_ms = elapsedSince(started_ms);
  started_ms = performance.now();
  const out = await pgbench(compute, ["-c", "4", "-j", "4", "-T", String(PGBENCH_SECONDS), "-n"]);
  const run_ms = elapsedSince(started_ms);
  const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN);
  const wal_bytes = Number(await walLsn(compute) - lsn_start);
  started_ms = performance.now();
  await stopInOrder([compute, cluster.ps, ...cluster.sks]);
  const stop_ms = elapsedSince(started_ms);
  const lake_count = await countLake(lake);
  started_ms = performance.now();
  const compression_ratio = compressionRatio(lake_count.layer_paths);
  const ratio_ms = elapsedSince(started_ms);
  return { wal_bytes, lake_count, compression_ratio, tps, init_ms, run_ms, stop_ms, ratio_ms };
}

/** Spawns a compute and times it to the answer of `select count(*) from big`. */
async function firstQuery(cluster: Cluster) {
  const started_ms = performance.now();
  const compute = await startCompute(cluster);
  const sql = connect(compute);
  try {
    const [row] = await sql`select count(*)::int as n from big`;
    const answered_ms = performance.now();
    return { first_query_ms: answered_ms - started_ms, answered_ms, rows: row.n as number, compute };
  } finally {
    await sql.end();
  }
}

/** Part 2: a ~100 MB table, a baseline first query, then every local directory deleted and the tenant recovered. */
async function benchRecovery(dir: string) {
  const lake = `${dir}/lake`;
  const before = await startCluster(`${dir}/before`, lake);
  const loader = await startCompute(before);
  const lsn_start = await walLsn(loader);
  const sql = connect(loader);
  const started_ms = performance.now();
  await sql.unsafe(
    `create table big as select g, md5(g::text) || repeat('x', 200) as pad from generate_series(1, ${BIG_ROWS}) g`,
  );
  const load_ms = elapsedSince(started_ms);
  const wal_bytes = Number(await walLsn(loader) - lsn_start);
  const [{ size_bytes }] = await sql`select pg_database_size('postgres')::float8 as size_bytes`;
  await sql.end();
  await stopInOrder([loader]);
  const baseline = await firstQuery(before);
  await stopInOrder([baseline.compute, before.ps, ...before.sks]);
  const lake_count = await countLake(lake);
  await Deno.remove(`${dir}/before`, { recursive: true });

  const after = await startCluster(`${dir}/after`, lake);
  const recovered = await firstQuery(after);
  const total_ms = recovered.answered_ms - after.ps_spawned_ms;
  const downloaded = after.ps.events.find((e) => e.event === "timeline_downloaded");
  await stopInOrder([recovered.compute, after.ps, ...after.sks]);
  return { size_bytes, wal_bytes, load_ms, lake_count, baseline, recovered, after, total_ms, downloaded };
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits });
const mb = (bytes: number) => fmt(bytes / 2 ** 20, 1);

function printTable(rows: [string, string][]): void {
  const width = Math.max(...rows.map(([name]) => name.length));
  for (const [name, value] of rows) console.log(`${name.padEnd(width)}  ${value}`);
}

function lakeRows(label: string, wal_bytes: number, count: LakeCount): [string, string][] {
  const per_gb = GB_BYTES / wal_bytes;
  const rows: [string, string][] = [[`${label}: WAL written`, `${mb(wal_bytes)} MB`]];
  for (const kind of ["wal", "layer", "index", "claim", "other"] as const) {
    const { objects, bytes } = count[kind];
    if (kind === "other" && objects === 0) continue;
    rows.push([
      `${label}: ${kind} objects`,
      `${objects} (${mb(bytes)} MB); per GB of WAL: ${fmt(objects * per_gb, 1)} objects, ${mb(bytes * per_gb)} MB`,
    ]);
  }
  return rows;
}

async function main(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tarn-bench-lake-" });
  try {
    console.log(`# Lake benchmark (pgbench -s ${PGBENCH_SCALE}, -T ${PGBENCH_SECONDS}; table big: ${BIG_ROWS} rows)\n`);
    const objects = await benchObjects(`${dir}/objects`);
    const r = await benchRecovery(`${dir}/recovery`);
    const base_ms = r.baseline.first_query_ms;
    const rec_ms = r.recovered.first_query_ms;
    printTable([
      [
        "pgbench init / run / clean stop",
        `${fmt(objects.init_ms)} / ${fmt(objects.run_ms)} / ${fmt(objects.stop_ms)} ms`,
      ],
      ["pgbench TPS (4 clients)", fmt(objects.tps, 1)],
      ...lakeRows("pgbench", objects.wal_bytes, objects.lake_count),
      ["layer compression ratio (page bytes / file bytes)", `${fmt(objects.compression_ratio, 2)}x`],
      ["  (time to decode every layer block)", `${fmt(objects.ratio_ms)} ms`],
      ["recovery: database size / load time", `${mb(r.size_bytes)} MB / ${fmt(r.load_ms)} ms`],
      ...lakeRows("big table", r.wal_bytes, r.lake_count),
      ["baseline: compute spawn -> first count(*)", `${fmt(base_ms)} ms (${r.baseline.rows} rows)`],
      ["recovery: pageserver spawn -> listening", `${fmt(r.after.ps_listen_ms)} ms`],
      ["recovery: compute spawn -> first count(*)", `${fmt(rec_ms)} ms (${r.recovered.rows} rows)`],
      ["recovery: pageserver spawn -> first answer", `${fmt(r.total_ms)} ms`],
      ["ratio first query recovered / baseline", `${fmt(rec_ms / base_ms, 2)}x`],
      ["ratio pageserver spawn -> answer / baseline", `${fmt(r.total_ms / base_ms, 2)}x`],
      ["recovered timeline", JSON.stringify(r.downloaded ?? "no timeline_downloaded event")],
    ]);
  } finally {
    await Promise.all(running.map((p) => p.kill())); // only what an error left running
    await Deno.remove(dir, { recursive: true });
  }
}

await main();
