/**
 * Replicas on a pageserver, each compute in its own process (3 safekeepers, a pageserver, a primary, a replica):
 *
 * - read scale-out: `pgbench -S` (select-only, 4 clients, scale 1) against the primary alone, then 2 clients on the primary
 *   and 2 on the replica at once; the ratio of total transactions per second;
 * - lag under writes: a counter updated on the primary every 20 ms beside `pgbench -c 2` (TPC-B) on it, read on the
 *   replica in a loop: for each value, from its acknowledgement to the first replica read that saw it (p50, p99),
 *   and how long each replica generation took to start.
 *
 * Run: `deno run -A bench/replica_scaleout.ts [seconds]`.
 *
 * @module
 */
import postgres from "postgres";
import { counterLag, percentile } from "./counter_lag.ts";
import { spawnCompute, spawnPageserver, spawnSafekeeper, type TarnProcess } from "../tests/fixtures/tarn_process.ts";

const seconds = Number(Deno.args[0] ?? 15);
const url = (compute: TarnProcess) => `postgresql://postgres@127.0.0.1:${compute.port}/postgres`;

/** Runs pgbench (`args`) against each compute at once; the sum of their tps. */
async function pgbench(computes: TarnProcess[], args: string[]): Promise<number> {
  const runs = computes.map((compute) =>
    new Deno.Command("pgbench", { args: [...args, "-n", url(compute)], stdout: "piped", stderr: "piped" }).output()
  );
  let total = 0;
  for (const run of await Promise.all(runs)) {
    const text = new TextDecoder().decode(run.stdout);
    const tps = Number(/tps = ([\d.]+)/.exec(text)?.[1]);
    if (!Number.isFinite(tps)) throw new Error(`pgbench: ${text}${new TextDecoder().decode(run.stderr)}`);
    total += tps;
  }
  return total;
}

const dir = await Deno.makeTempDir({ prefix: "tarn-bench-replica-" });
const started: TarnProcess[] = [];
try {
  const sks = await Promise.all([1, 2, 3].map((id) => spawnSafekeeper(`${dir}/sk${id}`, id)));
  started.push(...sks);
  const ps = await spawnPageserver(`${dir}/ps`);
  started.push(ps);
  const primary = await spawnCompute(ps, sks, "bench");
  started.push(primary);
  const init = await new Deno.Command("pgbench", { args: ["-i", "-s", "1", "-q", url(primary)], stderr: "null" })
    .output();
  if (!init.success) throw new Error("pgbench -i failed (is Debian's postgresql-client installed?)");
  const replica = await spawnCompute(ps, sks, "bench", ["--replica"]);
  started.push(replica);
  await pgbench([replica], ["-S", "-c", "1", "-T", "3"]); // the replica's first compute starts and warms its cache
  await pgbench([primary], ["-S", "-c", "1", "-T", "3"]);

  const alone = await pgbench([primary], ["-S", "-c", "4", "-j", "2", "-T", String(seconds)]);
  const split = await pgbench([primary, replica], ["-S", "-c", "2", "-T", String(seconds)]);
  console.log(
    `pgbench -S, 4 clients: primary alone ${alone.toFixed(0)} tps; 2 on the primary + 2 on a replica ` +
      `${split.toFixed(0)} tps (${(split / alone).toFixed(2)}x)`,
  );

  const writer = postgres(url(primary), { max: 1 });
  const reader = postgres(url(replica), { max: 1 });
  const load = pgbench([primary], ["-c", "2", "-T", String(seconds)]);
  const { lags_ms, reads } = await counterLag(writer, reader, seconds);
  const tps = await load;
  await writer.end();
  await reader.end();
  const starts = replica.events.filter((e) => e.event === "replica_generation").map((e) => Number(e.start_ms));
  console.log(
    `replica lag under pgbench -c 2 (${tps.toFixed(0)} tps) and a counter updated every 20 ms, max lag 1 s: ` +
      `p50 ${percentile(lags_ms, 0.5).toFixed(0)} ms, p99 ${percentile(lags_ms, 0.99).toFixed(0)} ms over ` +
      `${lags_ms.length} values, ${reads} reads; ${starts.length} replica computes, start p50 ${
        percentile(starts, 0.5)
      } ms, ` +
      `max ${Math.max(...starts)} ms`,
  );
} finally {
  await Promise.all(started.map((p) => p.kill()));
  await Deno.remove(dir, { recursive: true });
}
