/**
 * Replica benchmark (`tarn start`'s engine in a Worker, in this process): the lag a reader on `postgres-ro` sees
 * under a pgbench TPC-B write load on the primary, and reads per second on the replica against the primary alone.
 *
 * Lag of a value: from the moment its UPDATE was acknowledged on the primary to the first replica read that saw
 * it. Run: `deno run -A bench/replica.ts [seconds]`.
 *
 * @module
 */
import postgres from "postgres";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { counterLag, percentile } from "./counter_lag.ts";

const MAX_LAG_MS = 1000;
const seconds = Number(Deno.args[0] ?? 20);

const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 4096 });
const server = TarnServer.start(engine, { port: 0, replica_max_lag_ms: MAX_LAG_MS });
const url = (database: string) => `postgres://postgres@127.0.0.1:${server.port}/${database}`;
try {
  const init = await new Deno.Command("pgbench", { args: ["-i", "-s", "2", "-q", url("postgres")], stderr: "null" })
    .output();
  if (!init.success) throw new Error("pgbench -i failed (is Debian's postgresql-client installed?)");
  const primary = postgres(url("postgres"), { max: 1 });
  const replica = postgres(url("postgres-ro"), { max: 1 });

  const read_rate = async (sql: postgres.Sql, ms: number) => {
    let reads = 0;
    const until_ms = performance.now() + ms;
    while (performance.now() < until_ms) {
      await sql`select abalance from pgbench_accounts where aid = ${1 + (reads * 7919) % 200_000}`;
      reads++;
    }
    return reads / (ms / 1000);
  };
  const idle_primary_rps = await read_rate(primary, 3000);
  const idle_replica_rps = await read_rate(replica, 3000);

  const pgbench = (args: string[]) =>
    new Deno.Command("pgbench", { args: [...args, "-n", url("postgres")], stdout: "piped", stderr: "piped" })
      .output().then((out) => /tps = ([\d.]+)/.exec(new TextDecoder().decode(out.stdout))?.[1] ?? "?");
  const alone_tps = await pgbench(["-c", "2", "-T", String(Math.min(10, seconds))]);
  const load = pgbench(["-c", "2", "-T", String(seconds)]);
  const { lags_ms, reads } = await counterLag(primary, replica, seconds);
  const tps = await load;
  const [{ lsn }] = await replica`select current_setting('tarn.replay_lsn') as lsn`;
  await primary.end();
  await replica.end();
  console.log(
    `replica lag under pgbench -c 2 (${tps} tps on the primary; ${alone_tps} tps with no replica reader), ` +
      `max lag ${MAX_LAG_MS} ms, ${seconds} s:`,
  );
  console.log(
    `  lag p50 ${percentile(lags_ms, 0.5).toFixed(0)} ms, p99 ${percentile(lags_ms, 0.99).toFixed(0)} ms, max ${
      Math.max(...lags_ms).toFixed(0)
    } ms over ${lags_ms.length} values; ${reads} replica reads (${(reads / seconds).toFixed(0)}/s); at ${lsn}`,
  );
  console.log(
    `point reads/s, no writes: primary ${idle_primary_rps.toFixed(0)}, replica ${idle_replica_rps.toFixed(0)} ` +
      `(ratio ${(idle_replica_rps / idle_primary_rps).toFixed(2)}x; one engine Worker runs both)`,
  );
} finally {
  await server.close();
  await engine.close();
}
