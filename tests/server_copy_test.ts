// COPY through the server must answer exactly as PostgreSQL does, so every case here is also fed to plain PGlite
// (the same Postgres, with no server in between) and the two answers are compared: message by message over raw
// TCP, and by table contents and error text for psql, postgres.js and node-postgres.
import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { finished } from "node:stream/promises";
import { PGlite } from "@electric-sql/pglite";
// @ts-types="npm:@types/pg@8.23.1"
import pg from "pg";
import postgres from "postgres";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage, concatBytes, cStrings } from "../src/server/wire.ts";
import {
  copyData,
  copyDone,
  copyFail,
  describe,
  errorsOf,
  type Message,
  pgliteAnswer,
  query,
  RawSession,
} from "./fixtures/raw_session.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

function installed(command: string): boolean {
  try {
    return new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

const PSQL = installed("psql");

type Both = { port: number; url: string; sql: postgres.Sql; lite: PGlite };

/** A test against a server whose engine runs in a Worker (as `tarn start` runs it) and a plain PGlite beside it. */
function copyTest(name: string, fn: (both: Both, t: Deno.TestContext) => Promise<void>, ignore = false) {
  Deno.test({
    name,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async (t) => {
      const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024 });
      const server = TarnServer.start(engine, { port: 0 });
      const lite = new PGlite();
      const sql = postgres({ host: "127.0.0.1", port: server.port, user: "postgres", max: 1, onnotice: () => {} });
      try {
        await fn({ port: server.port, url: `postgresql://postgres@127.0.0.1:${server.port}/postgres`, sql, lite }, t);
      } finally {
        await sql.end({ timeout: 1 });
        await lite.close();
        await server.close();
        await engine.close();
      }
    },
  });
}

/** Runs DDL or inserts on both sides. */
async function onBoth(both: Both, statements: string): Promise<void> {
  await both.sql.unsafe(statements).simple();
  await both.lite.exec(statements);
}

/** A table's rows as one string, independent of physical order. */
function contentsQuery(table: string): string {
  return `select coalesce(string_agg(x::text, ';' order by x::text), '') as contents from ${table} x`;
}

async function sameContents(both: Both, table: string): Promise<string> {
  const [{ contents }] = await both.sql.unsafe(contentsQuery(table));
  const lite = (await both.lite.query<{ contents: string }>(contentsQuery(table))).rows[0].contents;
  equal(contents, lite, `contents of ${table}`);
  return contents;
}

/** Fails after `ms` instead of waiting for ever on a server that never answers. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) =>
    timer = setTimeout(() => reject(new Error(`${what}: no answer`)), ms)
  );
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function threeRows(table: string): string {
  return `insert into ${table} select g, 'row ' || g from generate_series(1, 3) g`;
}

/** Each case gets its own table (a int, b text) holding three rows; `parts` are written at once, pipelined. */
const RAW_CASES: { name: string; parts: (t: string) => Uint8Array[] }[] = [
  {
    name: "copy from stdin",
    parts: (t) => [query(`copy ${t} from stdin;`), copyData("10\tten\n11\t\\N\n"), copyDone()],
  },
  {
    name: "copy from stdout, the synonym",
    parts: (t) => [query(`copy ${t} from stdout`), copyData("12\tx\n"), copyDone()],
  },
  {
    name: "a column list",
    parts: (t) => [query(`copy ${t} (b, a) from stdin`), copyData("thirteen\t13\n"), copyDone()],
  },
  {
    name: "csv with a header",
    parts: (
      t,
    ) => [query(`copy ${t} from stdin with (format csv, header true)`), copyData('a,b\n14,"fo,ur"\n15,\n'), copyDone()],
  },
  {
    name: "comments, case, tabs and newlines",
    parts: (t) => [query(`/* c */ CoPy\n ${t}\n FROM\tSTDIN ;`), copyData("16\tsixteen\n"), copyDone()],
  },
  {
    name: "a leading line comment",
    parts: (t) => [query(`-- load\ncopy ${t} from stdin`), copyData("17\ts\n"), copyDone()],
  },
  {
    name: "rows split across CopyData messages",
    parts: (
      t,
    ) => [query(`copy ${t} from stdin`), copyData("18\tei"), copyData("ght\n19"), copyData("\tnine\n"), copyDone()],
  },
  { name: "no data at all", parts: (t) => [query(`copy ${t} from stdin`), copyDone()] },
  {
    name: "an end marker in the data",
    parts: (t) => [query(`copy ${t} from stdin`), copyData("20\tz\n\\.\n"), copyDone()],
  },
  {
    name: "inside a multi-statement query",
    parts: (
      t,
    ) => [
      query(`create table ${t}_x (a int); copy ${t}_x from stdin; select 41 + 1 as answer`),
      copyData("7\n"),
      copyDone(),
    ],
  },
  {
    name: "two COPYs in one query",
    parts: (
      t,
    ) => [
      query(`copy ${t} from stdin; copy ${t} (a) from stdin`),
      copyData("21\tu\n"),
      copyDone(),
      copyData("22\n"),
      copyDone(),
    ],
  },
  {
    name: "unknown column: the error comes first and the pipelined data is ignored",
    parts: (t) => [query(`copy ${t} (no_such_column) from stdin`), copyData("1\n"), copyDone()],
  },
  { name: "unknown table", parts: () => [query("copy no_such_table from stdin"), copyData("1\n"), copyDone()] },
  { name: "bad option", parts: (t) => [query(`copy ${t} from stdin with (format nope)`), copyData("1\n"), copyDone()] },
  {
    name: "a statement before the bad COPY runs, one after it does not",
    parts: (
      t,
    ) => [
      query(`insert into ${t} values (30, 'kept'); copy ${t} (nope) from stdin; insert into ${t} values (31, 'no')`),
    ],
  },
  { name: "bad data", parts: (t) => [query(`copy ${t} from stdin`), copyData("1\tok\nx\ty\n"), copyDone()] },
  {
    name: "CopyFail",
    parts: (t) => [query(`copy ${t} from stdin`), copyData("99\tnever\n"), copyFail("client gave up")],
  },
  {
    name: "in a transaction, a failed COPY aborts it",
    parts: (t) => [query("begin"), query(`copy ${t} (nope) from stdin`), query("select 1"), query("rollback")],
  },
  {
    name: "in a transaction, a COPY rolled back",
    parts: (
      t,
    ) => [query("begin"), query(`copy ${t} from stdin`), copyData("40\tgone\n"), copyDone(), query("rollback")],
  },
  {
    name: "extended protocol: Parse, Bind, Execute, data, Sync",
    parts: (t) => [
      backendMessage("P", concatBytes([cStrings("", `copy ${t} from stdin`), new Uint8Array(2)])),
      backendMessage("B", concatBytes([cStrings("", ""), new Uint8Array(6)])),
      backendMessage("E", concatBytes([cStrings(""), new Uint8Array(4)])),
      copyData("50\tfifty\n"),
      copyDone(),
      backendMessage("S"),
    ],
  },
  {
    // postgres.js sends a CopyFail after every CopyDone; PostgreSQL ignores copy messages outside COPY.
    name: "stray CopyFail, CopyData and CopyDone outside COPY are ignored",
    parts: (t) => [copyFail("null"), copyData("1\n"), copyDone(), query(`select count(*) from ${t}`)],
  },
  { name: "copy to stdout", parts: (t) => [query(`copy ${t} to stdout`)] },
  { name: "copy to stdin, the synonym", parts: (t) => [query(`copy ${t} to stdin`)] },
  { name: "copy (select) to stdout", parts: (t) => [query(`copy (select a, b from ${t} order by a desc) to stdout`)] },
  { name: "copy to stdout as csv", parts: (t) => [query(`copy ${t} to stdout with (format csv, header)`)] },
  { name: "copy to stdout, unknown column", parts: (t) => [query(`copy ${t} (nope) to stdout`)] },
];

function readyCount(parts: Uint8Array[]): number {
  return parts.filter((p) => p[0] === "Q".charCodeAt(0) || p[0] === "S".charCodeAt(0)).length;
}

copyTest("server COPY: the wire protocol answers match plain PGlite's, message by message", async (both, test) => {
  // A step per case, each on its own table and session, so that one wrong answer does not hide the others.
  for (const [i, { name, parts }] of RAW_CASES.entries()) {
    await test.step(name, async () => {
      const t = `raw_${i}`;
      await within(30_000, "create table", onBoth(both, `create table ${t} (a int, b text); ${threeRows(t)}`));
      const session = await RawSession.connect(both.port, 30_000);
      try {
        const bytes = parts(t);
        const lite = await pgliteAnswer(both.lite, bytes);
        deepStrictEqual(describe(await session.exchange(bytes, readyCount(bytes), 30_000)), describe(lite));
        // The session goes on, and the table holds what Postgres's own COPY left in it.
        const check = [query(contentsQuery(t))];
        const lite_check = describe(await pgliteAnswer(both.lite, check));
        deepStrictEqual(describe(await session.exchange(check, 1, 30_000)), lite_check);
      } finally {
        session.close();
      }
    });
  }
});

/** A step of a psql script and what plain PGlite is fed for it; `data` follows the statement and ends with `\.`. */
type Step = { sql: string; data?: string; psql?: string };

function psqlScript(steps: Step[]): string {
  // psql sends a statement when it sees its semicolon; the data lines after it are read only in copy mode.
  const statement = (s: Step) => s.psql ?? (s.sql.trimEnd().endsWith(";") ? s.sql : `${s.sql};`);
  return steps.map((s) => `${statement(s)}\n${s.data === undefined ? "" : `${s.data}\\.\n`}`).join("");
}

async function liteErrors(lite: PGlite, steps: Step[]): Promise<{ code: string; message: string }[]> {
  const errors: { code: string; message: string }[] = [];
  for (const step of steps) {
    const parts = [query(step.sql), ...step.data === undefined ? [] : [copyData(step.data), copyDone()]];
    errors.push(...errorsOf(await pgliteAnswer(lite, parts)));
  }
  return errors;
}

async function psql(url: string, args: string[]): Promise<string> {
  const child = new Deno.Command("psql", {
    args: [url, "-X", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const output = await child.output();
    return new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  } finally {
    clearTimeout(timer);
  }
}

async function runScript(both: Both, steps: Step[]): Promise<string> {
  let out = "";
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/script.sql`, psqlScript(steps));
    out = await psql(both.url, ["-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=verbose", "-f", `${dir}/script.sql`]);
  });
  const errors = await liteErrors(both.lite, steps);
  for (const { code, message } of errors) ok(out.includes(`ERROR:  ${code}: ${message}`), `${code} ${message}\n${out}`);
  equal(out.match(/ERROR: /g)?.length ?? 0, errors.length, out);
  return out;
}

copyTest("server COPY: a psql script loads data in every form PostgreSQL accepts", async (both) => {
  const out = await runScript(both, [
    { sql: "create table t (a int, b text)" },
    { sql: "copy t from stdin;", data: "1\tone\n2\ttwo\n" },
    { sql: "copy t from stdout;", data: "3\tthree\n" },
    { sql: "copy t (b, a) from stdin;", data: "four\t4\n" },
    // Not CSV: psql before 18 sends its `\.` line on, which PostgreSQL 18 reads as CSV data.
    { sql: "copy t from stdin with (format text, header true);", data: "a\tb\n5\tfi,ve\n6\t\\N\n" },
    { sql: "/* c */ CoPy\n t\n FROM\tSTDIN ;", data: "7\tseven\n" },
    { sql: "copy t from stdin", psql: "\\copy t from stdin", data: "8\teight\n" },
    {
      sql: "create table x (a int); copy x from stdin; select 41 + 1 as answer",
      psql: "create table x (a int) \\; copy x from stdin \\; select 41 + 1 as answer;",
      data: "9\n",
    },
    { sql: "select count(*) as n from t;" },
  ]);
  ok(/\b42\b/.test(out), out);
  equal(await sameContents(both, "t"), '(1,one);(2,two);(3,three);(4,four);(5,"fi,ve");(6,);(7,seven);(8,eight)');
  equal(await sameContents(both, "x"), "(9)");
}, !PSQL);

copyTest(
  "server COPY: in a psql script a COPY that PostgreSQL refuses is reported and the statements after it run",
  async (both) => {
    await runScript(both, [
      { sql: "create table t (a int, b text);" },
      { sql: "copy t (no_such_column) from stdin;" },
      { sql: "insert into t values (100, 'after unknown column');" },
      { sql: "copy no_such_table from stdin;" },
      { sql: "insert into t values (101, 'after unknown table');" },
      { sql: "copy t from stdin with (format nope);" },
      { sql: "insert into t values (102, 'after bad option');" },
      { sql: "copy t from stdin;", data: "x\tbad data\n" },
      { sql: "insert into t values (103, 'after bad data');" },
      { sql: "begin;" },
      { sql: "copy t (nope) from stdin;" },
      { sql: "rollback;" },
      { sql: "copy t from stdin;", data: "104\tloaded after all that\n" },
    ]);
    equal(
      await sameContents(both, "t"),
      '(100,"after unknown column");(101,"after unknown table");(102,"after bad option");' +
        '(103,"after bad data");(104,"loaded after all that")',
    );
  },
  !PSQL,
);

copyTest("server COPY: psql's COPY TO STDOUT and \\copy to stdout print what PGlite's COPY does", async (both) => {
  await onBoth(both, "create table t (a int, b text, c numeric); " + threeRows("t"));
  await onBoth(both, "insert into t values (4, E'tab\\there', 1.5), (5, null, null), (6, 'quote \" and , comma', -2)");
  const forms = [
    ["copy t to stdout", "copy t to stdout"],
    ["\\copy t to stdout", "copy t to stdout"],
    [
      "copy (select a, b from t where a > 1 order by a desc) to stdout",
      "copy (select a, b from t where a > 1 order by a desc) to stdout",
    ],
    ["copy t to stdout with (format csv, header)", "copy t to stdout with (format csv, header)"],
  ];
  for (const [command, lite_sql] of forms) {
    const expected = (await pgliteAnswer(both.lite, [query(lite_sql)])).filter((m) => m.type === "d")
      .map((m) => new TextDecoder().decode(m.body)).join("");
    ok(expected.length > 0);
    equal(await psql(both.url, ["-q", "-c", command]), expected, command);
  }
}, !PSQL);

async function drain(readable: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of readable) chunks.push(chunk);
  return concatBytes(chunks);
}

function liteCopyOut(messages: Message[]): Uint8Array {
  return concatBytes(messages.filter((m) => m.type === "d").map((m) => m.body));
}

/** Rows of every kind of value, in CopyData chunks that split a row, as postgres.js writes them. */
const TYPED_CHUNKS = [
  "1\tone\t1.5\t2024-01-02 03:04:05+00\t\\\\x0102\t{1,2}\n",
  "2\t\\N\t\\N\t\\N\t\\N\t\\N\n3\tth",
  "ree\t-7\t1999-12-31 23:59:59+00\t\\\\x\t{}\n",
];

copyTest("server COPY: postgres.js streams text and binary COPY in and out", async (both, test) => {
  const { sql, lite } = both;
  const typed = "(a int, b text, c numeric, d timestamptz, e bytea, f int[])";
  await onBoth(both, `create table t ${typed}; create table t2 ${typed}`);
  await onBoth(both, "set timezone = 'UTC'");
  // Steps, so that each failure shows; the later ones depend on the earlier only through the table contents.
  await test.step("text in", async () => {
    await pgliteAnswer(lite, [query("copy t from stdin"), ...TYPED_CHUNKS.map(copyData), copyDone()]);
    const writable = await within(10_000, "copy from stdin", sql`copy t from stdin`.writable());
    for (const chunk of TYPED_CHUNKS) writable.write(chunk);
    writable.end();
    await within(10_000, "copy from stdin", finished(writable));
    await sameContents(both, "t");
  });
  await test.step("text out", async () => {
    const text_out = await within(10_000, "copy to stdout", drain(await sql`copy t to stdout`.readable()));
    deepStrictEqual(text_out, liteCopyOut(await pgliteAnswer(lite, [query("copy t to stdout")])));
  });
  await test.step("binary out and back in", async () => {
    const binary = await within(10_000, "binary out", drain(await sql`copy t to stdout (format binary)`.readable()));
    const lite_binary = liteCopyOut(await pgliteAnswer(lite, [query("copy t to stdout (format binary)")]));
    deepStrictEqual(binary, lite_binary);
    const into = await within(10_000, "binary in", sql`copy t2 from stdin (format binary)`.writable());
    into.end(binary);
    await within(10_000, "binary in", finished(into));
    await pgliteAnswer(lite, [query("copy t2 from stdin (format binary)"), copyData(lite_binary), copyDone()]);
    equal(await sameContents(both, "t2"), await sameContents(both, "t"));
  });
  await test.step("a bad row fails the whole COPY: nothing of it lands and the session serves on", async () => {
    // postgres.js reports the error on the query, not on the stream: the raw-protocol cases check the error itself.
    const bad = await within(10_000, "bad data", sql`copy t from stdin`.writable());
    bad.end("4\tfour\tnot a number\t\\N\t\\N\t\\N\n");
    await within(10_000, "bad data", finished(bad)).catch(() => {});
    deepStrictEqual([...await within(10_000, "after a bad COPY", sql`select 41 + 1 as answer`)], [{ answer: 42 }]);
    await sameContents(both, "t");
  });
  await test.step("the client gives up (CopyFail): the table is unchanged and the session serves on", async () => {
    const given_up = await within(10_000, "copy fail", sql`copy t from stdin`.writable());
    given_up.write("5\tfive\t5\t\\N\t\\N\t\\N\n");
    given_up.destroy(new Error("client gave up"));
    await rejects(finished(given_up));
    deepStrictEqual([...await within(10_000, "after CopyFail", sql`select 41 + 1 as answer`)], [{ answer: 42 }]);
    await sameContents(both, "t");
  });
  await test.step("a COPY that Postgres refuses is refused before any stream is handed out", async () => {
    await rejects(
      within(10_000, "refused", sql`copy t (nope) from stdin`.writable()),
      (error: { code?: string }) => error.code === "42703",
    );
    deepStrictEqual([...await within(10_000, "count", sql`select count(*)::int as n from t`)], [{ n: 3 }]);
  });
});

copyTest("server COPY: CopyFail over raw TCP is SQLSTATE 57014 and the session continues", async (both) => {
  await onBoth(both, "create table t (a int, b text); " + threeRows("t"));
  const session = await RawSession.connect(both.port);
  try {
    const parts = [query("copy t from stdin"), copyData("99\tnever\n"), copyFail("no more")];
    const answer = await session.exchange(parts);
    deepStrictEqual(errorsOf(answer), [{ code: "57014", message: "COPY from stdin failed: no more" }]);
    deepStrictEqual(describe(answer), describe(await pgliteAnswer(both.lite, parts)));
    deepStrictEqual(describe(await session.exchange([query("select count(*) from t")])), [
      "T count",
      "D 3",
      "C SELECT 1",
      "Z I",
    ]);
  } finally {
    session.close();
  }
  equal(await sameContents(both, "t"), '(1,"row 1");(2,"row 2");(3,"row 3")');
});

copyTest("server COPY: node-postgres without a copy stream fails the COPY and keeps its connection", async (both) => {
  await onBoth(both, "create table t (a int, b text); " + threeRows("t"));
  const client = new pg.Client({ host: "127.0.0.1", port: both.port, user: "postgres" });
  await client.connect();
  try {
    // node-postgres answers a CopyInResponse with CopyFail; Postgres turns that into 57014.
    await rejects(
      within(10_000, "copy in", client.query("copy t from stdin")),
      (e: { code?: string }) => e.code === "57014",
    );
    deepStrictEqual((await within(10_000, "after", client.query("select 41 + 1 as answer"))).rows, [{ answer: 42 }]);
    // A refused COPY never reaches copy mode: the client sees Postgres's error, not its own CopyFail.
    await rejects(client.query("copy t (nope) from stdin"), (e: { code?: string }) => e.code === "42703");
    await rejects(client.query("copy t from stdin with (format nope)"), (e: { code?: string }) => e.code === "22023");
    deepStrictEqual((await client.query("select count(*)::int as n from t")).rows, [{ n: 3 }]);
  } finally {
    await client.end();
  }
});
