/**
 * Safekeeper benchmarks: commit latency and pgbench TPC-B TPS of `tarn start` (engine in a Worker, as shipped)
 * with its WAL on 3 local `tarn safekeeper` processes, against the embedded WAL log (local fdatasync), and with
 * one of the 3 safekeepers down.
 *
 * @module
 */
import postgres from "postgres";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { spawnSafekeeper, type TarnProcess } from "../tests/fixtures/tarn_process.ts";
import { tpcb } from "./server.ts";

/** One configuration's figures. */
export type QuorumResult = { name: string; tps: number; commit_p50_ms: number; commit_p99_ms: number };

async function commitLatencies(port: number, count: number): Promise<{ p50_ms: number; p99_ms: number }> {
  const sql = postgres({ host: "127.0.0.1", port, user: "postgres", max: 1, onnotice: () => {} });
  try {
    await sql`create table if not exists bench_commits (id int, at timestamptz default now())`;
    const times: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await sql`insert into bench_commits (id) values (${i})`;
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return { p50_ms: times[Math.floor(count * 0.5)], p99_ms: times[Math.floor(count * 0.99)] };
  } finally {
    await sql.end();
  }
}

async function measure(name: string, scale: number, seconds: number, safekeepers?: string[]): Promise<QuorumResult> {
  const dir = await Deno.makeTempDir({ prefix: "tarn-bench-quorum-" });
  const engine = await EngineHost.open({
    dir,
    compute_idle_ms: 60_000,
    page_cache_pages: 128 * 128,
    block_cache_bytes: 64 << 20,
    safekeepers,
  });
  const server = TarnServer.start(engine, { port: 0 });
  try {
    const latency = await commitLatencies(server.port, 500);
    const tps = await tpcb(`postgresql://postgres@127.0.0.1:${server.port}/postgres`, scale, seconds);
    return { name, tps, commit_p50_ms: latency.p50_ms, commit_p99_ms: latency.p99_ms };
  } finally {
    await server.close();
    await engine.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** pgbench (`scale`, 4 clients, `seconds`) and commit latency: embedded WAL, 3 safekeepers, 3 with one down. */
export async function benchSafekeepers(scale: number, seconds: number): Promise<QuorumResult[]> {
  const results = [await measure("embedded WAL log", scale, seconds)];
  const dir = await Deno.makeTempDir({ prefix: "tarn-bench-safekeepers-" });
  const safekeepers: TarnProcess[] = [];
  try {
    for (const id of [1, 2, 3]) safekeepers.push(await spawnSafekeeper(`${dir}/sk${id}`, id));
    const addresses = safekeepers.map((sk) => `127.0.0.1:${sk.port}`);
    results.push(await measure("3 safekeepers", scale, seconds, addresses));
    await safekeepers[2].stop();
    results.push(await measure("3 safekeepers, one down", scale, seconds, addresses));
  } finally {
    for (const sk of safekeepers) await sk.stop().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
  return results;
}
