import { deepStrictEqual, rejects } from "node:assert/strict";
// @ts-types="npm:@types/pg@8.23.1"
import pg from "pg";
import postgres from "postgres";
import { Tarn } from "../mod.ts";
import { TarnServer } from "../src/server/server.ts";

Deno.test({
  name: "server auth: SCRAM-SHA-256 lets the right password in and keeps wrong or missing ones out",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using tarn = await Tarn.open();
    const server = TarnServer.start(tarn, { port: 0, password: "s3cret-Ünïcode" });
    try {
      const base = { host: "127.0.0.1", port: server.port, user: "postgres", database: "postgres" };
      const good = new pg.Client({ ...base, password: "s3cret-Ünïcode" });
      await good.connect();
      deepStrictEqual((await good.query("select 1 as one")).rows, [{ one: 1 }]);
      await good.end();
      const sql = postgres({ ...base, password: "s3cret-Ünïcode", max: 1 });
      deepStrictEqual([...await sql`select 2 as two`], [{ two: 2 }]);
      await sql.end();
      const wrong = new pg.Client({ ...base, password: "guess" });
      wrong.on("error", () => {});
      await rejects(wrong.connect(), /password authentication failed/);
      const none = new pg.Client({ ...base });
      none.on("error", () => {});
      await rejects(none.connect());
    } finally {
      await server.close();
    }
  },
});
