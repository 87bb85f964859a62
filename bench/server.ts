/**
 * Server benchmarks: pgbench TPC-B (scale 10, 4 clients, 20 s) against `tarn start`, against pglite-socket serving
 * the same PGlite, and against this machine's native PostgreSQL when one is installed; connection setup p50/p99.
 * Data is generated server-side (`pgbench -i -I dtGvp`): pglite-socket cannot take COPY.
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";
// @ts-types="npm:@types/pg@8.23.1"
import pg from "pg";
import { Tarn } from "../mod.ts";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";

/** One target's pgbench result. */
export type PgbenchResult = { name: string; tps: number } | { name: string; skipped: string };

async function pgbench(url: string, args: string[]): Promise<string> {
  const output = await new Deno.Command("pgbench", { args: [...args, url], stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`pgbench ${args.join(" ")} failed: ${text.slice(-500)}`);
  return text;
}

/** pgbench TPC-B on `url`: initialise at `scale`, then 4 clients for `seconds`; resolves with the TPS. */
export async function tpcb(url: string, scale: number, seconds: number): Promise<number> {
  await pgbench(url, ["-i", "-I", "dtGvp", "-s", String(scale)]);
  const out = await pgbench(url, ["-c", "4", "-j", "4", "-T", String(seconds)]);
  return Number(/tps = ([\d.]+)/.exec(out)![1]);
}

async function connectionTimes(port: number, count: number): Promise<{ p50_ms: number; p99_ms: number }> {
  const times = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const client = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "postgres" });
    await client.connect();
    await client.query("select 1");
    times.push(performance.now() - started);
    await client.end();
  }
  times.sort((a, b) => a - b);
  return { p50_ms: times[Math.floor(count * 0.5)], p99_ms: times[Math.floor(count * 0.99)] };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

async function nativePostgres<T>(fn: (url: string) => Promise<T>): Promise<T | string> {
  const bin = [...Deno.readDirSync("/usr/lib/postgresql")].map((e) => `/usr/lib/postgresql/${e.name}/bin`)
    .find((dir) => {
      try {
        return Deno.statSync(`${dir}/initdb`).isFile;
      } catch {
        return false;
      }
    });
  if (bin === undefined) return "no native PostgreSQL server installed";
  const dir = await Deno.makeTempDir({ prefix: "tarn-bench-native-" });
  const port = freePort();
  const as_postgres = Deno.uid() === 0 ? ["runuser", "-u", "postgres", "--"] : [];
  const run = (args: string[]) =>
    new Deno.Command(as_postgres[0] ?? args[0], {
      args: as_postgres.length ? [...as_postgres.slice(1), ...args] : args.slice(1),
      stdout: "null",
      stderr: "piped",
    }).output();
  try {
    if (as_postgres.length) await new Deno.Command("chown", { args: ["postgres", dir] }).output();
    await run([`${bin}/initdb`, "-D", `${dir}/data`, "-A", "trust", "-U", "postgres"]);
    const started = await run([`${bin}/pg_ctl`, "-D", `${dir}/data`, "-o", `-p ${port} -k ${dir}`, "-w", "start"]);
    if (!started.success) return `native PostgreSQL did not start: ${new TextDecoder().decode(started.stderr)}`;
    try {
      return await fn(`postgresql://postgres@127.0.0.1:${port}/postgres`);
    } finally {
      await run([`${bin}/pg_ctl`, "-D", `${dir}/data`, "-m", "fast", "stop"]);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** pgbench TPS on each target, and Tarn's connection setup times. */
export async function benchServer(scale: number, seconds: number) {
  const results: PgbenchResult[] = [];
  // As `tarn start` runs it: the engine in a Worker, on a directory, with its 128 MB page cache.
  const dir = await Deno.makeTempDir({ prefix: "tarn-bench-server-" });
  const engine = await EngineHost.open({
    dir,
    compute_idle_ms: 60_000,
    page_cache_pages: 128 * 128,
    block_cache_bytes: 64 << 20,
  });
  const server = TarnServer.start(engine, { port: 0 });
  const connection = await connectionTimes(server.port, 200);
  results.push({
    name: "tarn start",
    tps: await tpcb(`postgresql://postgres@127.0.0.1:${server.port}/postgres`, scale, seconds),
  });
  await server.close();
  await engine.close();
  await Deno.remove(dir, { recursive: true });

  // The same engine on the server's own thread (no Worker, no cancel): what the Worker costs or gains.
  const same_thread_dir = await Deno.makeTempDir({ prefix: "tarn-bench-server-" });
  const tarn = await Tarn.open(same_thread_dir, { page_cache_pages: 128 * 128, block_cache_bytes: 64 << 20 });
  const same_thread = TarnServer.start(tarn, { port: 0 });
  results.push({
    name: "tarn, engine on the server thread",
    tps: await tpcb(`postgresql://postgres@127.0.0.1:${same_thread.port}/postgres`, scale, seconds),
  });
  await same_thread.close();
  await tarn.close();
  await Deno.remove(same_thread_dir, { recursive: true });

  const db = await PGlite.create();
  const socket_port = freePort();
  const socket = new PGLiteSocketServer({ db, port: socket_port, host: "127.0.0.1", maxConnections: 8 });
  await socket.start();
  try {
    results.push({
      name: "pglite-socket",
      tps: await tpcb(`postgresql://postgres@127.0.0.1:${socket_port}/postgres`, scale, seconds),
    });
  } catch (error) {
    results.push({ name: "pglite-socket", skipped: String(error).slice(0, 200) });
  }
  await socket.stop();
  await db.close();

  const native = await nativePostgres((url) => tpcb(url, scale, seconds));
  results.push(
    typeof native === "number"
      ? { name: "native PostgreSQL", tps: native }
      : { name: "native PostgreSQL", skipped: native },
  );
  return { results, connection };
}
