/**
 * Scale to zero on a pageserver (3 safekeepers, a pageserver, `tarn compute --suspend-after 1s`, each in its own
 * process): the first query after a suspend (a new connection and `select`, so the compute starts again: election,
 * attach, Postgres on a parked engine) against the same on the running compute; RSS running and suspended.
 *
 * Run: `deno run -A bench/suspend.ts [rounds]`.
 *
 * @module
 */
import postgres from "postgres";
import { spawnCompute, type TarnProcess, withCluster } from "../tests/fixtures/tarn_process.ts";

const rounds = Number(Deno.args[0] ?? 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function rssMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? "0") / 1024;
}

/** A new connection, one query, its close: ms to the result. */
async function firstQuery(compute: TarnProcess): Promise<number> {
  const started_ms = performance.now();
  const sql = postgres(`postgresql://postgres@127.0.0.1:${compute.port}/postgres`, { max: 1, onnotice: () => {} });
  const [{ n }] = await sql`select count(*)::int as n from t`;
  const ms = performance.now() - started_ms;
  await sql.end();
  if (n !== 1000) throw new Error(`read ${n} rows, wrote 1000`);
  return ms;
}

async function suspensions(compute: TarnProcess, count: number): Promise<void> {
  const deadline_ms = performance.now() + 30_000;
  while (compute.events.filter((e) => e.event === "compute_suspended").length < count) {
    if (performance.now() > deadline_ms) throw new Error("the compute did not suspend");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const dir = await Deno.makeTempDir({ prefix: "tarn-bench-suspend-" });
try {
  await withCluster(dir, async ({ sks, ps, started }) => {
    const compute = await spawnCompute(ps, sks, "bench", ["--suspend-after", "1s"]);
    started.push(compute);
    const sql = postgres(`postgresql://postgres@127.0.0.1:${compute.port}/postgres`, { max: 1, onnotice: () => {} });
    await sql`create table t as select g as id, md5(g::text) as pad from generate_series(1, 1000) g`;
    await sql.end();
    const resumed = [];
    const running = [];
    const rss = { running: 0, suspended: 0 };
    for (let i = 1; i <= rounds; i++) {
      await suspensions(compute, i);
      await new Promise((resolve) => setTimeout(resolve, 300)); // the pool parks its next engine meanwhile
      rss.suspended = await rssMb(compute.child.pid);
      resumed.push(await firstQuery(compute));
      running.push(await firstQuery(compute));
      rss.running = await rssMb(compute.child.pid);
    }
    const ratio = (median(resumed) / median(running)).toFixed(1);
    console.log(
      `first query after a suspend: median ${median(resumed).toFixed(0)} ms (${resumed.map((ms) => ms.toFixed(0))}); ` +
        `on the running compute: ${median(running).toFixed(1)} ms; ratio ${ratio}x`,
    );
    console.log(`RSS: ${rss.running.toFixed(0)} MB running, ${rss.suspended.toFixed(0)} MB suspended`);
  });
} finally {
  await Deno.remove(dir, { recursive: true });
}
