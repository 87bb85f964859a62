import { deepStrictEqual, equal, ok } from "node:assert/strict";
import type pg from "pg";
import { withPgServer } from "./fixtures/pg_server.ts";

type PgError = { code?: string; message: string };

/** A server over an in-memory engine, and plain node-postgres clients of it. */
const withServer = (idle_in_transaction_ms: number, fn: (connect: () => Promise<pg.Client>) => Promise<void>) =>
  withPgServer({ idle_in_transaction_ms }, (_port, connect) => fn(() => connect()));

const value = async (client: pg.Client, sql: string) => Object.values((await client.query(sql)).rows[0])[0];

Deno.test({
  name: "session state: each session keeps its own SET (search_path, DateStyle) and never sees another's",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withServer(60_000, async (connect) => {
      const a = await connect();
      const b = await connect();
      await a.query(
        "create schema other; create table other.where_am_i (x text); insert into other.where_am_i values ('other')",
      );
      await a.query("create table public.where_am_i (x text); insert into public.where_am_i values ('public')");
      await a.query("set search_path = other, public");
      await a.query("set datestyle = 'German'");
      for (let round = 0; round < 3; round++) {
        equal(await value(b, "show datestyle"), "ISO, MDY", `round ${round}: b sees its own DateStyle`);
        equal(await value(b, "select x from where_am_i"), "public");
        equal(await value(a, "show datestyle"), "German, DMY", `round ${round}: a keeps its DateStyle`);
        equal(await value(a, "select x from where_am_i"), "other");
        equal(await value(a, "select '2026-12-02'::date::text"), "02.12.2026");
      }
      await b.query("set datestyle = 'SQL, DMY'");
      equal(await value(a, "show datestyle"), "German, DMY");
      equal(await value(b, "show datestyle"), "SQL, DMY");
      await a.query("reset datestyle");
      equal(await value(b, "show datestyle"), "SQL, DMY");
      equal(await value(a, "show datestyle"), "ISO, MDY");
    }),
});

Deno.test({
  name: "session state: temporary tables of the same name in two sessions never meet",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withServer(300, async (connect) => {
      const a = await connect();
      const b = await connect();
      // A temporary table dropped by the end of its transaction does not hold the backend.
      await a.query("begin; create temp table scratch (x int) on commit drop; insert into scratch values (1); commit");
      equal(await value(b, "select 1 as one"), 1);

      await a.query("create temp table t (x int)");
      await a.query("insert into t values (1), (2)");
      equal(await value(a, "select count(*)::int from t"), 2);
      // b waits for the backend a keeps for its temporary table; a idles, so it is told why and disconnected.
      await b.query("create temp table t (x int)");
      equal(await value(b, "select count(*)::int from t"), 0, "b never sees a's rows");
      await b.query("insert into t values (42)");
      deepStrictEqual((await b.query("select x from t")).rows, [{ x: 42 }]);
      const after = await a.query("select count(*) from t").then(() => "served", (e: PgError) => e.message);
      ok(after !== "served", "a was disconnected, its temporary table gone");
      const c = await connect();
      await b.query("drop table t");
      equal(await value(c, "select count(*)::int from pg_class where relname = 't' and relpersistence = 't'"), 0);
    }),
});

Deno.test({
  name:
    "session state: a session keeps its authorization and SQL-prepared statements; the next connection sees neither",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withServer(60_000, async (connect) => {
      const a = await connect();
      const b = await connect();
      await a.query("create role alice; create table secret (x int); revoke all on secret from public");
      await a.query("prepare answer as select 42 as x");
      await a.query("set session authorization alice");
      equal(await value(b, "select current_user"), "postgres", "b is not alice");
      equal(await value(b, "select count(*)::int from secret"), 0);
      equal(await value(a, "select current_user"), "alice", "a stays alice");
      await a.query("select count(*) from secret").then(
        () => ok(false, "alice read a table she was not granted"),
        (e: PgError) => equal(e.code, "42501"),
      );
      equal(await value(a, "execute answer"), 42, "a keeps its prepared statement");
      await a.end();
      const c = await connect();
      equal(await value(c, "select current_user"), "postgres");
      equal(
        await value(c, "select count(*)::int from pg_prepared_statements where from_sql"),
        0,
        "a's PREPARE is gone",
      );
    }),
});

Deno.test({
  name:
    "session state: pg_backend_pid() is the BackendKeyData pid; pg_terminate_backend and pg_cancel_backend reach another session by it",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withServer(60_000, async (connect) => {
      const [a, b, c] = [await connect(), await connect(), await connect()];
      const pid = (client: pg.Client) => (client as unknown as { processID: number }).processID;
      // Each session sees its own pid, the one its BackendKeyData gave, also in a transaction and in PL/pgSQL.
      for (const client of [a, b, c]) equal(await value(client, "select pg_backend_pid()"), pid(client));
      await b.query("begin");
      equal(await value(b, "select pg_backend_pid()"), pid(b));
      await b.query("commit");
      const plpgsql = "do $$ begin perform set_config('x.pid', pg_backend_pid()::text, false); end $$";
      await a.query(plpgsql);
      equal(await value(a, "select current_setting('x.pid')::int"), pid(a));
      ok(new Set([pid(a), pid(b), pid(c)]).size === 3);
      // A cancel reaches b's running statement, and b goes on.
      const long = b.query("select count(*) from generate_series(1, 8000) x, generate_series(1, 8000) y");
      await new Promise((resolve) => setTimeout(resolve, 200));
      equal(await value(a, `select pg_cancel_backend(${pid(b)})`), true);
      await long.then(() => ok(false, "not cancelled"), (e: PgError) => equal(e.code, "57014"));
      equal(await value(b, "select 1"), 1);
      // A terminate ends c's session with 57P01, as PostgreSQL does.
      const ended = new Promise<PgError>((resolve) => c.on("error", resolve));
      equal(await value(a, `SELECT pg_terminate_backend(${pid(c)});`), true);
      equal((await ended).code, "57P01");
      await c.query("select 1").then(() => ok(false, "c still runs"), () => {});
      equal(await value(a, "select pg_terminate_backend(999999)"), false, "no such session");
      equal(await value(b, "select 2"), 2, "b is untouched");
    }),
});

Deno.test({
  name: "session state: a connection alone on its branch leaves nothing prepared for the next one",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withServer(60_000, async (connect) => {
      const a = await connect();
      await a.query("prepare leftover as select 1");
      await a.query({ name: "protocol_level", text: "select 2" });
      await a.end();
      const b = await connect();
      equal(await value(b, "select count(*)::int from pg_prepared_statements"), 0, "a's statements are gone");
      await b.query("execute leftover").then(
        () => ok(false, "b ran a's prepared statement"),
        (e: PgError) => equal(e.code, "26000"),
      );
      await b.end();
    }),
});

Deno.test({
  name: "session state: a SET of a reported setting, and its rollback, reach the client as ParameterStatus",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withServer(60_000, async (connect) => {
      const a = await connect();
      const seen: Record<string, string> = {};
      // node-postgres keeps the last ParameterStatus of each setting here.
      const status = () =>
        (a as unknown as {
          connection: { on: (e: string, f: (m: { parameterName: string; parameterValue: string }) => void) => void };
        }).connection;
      status().on("parameterStatus", (m) => seen[m.parameterName] = m.parameterValue);
      const settings: [string, string, string][] = [
        ["standard_conforming_strings", "off", "off"],
        ["DateStyle", "German", "German, DMY"],
        ["TimeZone", "Europe/Paris", "Europe/Paris"],
        ["IntervalStyle", "iso_8601", "iso_8601"],
        ["application_name", "reporter", "reporter"],
        ["search_path", "pg_catalog", "pg_catalog"],
      ];
      for (const [name, value, reported] of settings) {
        await a.query(`set ${name} = '${value}'`);
        equal(seen[name], reported, `${name} reported`);
      }
      await a.query("begin");
      await a.query("set standard_conforming_strings = on");
      equal(seen.standard_conforming_strings, "on");
      await a.query("rollback");
      equal(seen.standard_conforming_strings, "off", "a rolled-back SET is reported back");
    }),
});
