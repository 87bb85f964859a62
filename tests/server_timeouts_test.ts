import { equal, ok } from "node:assert/strict";
import pg from "pg";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { withPgServer } from "./fixtures/pg_server.ts";

type PgError = { code?: string; message: string };
const LONG = "select count(*) from generate_series(1, 8000) a, generate_series(1, 8000) b";

Deno.test({
  name: "server timeouts: statement_timeout from a pool's startup or SET, and the idle-in-transaction timeout",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024 });
    const server = TarnServer.start(engine, { port: 0 });
    const base = { host: "127.0.0.1", port: server.port, user: "postgres" };
    const pool = new pg.Pool({ ...base, max: 2, statement_timeout: 300 });
    const plain = new pg.Client(base);
    plain.on("error", () => {});
    try {
      // A pool that sets statement_timeout connects, and a long statement is cancelled by it.
      equal((await pool.query("show statement_timeout")).rows[0].statement_timeout, "300ms");
      const started_ms = performance.now();
      await pool.query(LONG).then(() => ok(false, "not cancelled"), (e: PgError) => {
        equal(e.code, "57014");
        equal(e.message, "canceling statement due to statement timeout");
      });
      ok(performance.now() - started_ms < 5_000);
      equal((await pool.query("select 1 as one")).rows[0].one, 1);

      // SET works too, and SET 0 lifts it.
      await plain.connect();
      await plain.query("set statement_timeout = '200ms'");
      await plain.query(LONG).then(() => ok(false, "not cancelled"), (e: PgError) => equal(e.code, "57014"));
      await plain.query("set statement_timeout = 0");
      equal((await plain.query("select 2 as two")).rows[0].two, 2);

      // The session's own idle-in-transaction timeout: terminated as PostgreSQL does, its transaction rolled back.
      await plain.query("create table t (id int)");
      await plain.query("set idle_in_transaction_session_timeout = 300");
      await plain.query("begin");
      await plain.query("insert into t values (1)");
      await new Promise((resolve) => setTimeout(resolve, 2_500));
      await plain.query("commit").then(() => ok(false, "still in its transaction"), () => {});
      equal((await pool.query("select count(*)::int as n from t")).rows[0].n, 0);
    } finally {
      await plain.end().catch(() => {});
      await pool.end();
      await server.close();
      await engine.close();
    }
  },
});

Deno.test({
  name: "server timeouts: ALTER DATABASE and ALTER ROLE ... SET apply to new sessions; startup options override them",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withPgServer({}, async (_port, connect) => {
      const show = async (client: pg.Client) =>
        (await client.query("show statement_timeout")).rows[0].statement_timeout;
      const admin = await connect();
      await admin.query("alter database postgres set statement_timeout = '250ms'");
      equal(await show(admin), "0", "a running session keeps what it had");
      const after = await connect();
      equal(await show(after), "250ms");
      await after.query(LONG).then(() => ok(false, "not cancelled"), (e: PgError) => equal(e.code, "57014"));
      // The role's setting wins over the database's; the startup packet's over both.
      await admin.query("alter role postgres set statement_timeout = '400ms'");
      equal(await show(await connect()), "400ms");
      equal(await show(await connect({ options: "-c statement_timeout=0" })), "0");
      await admin.query("alter role postgres reset statement_timeout; alter database postgres reset statement_timeout");
      equal(await show(await connect()), "0");
    }),
});
