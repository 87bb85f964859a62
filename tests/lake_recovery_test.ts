// Disaster recovery from the lake: three safekeepers and a pageserver with one remote store (a real S3 API server,
// s3rver), written to under load on two branches, stopped cleanly, every local directory deleted; fresh processes on
// empty directories with the same remote serve every acknowledged commit on every branch.
import { deepEqual, equal, ok } from "node:assert/strict";
import postgres from "postgres";
import { spawnCompute, spawnPageserver, spawnSafekeeper, type TarnProcess } from "./fixtures/tarn_process.ts";
import { BUCKET, withS3 } from "./fixtures/s3_server.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const connect = (compute: TarnProcess) =>
  postgres(`postgresql://postgres@127.0.0.1:${compute.port}/postgres`, {
    max: 1,
    onnotice: () => {},
    connect_timeout: 30,
  });

/** Three safekeepers and a pageserver on empty directories under `dir`, all with `remote`. */
async function startCluster(dir: string, remote: string, env: Record<string, string>, started: TarnProcess[]) {
  const sks = await Promise.all(
    [1, 2, 3].map((id) => spawnSafekeeper(`${dir}/sk${id}`, id, 0, ["--remote", remote], env)),
  );
  started.push(...sks);
  const ps = await spawnPageserver(`${dir}/ps`, 0, ["--remote", remote], env);
  started.push(ps);
  return { sks, ps };
}

/** Inserts rows `from..to` into `t` on `clients` connections at once; resolves with the ids acknowledged. */
async function load(compute: TarnProcess, table: string, from: number, to: number, clients: number) {
  const acknowledged: number[] = [];
  let next = from;
  await Promise.all(Array.from({ length: clients }, async () => {
    const sql = connect(compute);
    try {
      for (let id = next++; id <= to; id = next++) {
        await sql`insert into ${sql(table)} values (${id}, repeat('x', 200))`;
        acknowledged.push(id);
      }
    } finally {
      await sql.end();
    }
  }));
  return acknowledged.sort((a, b) => a - b);
}

Deno.test({
  name: "lake: every local directory deleted, fresh processes with the same remote serve every acknowledged commit",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withS3((env) =>
      withTempDir(async (dir) => {
        const remote = `s3://${BUCKET}/lake`;
        const started: TarnProcess[] = [];
        try {
          const before = await startCluster(`${dir}/before`, remote, env, started);
          const main = await spawnCompute(before.ps, before.sks, "acme");
          started.push(main);
          const sql = connect(main);
          await sql`create table t (id int primary key, pad text)`;
          await sql.end();
          const main_acked = await load(main, "t", 1, 800, 4);
          const api = `http://127.0.0.1:${before.ps.port}/v1/tenants/acme/branches`;
          const created = await fetch(api, { method: "POST", body: JSON.stringify({ name: "dev" }) });
          equal(created.status, 201, await created.text());
          const dev = await spawnCompute(before.ps, before.sks, "acme", ["--branch", "dev"]);
          started.push(dev);
          const dev_acked = await load(dev, "t", 100_001, 100_200, 2);
          main_acked.push(...await load(main, "t", 801, 1000, 2));
          // The lake has main's layers within a few seconds, and /status says how far behind it is.
          const status_url = `http://127.0.0.1:${before.ps.port}/status`;
          let lake: Record<string, number> = {};
          for (let i = 0; i < 100 && !(lake.remote_layers > 0); i++) {
            const status = await (await fetch(status_url)).json();
            lake = status.tenants[0].branches.find((b: { name: string }) => b.name === "main").storage;
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
          ok(lake.remote_layers > 0 && lake.remote_bytes > 0 && lake.local_bytes > 0, JSON.stringify(lake));
          // A clean stop, computes first: each role uploads what the lake does not have yet.
          for (const p of [main, dev, before.ps, ...before.sks]) equal(await p.stop(), 0);
          started.length = 0;
          await Deno.remove(`${dir}/before`, { recursive: true });

          const after = await startCluster(`${dir}/after`, remote, env, started);
          ok(after.ps.events.some((e) => e.event === "tenant_downloaded"), "the pageserver found the tenant");
          for (const [branch, acked] of [["main", main_acked], ["dev", dev_acked]] as const) {
            const compute = await spawnCompute(
              after.ps,
              after.sks,
              "acme",
              branch === "main" ? [] : ["--branch", branch],
            );
            started.push(compute);
            const read = connect(compute);
            const ids = (await read`select id from t order by id`).map((r) => r.id as number);
            const missing = acked.filter((id) => !ids.includes(id));
            deepEqual(missing, [], `${branch}: acknowledged commits missing after recovery`);
            // The dev branch also holds main's rows from before it was made; main holds none of dev's.
            if (branch === "main") ok(ids.every((id) => id < 100_001));
            else ok(ids.some((id) => id < 100_001) && ids.some((id) => id > 100_000));
            await read`insert into t values (999999, 'after recovery')`;
            await read.end();
          }
        } finally {
          await Promise.all(started.map((p) => p.kill()));
        }
      })
    ),
});
