import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import pg from "pg";
import { EngineCrashedError, Tarn } from "../mod.ts";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";

Deno.test("engine crash, embedded: the statement rejects with EngineCrashedError and the next connect() works", async () => {
  const restarts: Record<string, unknown>[] = [];
  await using tarn = await Tarn.open(undefined, { log: (e, f) => e === "engine_restarted" && restarts.push(f) });
  const db = await tarn.connect();
  await db.exec("create table t (id int primary key)");
  await db.query("insert into t values (1), (2)");
  // COPY FROM STDIN has no client stream here: a clear error, where PGlite alone exits (or hangs).
  await rejects(db.query("copy t from stdin"), (e: { code?: string; message: string }) => {
    equal(e.code, "57014");
    ok(e.message.includes("COPY FROM STDIN needs a client"), e.message);
    return true;
  });
  deepStrictEqual((await db.query("select count(*)::int as n from t")).rows, [{ n: 2 }]);

  const { compute, release } = await tarn.attachCompute("main");
  compute.injectEngineFault();
  await rejects(db.query("insert into t values (3)"), EngineCrashedError);
  await release();
  const fresh = await tarn.connect();
  deepStrictEqual((await fresh.query("select id from t order by id")).rows, [{ id: 1 }, { id: 2 }]);
  await fresh.query("insert into t values (4)");
  deepStrictEqual((await db.query("select count(*)::int as n from t")).rows, [{ n: 3 }], "old handles work again");
  equal(restarts.length, 1);
  await fresh.close();
  await db.close();
});

type PgError = { code?: string; message: string };

Deno.test({
  name: "engine crash, server: killed mid-transaction of others, every acknowledged commit survives and it serves on",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tarn-engine-crash-" });
    const engine = await EngineHost.open({
      dir,
      compute_idle_ms: 60_000,
      page_cache_pages: 1024,
      fault_injection: true,
    });
    const server = TarnServer.start(engine, { port: 0 });
    const connect = () => connect_to("postgres");
    const connect_to = async (database: string) => {
      const client = new pg.Client({ host: "127.0.0.1", port: server.port, user: "postgres", database });
      client.on("error", () => {}); // a terminated connection also reports here
      await client.connect();
      return client;
    };
    const clients: pg.Client[] = [];
    try {
      const writer = await connect();
      clients.push(writer);
      await writer.query("create table acked (id int primary key)");
      for (let id = 1; id <= 50; id++) await writer.query("insert into acked values ($1)", [id]);

      // A transaction on another branch (its own compute) is not touched by main's failure.
      await writer.query("select 1"); // main idle
      const admin = await engine.admin({ op: "create", name: "dev" }).catch((e) => e);
      ok(!(admin instanceof Error), String(admin));
      const dev = await connect_to("dev");
      clients.push(dev);
      await dev.query("create table d (id int)");
      await dev.query("begin");
      await dev.query("insert into d values (1)");

      // On main: one session inside a transaction (the victim), one idle, one waiting for the backend.
      const victim = await connect();
      const idle = await connect();
      const waiting = await connect();
      clients.push(victim, idle, waiting);
      await victim.query("begin");
      await victim.query("insert into acked values (1001)");
      const queued = waiting.query("select count(*) from acked").then(() => "answered", (e: PgError) => e.code);

      const { compute, release } = await engine.attachCompute("main");
      await engine.injectFault(compute);
      await release();
      const failed_at_ms = performance.now();
      await rejects(victim.query("insert into acked values (1002)"), (e: PgError) => {
        equal(e.code, "58000");
        ok(e.message.includes("engine failed"), e.message);
        return true;
      });
      // The others of main lost their backend: their connection ends (57P02); dev goes on.
      await rejects(idle.query("select 1"));
      ok((await queued) !== undefined);
      await dev.query("insert into d values (2)");
      await dev.query("commit");
      deepStrictEqual((await dev.query("select count(*)::int as n from d")).rows, [{ n: 2 }]);

      const after = await connect();
      clients.push(after);
      const { rows } = await after.query("select count(*)::int as n, max(id) as top from acked");
      const recovery_ms = performance.now() - failed_at_ms;
      console.log(`engine failure to next successful query: ${recovery_ms.toFixed(0)} ms`);
      deepStrictEqual(rows, [{ n: 50, top: 50 }], "every acknowledged commit, nothing uncommitted");
      await after.query("insert into acked values (51)");

      const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
      ok(/^tarn_engine_failures_total 1$/m.test(metrics), metrics);
      ok(/^tarn_sessions_terminated_total [1-9]/m.test(metrics), metrics);
    } finally {
      for (const client of clients) await client.end().catch(() => {});
      await server.close();
      await engine.close();
    }
    // And from storage, after a clean stop: the same rows.
    await using tarn = await Tarn.open(dir);
    const db = await tarn.connect();
    deepStrictEqual((await db.query("select count(*)::int as n from acked")).rows, [{ n: 51 }]);
    await db.close();
    await tarn.close();
    await Deno.remove(dir, { recursive: true });
  },
});
