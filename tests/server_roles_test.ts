import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
// @ts-types="npm:@types/pg@8.23.1"
import pg from "pg";
import postgres from "postgres";
import { Tarn } from "../mod.ts";
import { TarnServer } from "../src/server/server.ts";
import { EngineHost } from "../src/server/engine_host.ts";

type PgError = Error & { code?: string };

const SETUP = "create role alice login; create role bob; create role boss login superuser; " +
  "create table secret (x int); insert into secret values (42); create table pub (x int); " +
  "grant select, insert on pub to alice";

/**
 * Runs `fn` with a server, set up with {@linkcode SETUP} as the superuser, on an embedded database or on an engine
 * in a Worker (as `tarn start` runs it).
 */
async function withRoles(
  engine: "embedded" | "worker",
  password: string | undefined,
  fn: (base: { host: string; port: number; database: string }) => Promise<void>,
): Promise<void> {
  const source = engine === "embedded"
    ? await Tarn.open()
    : await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024 });
  const server = TarnServer.start(source, { port: 0, password });
  try {
    const base = { host: "127.0.0.1", port: server.port, database: "postgres" };
    const admin = new pg.Client({ ...base, user: "postgres", password });
    await admin.connect();
    await admin.query(SETUP);
    await admin.end();
    await fn(base);
  } finally {
    await server.close();
    await source.close();
  }
}

async function code(promise: Promise<unknown>): Promise<string | undefined> {
  return await promise.then(() => undefined, (error: PgError) => error.code);
}

Deno.test({
  name: "roles: a login must be a role that may log in, and its statements run with that role's privileges",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRoles("embedded", undefined, async (base) => {
      for (const [user, message] of [["nobody", 'role "nobody" does not exist'], ["bob", "not permitted to log in"]]) {
        const client = new pg.Client({ ...base, user });
        client.on("error", () => {});
        const error = await client.connect().then(() => undefined, (e: PgError) => e);
        equal(error?.code, "28000", `${user} is refused`);
        ok(error?.message.includes(message), error?.message);
      }
      const alice = new pg.Client({ ...base, user: "alice" });
      const admin = new pg.Client({ ...base, user: "postgres" });
      await alice.connect();
      await admin.connect();
      try {
        deepStrictEqual((await alice.query("select current_user, session_user")).rows, [
          { current_user: "alice", session_user: "alice" },
        ]);
        equal(await code(alice.query("select * from secret")), "42501", "alice reads no table she was not granted");
        await alice.query("insert into pub values (1)");
        // The superuser's session between alice's statements: each keeps its own identity.
        deepStrictEqual((await admin.query("select current_user, count(*)::int as n from secret")).rows, [
          { current_user: "postgres", n: 1 },
        ]);
        deepStrictEqual((await alice.query("select count(*)::int as n from pub")).rows, [{ n: 1 }]);
        equal(await code(alice.query("checkpoint")), "42501", "CHECKPOINT needs pg_checkpoint");
        const admin_pid = (admin as unknown as { processID: number }).processID;
        equal(await code(alice.query(`select pg_terminate_backend(${admin_pid})`)), "42501", "not a superuser's");
        const other = new pg.Client({ ...base, user: "alice" });
        other.on("error", () => {});
        await other.connect();
        const other_pid = (other as unknown as { processID: number }).processID;
        deepStrictEqual((await alice.query(`select pg_terminate_backend(${other_pid})`)).rows, [{
          pg_terminate_backend: true,
        }]);
        await rejects(other.query("select 1"), "alice ended her own other session");
        const boss = new pg.Client({ ...base, user: "boss" });
        await boss.connect();
        equal((await boss.query("select count(*)::int as n from secret")).rows[0].n, 1, "a superuser role reads all");
        await boss.end();
      } finally {
        await alice.end();
        await admin.end();
      }
    }),
});

Deno.test({
  name:
    "roles: a role cannot take another identity (SET/RESET SESSION AUTHORIZATION, SET ROLE, DO, set_config), engine in a Worker",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRoles("worker", undefined, async (base) => {
      const sql = postgres({ ...base, user: "alice", max: 1, onnotice: () => {} });
      try {
        const escapes = [
          "set session authorization postgres",
          "set role postgres",
          "do $$ begin execute 'set session authorization ' || 'postgres'; end $$",
          "select set_config('session_authorization', 'postgres', false)",
          "select set_config('role', 'postgres', false)",
        ];
        for (const escape of escapes) {
          equal(await code(sql.unsafe(escape)), "42501", escape);
          deepStrictEqual([...await sql`select current_user as who`], [{ who: "alice" }], escape);
        }
        // What a role may do to its own identity, it still may: it stays itself.
        for (const statement of ["reset session authorization", "set session authorization default", "discard all"]) {
          await sql.unsafe(statement);
          deepStrictEqual([...await sql`select current_user as who, session_user as s`], [{
            who: "alice",
            s: "alice",
          }]);
        }
        equal(await code(sql`select * from secret`), "42501");
        equal(sql.parameters.is_superuser, "off");
        equal(sql.parameters.session_authorization, "alice");
      } finally {
        await sql.end();
      }
      const next = postgres({ ...base, user: "postgres", max: 1 });
      try {
        deepStrictEqual([...await next`select current_user as who, count(*)::int as n from secret`], [{
          who: "postgres",
          n: 1,
        }]);
      } finally {
        await next.end();
      }
    }),
});

Deno.test({
  name: "roles: with a server password, a role's own password (SCRAM verifier) or else the server's",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withRoles("embedded", "server-pw", async (base) => {
      const admin = new pg.Client({ ...base, user: "postgres", password: "server-pw" });
      await admin.connect();
      await admin.query(
        "create role carol login password 'c4rol'; create role old login password 'x' valid until '2000-01-01'",
      );
      await admin.end();
      const login = async (user: string, password: string) => {
        const client = new pg.Client({ ...base, user, password });
        client.on("error", () => {});
        try {
          await client.connect();
          return (await client.query("select current_user")).rows[0].current_user as string;
        } catch (error) {
          return (error as PgError).code;
        } finally {
          await client.end().catch(() => {});
        }
      };
      equal(await login("carol", "c4rol"), "carol");
      equal(await login("carol", "server-pw"), "28P01", "a role with a password of its own needs that one");
      equal(await login("alice", "server-pw"), "alice", "a role without one takes the server's");
      equal(await login("alice", "c4rol"), "28P01");
      equal(await login("nobody", "server-pw"), "28P01", "an unknown role fails like a wrong password");
      equal(await login("old", "x"), "28P01", "VALID UNTIL has passed");
      const sql = postgres({ ...base, user: "carol", password: "c4rol", max: 1 });
      deepStrictEqual([...await sql`select current_user as who`], [{ who: "carol" }]);
      await sql.end();
      await rejects(login("bob", "server-pw").then((c) => c === "28000" ? Promise.reject() : undefined));
    }),
});
