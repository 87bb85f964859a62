import { deepStrictEqual, ok } from "node:assert/strict";
import pg from "pg";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage, cStrings } from "../src/server/wire.ts";
import { startupPacket } from "./fixtures/startup_packet.ts";

Deno.test({
  name: "server: a client that leaves mid-statement has it cancelled and rolled back; the engine is free at once",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024 });
    const server = TarnServer.start(engine, { port: 0 });
    const other = new pg.Client({ host: "127.0.0.1", port: server.port, user: "postgres" });
    try {
      await other.connect();
      await other.query("create table t (id int)");
      // A raw client: begin, insert, then a long statement, and it goes away while that runs.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await conn.write(startupPacket());
      // pg_sleep cannot be interrupted inside PGlite (its wait never checks for interrupts): a long query can.
      const sql =
        "begin; insert into t values (1); select count(*) from generate_series(1, 8000) a, generate_series(1, 8000) b";
      await conn.write(backendMessage("Q", cStrings(sql)));
      await new Promise((resolve) => setTimeout(resolve, 500)); // the sleep is running
      conn.close();
      const left_ms = performance.now();
      deepStrictEqual((await other.query("select count(*)::int as n from t")).rows, [{ n: 0 }], "rolled back");
      const freed_ms = performance.now() - left_ms;
      console.log(`engine free ${freed_ms.toFixed(0)} ms after the client left mid-statement`);
      ok(freed_ms < 10_000, `the statement ran on for ${freed_ms} ms`);
    } finally {
      await other.end();
      await server.close();
      await engine.close();
    }
  },
});
