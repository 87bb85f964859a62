import { deepStrictEqual, ok, rejects } from "node:assert/strict";
// @ts-types="npm:@types/pg@8.23.1"
import pg from "pg";
import postgres from "postgres";
import { Tarn } from "../mod.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage, concatBytes, cStrings } from "../src/server/wire.ts";

/** A server on a free port over an in-memory database, stopped after `fn`. */
async function withServer(fn: (port: number, tarn: Tarn) => Promise<void>, idle_in_transaction_ms?: number) {
  const tarn = await Tarn.open();
  const server = TarnServer.start(tarn, { port: 0, idle_in_transaction_ms });
  try {
    await fn(server.port, tarn);
  } finally {
    await server.close();
    await tarn.close();
  }
}

/** A test against a server on a free port (sockets of pg clients outlive the test: sanitizers off). */
function serverTest(name: string, fn: (port: number, tarn: Tarn) => Promise<void>, idle_in_transaction_ms?: number) {
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn: () => withServer(fn, idle_in_transaction_ms) });
}

/** A client that created table t and inserted a row in a transaction it leaves open. */
async function clientInOpenTransaction(port: number): Promise<pg.Client> {
  const a = pgClient(port);
  a.on("error", () => {});
  await a.connect();
  await a.query("create table t (id int primary key)");
  await a.query("begin");
  await a.query("insert into t values (1)");
  return a;
}

function pgClient(port: number, database = "postgres"): pg.Client {
  return new pg.Client({ host: "127.0.0.1", port, user: "postgres", database });
}

serverTest(
  "server: node-postgres, concurrent connections with interleaved transactions and named statements",
  async (port) => {
    const setup = pgClient(port);
    await setup.connect();
    await setup.query("create table counters (id int primary key, n int not null)");
    await setup.query("insert into counters select g, 0 from generate_series(1, 4) g");
    const clients = await Promise.all([0, 1, 2, 3].map(async () => {
      const c = pgClient(port);
      await c.connect();
      return c;
    }));
    await Promise.all(clients.map(async (c, i) => {
      for (let round = 0; round < 25; round++) {
        await c.query("begin");
        await c.query({ name: "bump", text: "update counters set n = n + 1 where id = $1", values: [i + 1] });
        const { rows } = await c.query({
          name: "read",
          text: "select n from counters where id = $1",
          values: [i + 1],
        });
        deepStrictEqual(rows[0].n, round + 1);
        await c.query("commit");
      }
    }));
    const { rows } = await setup.query("select id, n from counters order by id");
    deepStrictEqual(rows, [{ id: 1, n: 25 }, { id: 2, n: 25 }, { id: 3, n: 25 }, { id: 4, n: 25 }]);
    for (const c of [setup, ...clients]) await c.end();
  },
);

serverTest("server: postgres.js with concurrent queries and prepared statements", async (port) => {
  const sql = postgres({ host: "127.0.0.1", port, user: "postgres", database: "postgres", max: 4 });
  try {
    await sql`create table items (id int primary key, name text)`;
    await Promise.all(Array.from({ length: 40 }, (_, i) => sql`insert into items values (${i}, ${"item" + i})`));
    const rows = await Promise.all(
      Array.from({ length: 40 }, (_, i) => sql`select name from items where id = ${i}`),
    );
    deepStrictEqual(rows.map((r) => r[0].name), Array.from({ length: 40 }, (_, i) => "item" + i));
    const [{ n }] = await sql.begin(async (tx) => {
      await tx`insert into items values (100, 'in a transaction')`;
      return await tx`select count(*)::int as n from items`;
    });
    deepStrictEqual(n, 41);
  } finally {
    await sql.end();
  }
});

serverTest("server: a client that dies mid-transaction is rolled back and others go on", async (port) => {
  const a = await clientInOpenTransaction(port);
  // deno-lint-ignore no-explicit-any
  (a as any).connection.stream.destroy();
  const b = pgClient(port);
  await b.connect();
  const { rows } = await b.query("select count(*)::int as n from t");
  deepStrictEqual(rows, [{ n: 0 }]);
  await b.query("insert into t values (2)");
  deepStrictEqual((await b.query("select id from t")).rows, [{ id: 2 }]);
  await b.end();
});

serverTest("server: a session idle in a transaction past the timeout is rolled back and disconnected", async (port) => {
  const a = await clientInOpenTransaction(port);
  const b = pgClient(port);
  await b.connect();
  const { rows } = await b.query("select count(*)::int as n from t");
  deepStrictEqual(rows, [{ n: 0 }], "b waited for a's timeout, then saw a's insert rolled back");
  await rejects(a.query("select 1"));
  await b.end();
}, 300);

serverTest(
  "server: branches over the wire by database name or options, and an unknown branch is an error",
  async (port, tarn) => {
    const main = pgClient(port);
    await main.connect();
    await main.query("create table t (id int); insert into t values (1)");
    await tarn.createBranch("dev");
    await main.query("insert into t values (2)");
    const dev = pgClient(port, "dev");
    await dev.connect();
    deepStrictEqual((await dev.query("select id from t")).rows, [{ id: 1 }]);
    const viaOptions = new pg.Client({ host: "127.0.0.1", port, user: "postgres", options: "--branch=dev" });
    await viaOptions.connect();
    deepStrictEqual((await viaOptions.query("select count(*)::int as n from t")).rows, [{ n: 1 }]);
    const nowhere = pgClient(port, "nowhere");
    nowhere.on("error", () => {});
    await rejects(nowhere.connect(), /no branch "nowhere"/);
    for (const c of [main, dev, viaOptions]) await c.end();
  },
);

serverTest("server: garbage and malformed messages close only that connection", async (port) => {
  const good = pgClient(port);
  await good.connect();
  await good.query("create table t (id int); insert into t values (7)");
  const payloads: [Uint8Array, string][] = [
    [new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"), "H"], // HTTP: administration, 404 for this path
    [new Uint8Array([0, 0, 0, 8, 0, 3, 0, 0, 0x7a, 0, 0, 0, 4]), "ER"], // startup, then unknown type 'z'
    [new Uint8Array([0, 0, 0, 2]), "E"], // length below 4
    [new Uint8Array([0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]), "E"], // absurd length
  ];
  for (const [payload, first_bytes] of payloads) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(payload).catch(() => {});
    const reply = new Uint8Array(512);
    const n = await conn.read(reply).catch(() => null);
    ok(n === null || first_bytes.includes(String.fromCharCode(reply[0])), `unexpected reply ${reply[0]}`);
    conn.close();
  }
  deepStrictEqual((await good.query("select id from t")).rows, [{ id: 7 }]);
  await good.end();
});

serverTest("server: session settings do not leak from one connection to another", async (port) => {
  const a = pgClient(port);
  const b = new pg.Client({ host: "127.0.0.1", port, user: "postgres", application_name: "bee" });
  await a.connect();
  await b.connect();
  await a.query("set datestyle = 'German'; set application_name = 'ay'");
  deepStrictEqual((await b.query("show datestyle")).rows, [{ DateStyle: "ISO, MDY" }]);
  deepStrictEqual((await b.query("show application_name")).rows, [{ application_name: "bee" }]);
  deepStrictEqual((await a.query("show datestyle")).rows, [{ DateStyle: "German, DMY" }], "a keeps its own");
  deepStrictEqual((await a.query("show application_name")).rows, [{ application_name: "ay" }]);
  await a.end();
  await b.end();
});

serverTest("server: -c settings in the options parameter apply", async (port) => {
  const base = { host: "127.0.0.1", port, user: "postgres" };
  const c = new pg.Client({ ...base, options: "-c search_path=pg_catalog,public --branch=main" });
  await c.connect();
  deepStrictEqual((await c.query("show search_path")).rows, [{ search_path: "pg_catalog,public" }]);
  await c.end();
});

serverTest("server: options=--at=LSN is a read-only session on the branch as it was then", async (port) => {
  const main = pgClient(port);
  await main.connect();
  await main.query("create table t (id int)");
  await main.query("insert into t values (1)");
  const { rows } = await main.query("select pg_current_wal_insert_lsn()::text as lsn");
  await main.query("insert into t values (2)");
  const past = new pg.Client({ host: "127.0.0.1", port, user: "postgres", options: `--at=${rows[0].lsn}` });
  await past.connect();
  deepStrictEqual((await past.query("select id from t")).rows, [{ id: 1 }]);
  await rejects(past.query("insert into t values (3)"), /read-only transaction/);
  await past.end();
  deepStrictEqual((await main.query("select count(*)::int as n from t")).rows, [{ n: 2 }]);
  await main.end();
});

serverTest("server: an extended-protocol batch keeps the backend across a Flush until its Sync", async (port) => {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const startup = cStrings("user", "postgres", "database", "postgres", "");
  const packet = new Uint8Array(8 + startup.length);
  new DataView(packet.buffer).setInt32(0, packet.length);
  new DataView(packet.buffer).setInt32(4, 196608);
  packet.set(startup, 8);
  await conn.write(packet);
  const buffer = new Uint8Array(65536);
  await conn.read(buffer); // AuthenticationOk ... ReadyForQuery
  await conn.write(
    concatBytes([
      backendMessage("P", concatBytes([cStrings("", "select 1"), new Uint8Array(2)])),
      backendMessage("H"),
    ]),
  );
  await conn.read(buffer); // ParseComplete
  const other = pgClient(port);
  await other.connect().catch(() => {});
  let answered = false;
  const query = other.query("select 2 as two").then((r) => {
    answered = true;
    return r.rows;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  deepStrictEqual(answered, false, "another session ran inside the open batch");
  await conn.write(backendMessage("S"));
  deepStrictEqual(await query, [{ two: 2 }]);
  conn.close();
  await other.end();
});
