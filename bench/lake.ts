/**
 * Lake (object storage) benchmark, run with `deno run -A bench/lake.ts`.
 *
 * 1. Objects per GB of WAL: 3 safekeepers and a pageserver with `--remote file://<tmp>/lake`, a compute under
 *    pgbench TPC-B (`-i -s 10`, then 4 clients for 30 s); everything stopped cleanly, then the lake is walked and its
 *    objects (WAL segments, layers, indexes, generation claims) counted and sized per GB of WAL written (the LSN
 *    advance), with the layers' compression ratio (page bytes the blocks decode to / layer file bytes).
 * 2. Disaster recovery: a second lake with a ~100 MB table (read once, so hint bits are set); a fresh compute's first
 *    `count(*)` on the populated cluster (baseline); then every local directory deleted, fresh safekeepers and
 *    pageserver on empty directories with the same `--remote`, timed from pageserver spawn to listening and to the
 *    first answer. A failed attempt is printed and part 2 runs once more on a fresh lake.
 *
 * Pageservers run with `--gc-interval 1h`: with the 7-day window nothing is collected here, and the figures leave out
 * GC's search for its horizon (a bounded stretch of WAL decoded per run). Progress goes to stderr, the figures to stdout.
 *
 * @module
 */
import postgres from "postgres";
import { formatLsn, parseLsn } from "../src/lsn.ts";
import { LayerReader } from "../src/storage/layer_file.ts";
import { spawnCompute, spawnPageserver, spawnSafekeeper, type TarnProcess } from "../tests/fixtures/tarn_process.ts";

const TENANT = "bench";
const PGBENCH_SCALE = 10;
const PGBENCH_SECONDS = 30;
const BIG_ROWS = 400_000;
/** Part 2 runs again on a fresh lake after a failure, this many times in all (the failure is printed too). */
const RECOVERY_ATTEMPTS = 2;
const BIG_SQL =
  `create table big as select g, md5(g::text) || repeat('x', 200) as pad from generate_series(1, ${BIG_ROWS}) g`;
const GB_BYTES = 1024 ** 3;
const SQL_OPTIONS = { max: 1, onnotice: () => {}, connect_timeout: 60 };
/** A put's temporary file in a `file://` store: `<key>.<uuid>.partial` (a WAL `<segno>.partial` is an object). */
const TEMP_FILE = /\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.partial$/;

type Cluster = { sks: TarnProcess[]; ps: TarnProcess; ps_spawned_ms: number; ps_listen_ms: number };
const KINDS = ["wal", "layer", "index", "claim", "other"] as const;
type Kind = typeof KINDS[number];
type LakeCount = Record<Kind, { bytes: number; keys: string[] }>;

/** Every process still running: stopped in order on success, killed on error. */
const running: TarnProcess[] = [];

const bench_started_ms = performance.now();
const elapsedSince = (started_ms: number) => performance.now() - started_ms;
const progress = (step: string) => console.error(`[${(elapsedSince(bench_started_ms) / 1000).toFixed(1)} s] ${step}`);

async function timed<T>(step: () => T | Promise<T>): Promise<[T, number]> {
  const started_ms = performance.now();
  const value = await step();
  return [value, elapsedSince(started_ms)];
}

async function startCluster(dir: string, lake: string): Promise<Cluster> {
  const remote = ["--remote", lake];
  const sks = await Promise.all([1, 2, 3].map((id) => spawnSafekeeper(`${dir}/sk${id}`, id, 0, remote)));
  running.push(...sks);
  const ps_spawned_ms = performance.now();
  const ps = await spawnPageserver(`${dir}/ps`, 0, [...remote, "--gc-interval", "1h"]);
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

/** Runs `fn` on one connection to `compute`, closed after. */
async function withSql<T>(compute: TarnProcess, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(`postgresql://postgres@127.0.0.1:${compute.port}/postgres`, SQL_OPTIONS);
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}

const walLsn = (compute: TarnProcess) =>
  withSql(compute, async (sql) => parseLsn((await sql`select pg_current_wal_lsn()::text as lsn`)[0].lsn));

async function pgbench(compute: TarnProcess, args: string[]): Promise<string> {
  const url = `postgresql://postgres@127.0.0.1:${compute.port}/postgres`;
  const output = await new Deno.Command("pgbench", { args: [...args, url], stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`pgbench ${args.join(" ")} failed: ${text.slice(-800)}`);
  return text;
}

function kindOf(key: string): Kind {
  if (/^wal\/.*\/[0-9a-f]{16}(\.partial)?$/.test(key)) return "wal";
  if (/^tenants\/[^/]+\/generations\//.test(key)) return "claim";
  if (/^tenants\/[^/]+\/(timelines\/[^/]+\/)?[^/]+\.json$/.test(key)) return "index";
  if (/^tenants\/[^/]+\/timelines\/[^/]+\//.test(key)) return "layer";
  return "other";
}

/** Walks the lake directory: objects (keys) and bytes by kind. */
async function countLake(lake: string): Promise<LakeCount> {
  const count = {} as LakeCount;
  for (const kind of KINDS) count[kind] = { bytes: 0, keys: [] };
  const pending = [""];
  while (pending.length > 0) {
    const dir = pending.pop()!;
    for await (const entry of Deno.readDir(`${lake}/${dir}`)) {
      const key = `${dir}${entry.name}`;
      if (entry.isDirectory) pending.push(`${key}/`);
      if (!entry.isFile || TEMP_FILE.test(key)) continue;
      const kind = kindOf(key);
      count[kind].keys.push(key);
      count[kind].bytes += (await Deno.stat(`${lake}/${key}`)).size;
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
    file_bytes += reader.size_bytes;
    for (let i = 0; i < reader.block_count; i++) {
      for (const { value } of reader.readBlock(i)) {
        if (value.kind === "image") raw_bytes += 8192;
        else for (const range of value.ranges) raw_bytes += range.bytes.length + 4;
      }
    }
    reader.close();
  }
  return raw_bytes / file_bytes;
}

/** Part 1: pgbench on a lake-backed cluster, then the lake's objects per GB of WAL. */
async function benchObjects(dir: string) {
  const lake = `${dir}/lake`;
  const cluster = await startCluster(`${dir}/local`, `file://${lake}`);
  const compute = await startCompute(cluster);
  const lsn_start = await walLsn(compute);
  progress("part 1: cluster up, pgbench -i");
  const [, init_ms] = await timed(() => pgbench(compute, ["-i", "-s", String(PGBENCH_SCALE)]));
  progress("pgbench run");
  const [out, run_ms] = await timed(() => pgbench(compute, ["-c", "4", "-j", "4", "-T", `${PGBENCH_SECONDS}`, "-n"]));
  const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? NaN);
  const wal_bytes = Number(await walLsn(compute) - lsn_start);
  progress("stopping");
  const [, stop_ms] = await timed(() => stopInOrder([compute, cluster.ps, ...cluster.sks]));
  const lake_count = await countLake(lake);
  progress("decoding the layer objects");
  const layer_paths = lake_count.layer.keys.map((key) => `${lake}/${key}`);
  const [compression_ratio, ratio_ms] = await timed(() => compressionRatio(layer_paths));
  return { wal_bytes, lake_count, compression_ratio, tps, init_ms, run_ms, stop_ms, ratio_ms };
}

/** Spawns a compute and times it to the answer of `select count(*) from big`. */
async function firstQuery(cluster: Cluster) {
  const started_ms = performance.now();
  const compute = await startCompute(cluster);
  const [{ n }] = await withSql(compute, (sql) => sql`select count(*)::int as n from big`);
  const answered_ms = performance.now();
  return { first_query_ms: answered_ms - started_ms, answered_ms, rows: n as number, compute };
}

/** A ~100 MB table on a fresh cluster, a fresh compute's first query (baseline), a clean stop. */
async function loadBig(dir: string, lake: string) {
  const cluster = await startCluster(dir, lake);
  const loader = await startCompute(cluster);
  const lsn_start = await walLsn(loader);
  progress("part 2: loading table big");
  const [, load_ms] = await timed(() => withSql(loader, (sql) => sql.unsafe(BIG_SQL)));
  // Read once: sets the hint bits, so that the timed reads below write no WAL.
  const [{ size_bytes }] = await withSql(loader, async (sql) => {
    await sql`select count(*) from big`;
    return await sql`select pg_database_size('postgres')::float8 as size_bytes`;
  });
  const lsn_end = await walLsn(loader);
  await stopInOrder([loader]);
  progress("baseline compute");
  const baseline = await firstQuery(cluster);
  await stopInOrder([baseline.compute, cluster.ps, ...cluster.sks]);
  return { lsn_end, wal_bytes: Number(lsn_end - lsn_start), size_bytes: size_bytes as number, load_ms, baseline };
}

/** Fresh processes on empty directories with the same lake, timed from the pageserver's spawn to the first answer. */
async function recover(dir: string, lake: string) {
  const cluster = await startCluster(dir, lake);
  const recovered = await firstQuery(cluster);
  await stopInOrder([recovered.compute, cluster.ps, ...cluster.sks]);
  const event = (name: string) => cluster.ps.events.find((e) => e.event === name);
  return {
    ps_listen_ms: cluster.ps_listen_ms,
    first_query_ms: recovered.first_query_ms,
    total_ms: recovered.answered_ms - cluster.ps_spawned_ms,
    rows: recovered.rows,
    layers: event("layers_downloaded"),
    wal: event("timeline_wal_downloaded"),
  };
}

/** Runs `step`; a failure kills what it left running and comes back as its message, so the other figures print. */
async function attempt<T>(step: () => Promise<T>): Promise<T | { error: string }> {
  try {
    return await step();
  } catch (error) {
    await Promise.all(running.splice(0).map((p) => p.kill()));
    return { error: String(error).replaceAll("\n", " ").slice(0, 300) };
  }
}

/** Part 2: load and baseline, every local directory deleted, the tenant recovered from the lake. */
async function benchRecovery(dir: string, lake: string) {
  const loaded = await attempt(() => loadBig(`${dir}/before`, lake));
  if ("error" in loaded) return loaded;
  const lake_count = await countLake(lake.slice("file://".length));
  await Deno.remove(`${dir}/before`, { recursive: true });
  progress("local directories deleted; recovering from the lake");
  return { ...loaded, lake_count, recovered: await attempt(() => recover(`${dir}/after`, lake)) };
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits });
const mb = (bytes: number) => fmt(bytes / 2 ** 20, 1);
const size = (bytes: number) => bytes < 2 ** 20 ? `${fmt(bytes / 1024, 1)} KB` : `${mb(bytes)} MB`;

function printTable(rows: [string, string][]): void {
  const width = Math.max(...rows.map(([name]) => name.length));
  for (const [name, value] of rows) console.log(`${name.padEnd(width)}  ${value}`);
}

function lakeRows(wal_bytes: number, count: LakeCount): [string, string][] {
  const per_gb = GB_BYTES / wal_bytes;
  const row = (name: string, objects: number, bytes: number): [string, string] => [
    `${name} objects: count (size); per GB of WAL`,
    `${objects} (${size(bytes)}); ${fmt(objects * per_gb, 1)} objects, ${size(bytes * per_gb)}`,
  ];
  const kinds = Object.values(count);
  const rows = [
    ["WAL written (LSN advance)", `${mb(wal_bytes)} MB`] as [string, string],
    ...KINDS.map((kind) => row(kind, count[kind].keys.length, count[kind].bytes)),
    row("all", kinds.reduce((n, k) => n + k.keys.length, 0), kinds.reduce((n, k) => n + k.bytes, 0)),
  ];
  const others = count.other.keys.map((key) => key.split("/").at(-1));
  if (others.length > 0) rows.push(["other objects", others.join(", ")]);
  return rows;
}

type Recovery = Awaited<ReturnType<typeof benchRecovery>>;

function recoveryRows(r: Recovery): [string, string][] {
  if ("error" in r) return [["load or baseline FAILED", r.error]];
  const base_ms = r.baseline.first_query_ms;
  const rows: [string, string][] = [
    ["database size / load time", `${mb(r.size_bytes)} MB / ${fmt(r.load_ms)} ms`],
    ...lakeRows(r.wal_bytes, r.lake_count),
    ["baseline: compute spawn -> first count(*)", `${fmt(base_ms)} ms (${r.baseline.rows} rows)`],
  ];
  const x = r.recovered;
  if ("error" in x) return [...rows, ["recovery FAILED", x.error]];
  const layers = x.layers === undefined ? "-" : `${mb(Number(x.layers.bytes))} MB in ${x.layers.elapsed_ms} ms`;
  return [
    ...rows,
    ["recovery: pageserver spawn -> listening", `${fmt(x.ps_listen_ms)} ms`],
    ["recovery: layers downloaded (lazily, at attach)", layers],
    ["recovery: compute spawn -> first count(*)", `${fmt(x.first_query_ms)} ms (${x.rows} rows)`],
    ["recovery: pageserver spawn -> first answer", `${fmt(x.total_ms)} ms`],
    ["ratio first count(*) recovered / baseline", `${fmt(x.first_query_ms / base_ms, 2)}x`],
    ["ratio pageserver spawn -> answer / baseline", `${fmt(x.total_ms / base_ms, 2)}x`],
    ["WAL end after the load / downloaded", `${formatLsn(r.lsn_end)} / ${x.wal?.wal_end ?? "-"}`],
  ];
}

/** Interrupted (Ctrl-C, `timeout`): kills the children and removes `dir` rather than leave them behind. */
function onSignal(dir: string): () => void {
  return () => {
    for (const p of running) {
      try {
        p.child.kill("SIGKILL");
      } catch { /* exited already */ }
    }
    Deno.removeSync(dir, { recursive: true });
    Deno.exit(130);
  };
}

async function main(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tarn-bench-lake-" });
  const interrupted = onSignal(dir);
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, interrupted);
  try {
    const o = await benchObjects(`${dir}/objects`);
    const attempts: Recovery[] = [];
    for (let i = 1; i <= RECOVERY_ATTEMPTS; i++) {
      attempts.push(await benchRecovery(`${dir}/recovery${i}`, `file://${dir}/recovery${i}/lake`));
      const last = attempts[i - 1];
      if (!("error" in last) && !("error" in last.recovered)) break;
      progress("part 2 failed; once more on a fresh lake");
    }
    console.log(`\n# Lake benchmark (pageservers with --gc-interval 1h)\n`);
    console.log(`## 1. Lake objects under pgbench TPC-B (-s ${PGBENCH_SCALE}, -c 4, -T ${PGBENCH_SECONDS}), file://`);
    printTable([
      ["pgbench -i / run / clean stop", `${fmt(o.init_ms)} / ${fmt(o.run_ms)} / ${fmt(o.stop_ms)} ms`],
      ["pgbench TPS (4 clients)", fmt(o.tps, 1)],
      ...lakeRows(o.wal_bytes, o.lake_count),
      ["layer compression (page bytes / file bytes)", `${fmt(o.compression_ratio, 2)}x (${fmt(o.ratio_ms)} ms)`],
    ]);
    for (const [i, r] of attempts.entries()) {
      console.log(`\n## 2. Disaster recovery, ${BIG_ROWS} rows in table big, file:// (attempt ${i + 1})`);
      printTable(recoveryRows(r));
    }
  } finally {
    await Promise.all(running.map((p) => p.kill())); // only what an error left running
    for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.removeSignalListener(signal, interrupted);
    await Deno.remove(dir, { recursive: true });
  }
}

await main();
