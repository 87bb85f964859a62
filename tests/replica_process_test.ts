import { equal, ok } from "node:assert/strict";
import postgres from "postgres";
import { spawnCompute, type TarnProcess, withCluster } from "./fixtures/tarn_process.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const connect = (compute: TarnProcess) =>
  postgres(`postgresql://postgres@127.0.0.1:${compute.port}/postgres`, {
    max: 1,
    onnotice: () => {},
    connect_timeout: 30,
  });

/** Polls `read` until it answers `want` (within `limit_ms`); the time it took. */
async function until(read: () => Promise<number>, want: number, limit_ms: number): Promise<number> {
  const started_ms = performance.now();
  for (;;) {
    let error = "";
    const got = await read().catch((e) => (error = String(e), -1));
    if (got >= want) return performance.now() - started_ms;
    if (performance.now() - started_ms > limit_ms) {
      throw new Error(`still ${got}, not ${want}, after ${limit_ms} ms ${error}`);
    }
    await sleep(50);
  }
}

Deno.test({
  name:
    "replica process: two replicas on a pageserver follow the primary, serve on when it is SIGKILLed, follow the next",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir((dir) =>
      withCluster(dir, async ({ sks, ps, started }) => {
        const primary = await spawnCompute(ps, sks, "acme");
        started.push(primary);
        const writer = connect(primary);
        await writer`create table counter (n int)`;
        await writer`insert into counter values (1)`;
        const replicas = await Promise.all([1, 2].map(() => spawnCompute(ps, sks, "acme", ["--replica"])));
        started.push(...replicas);
        const readers = replicas.map(connect);
        const read = (i: number) => async () => (await readers[i]`select n from counter`)[0].n as number;
        for (const i of [0, 1]) await until(read(i), 1, 30_000);
        // Each acknowledged value is on both replicas within the lag bound (1 s) plus the time to poll.
        const generations = () =>
          JSON.stringify(replicas[0].events.filter((e) => e.event === "replica_generation").map((e) => e.start_ms));
        // Each acknowledged value reaches both replicas, and a replica never goes back. How soon depends on how
        // long a read-only compute takes to start here (bench/replica.ts measures it): not asserted.
        const took_ms: number[] = [];
        for (let n = 2; n <= 3; n++) {
          await writer`update counter set n = ${n}`;
          for (const i of [0, 1]) took_ms.push(await until(read(i), n, 10_000));
          for (const i of [0, 1]) ok(await read(i)() >= n, `replica ${i} went back below ${n}`);
        }
        console.log(`seen after (ms): ${took_ms.map(Math.round).join(", ")}`);
        const write = await readers[0]`insert into counter values (0)`.then(() => "", (e) => e.code);
        equal(write, "25006");
        console.log(`replica generation starts (ms): ${generations()}`);
        await writer.end();
        await primary.kill();
        for (const i of [0, 1]) equal(await read(i)(), 3, "the replicas serve on without the primary");
        const next = await spawnCompute(ps, sks, "acme");
        started.push(next);
        const writer2 = connect(next);
        await writer2`update counter set n = 4`;
        for (const i of [0, 1]) await until(read(i), 4, 10_000);
        await writer2.end();
        for (const reader of readers) await reader.end();
      })
    ),
});
