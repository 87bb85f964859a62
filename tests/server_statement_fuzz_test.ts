// Thousands of generated SQL strings (valid, invalid, garbage, COPY in every form, odd transaction control, huge
// and empty ones) from several sessions at once, while one well-behaved session commits rows to `ledger`. Whatever
// the fuzzing sessions do to their own connections, the server must keep serving, and `ledger` must hold exactly
// the commits it acknowledged. Seeded: the seed is printed, and TARN_FUZZ_SEED replays a run.
import { deepStrictEqual, ok } from "node:assert/strict";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage } from "../src/server/wire.ts";
import { copyData, copyDone, copyFail, describe, query, RawSession } from "./fixtures/raw_session.ts";
import { prng } from "./fixtures/prng.ts";

const SEED = Number(Deno.env.get("TARN_FUZZ_SEED") ?? 20_260_611);
const SESSIONS = 4;
const STATEMENTS_PER_SESSION = 500;
/** Times Postgres is made to abort under the load (fault injection): every acknowledged commit must survive. */
const ENGINE_KILLS = 3;
/** Longer than any generated statement needs; a session waiting this long means the server hung. */
const REPLY_TIMEOUT_MS = 20_000;

type Random = () => number;
const int = (random: Random, n: number) => Math.floor(random() * n);
const pick = <T>(random: Random, choices: readonly T[]): T => choices[int(random, choices.length)];

/** Statements that PostgreSQL runs; none touches `ledger`, and none sets a timeout (a separate known problem). */
function validStatement(random: Random): string {
  const t = `f${int(random, 3)}`;
  const n = int(random, 50);
  return pick(random, [
    `select ${n}`,
    `select ${n} + ${int(random, 9)} as s, 'text' as t, null as nothing`,
    `select * from generate_series(1, ${n})`,
    `create table if not exists ${t} (a int, b text)`,
    `drop table if exists ${t}`,
    `insert into ${t} values (${n}, 'v${n}')`,
    `insert into ${t} select g, md5(g::text) from generate_series(1, ${n}) g`,
    `update ${t} set b = 'u' where a = ${n}`,
    `delete from ${t} where a < ${n}`,
    `select count(*), max(a) from ${t}`,
    `truncate ${t}`,
    `create index if not exists ${t}_a on ${t} (a)`,
    `set search_path to nowhere, public`,
    `set application_name = 'fuzz${n}'`,
    `set datestyle = 'German'`,
    `set local work_mem = '1MB'`,
    `reset all`,
    `discard all`,
    `prepare p${n % 3} as select $1::int + 1`,
    `execute p${n % 3}(${n})`,
    `deallocate all`,
    `select pg_sleep(0.00${int(random, 5)})`,
    `do $$ begin perform 1; end $$`,
    `with recursive r(i) as (select 1 union all select i + 1 from r where i < ${n}) select sum(i) from r`,
  ]);
}

const TRANSACTION_CONTROL = [
  "begin",
  "begin",
  "commit",
  "rollback",
  "end",
  "abort",
  "savepoint s1",
  "rollback to savepoint s1",
  "release savepoint s1",
  "start transaction isolation level serializable",
  "commit and chain",
  "rollback and chain",
  "prepare transaction 'fuzz'",
  "set transaction read only",
];

const BROKEN = [
  "select 1/0",
  "select * from no_such_table",
  "insert into f0 values ('not a number')",
  "selec 1",
  "select 'unterminated",
  'select "unterminated',
  "/* unterminated comment",
  "select $$unterminated",
  "select E'\\",
  "do $$ begin raise exception 'boom'; end $$",
  "select repeat('x', -1)::int",
  "create table f0 (",
  ")",
  "",
  ";",
  " \n\t ",
  "-- only a comment",
  "/* only */ /* comments */",
  ";;;",
];

function copyStatement(random: Random): string {
  const t = `f${int(random, 3)}`;
  return pick(random, [
    `copy ${t} from stdin`,
    `copy ${t} from stdin;`,
    `copy ${t} from stdout`,
    `copy ${t} (a) from stdin`,
    `copy ${t} (b, a) from stdin with (format csv)`,
    `copy ${t} from stdin with (format binary)`,
    `copy ${t} from stdin with (format nope)`,
    `copy ${t} (no_such_column) from stdin`,
    `copy no_such_table from stdin`,
    `copy ${t} to stdout`,
    `copy (select * from generate_series(1, 5)) to stdout`,
    `copy ${t} to stdout with (format csv, header)`,
    `\\copy ${t} from stdin`,
    `/* c */ CoPy\n ${t}\n FROM\tSTDIN ;`,
    `copy ${t} from stdin; select 1`,
    `select 1; copy ${t} from stdin; copy ${t} from stdin`,
    `copy`,
    `copy ${t} from`,
  ]);
}

function garbage(random: Random): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ;'\"$()*/-\\\n\t,.=<>{}[]éß中";
  let text = "";
  for (let i = int(random, 80); i > 0; i--) text += alphabet[int(random, alphabet.length)];
  return text;
}

/** One generated SQL string. */
function statement(random: Random): string {
  const roll = random();
  if (roll < 0.35) return validStatement(random);
  if (roll < 0.5) return pick(random, TRANSACTION_CONTROL);
  if (roll < 0.62) return pick(random, BROKEN);
  if (roll < 0.8) return copyStatement(random);
  if (roll < 0.9) {
    const parts = Array.from({ length: 2 + int(random, 3) }, () => statement(random));
    return parts.join(pick(random, [";", "; ", ";\n", " ; "]));
  }
  if (roll < 0.997) return garbage(random);
  return `select length('${"x".repeat(1 << 20)}')`;
}

/** What a fuzzing client sends when the server asks for COPY data: good rows, bad ones, nothing, or a refusal. */
function copyAnswer(random: Random): Uint8Array[] {
  return pick(random, [
    () => [copyData("1\tone\n2\ttwo\n"), copyDone()],
    () => [copyData("1\t"), copyData("split\n"), copyDone()],
    () => [copyData("1,csv\n"), copyDone()],
    () => [copyData("not\ta\tnumber\n"), copyDone()],
    () => [copyDone()],
    () => [copyFail("fuzz gave up")],
    () => [copyData("3\tthree\n"), query("select 'a query inside COPY'")],
    () => [backendMessage("S"), copyData("4\tfour\n"), copyDone()],
  ])();
}

/** The server did not answer in time: a failure, unlike a closed connection. */
class Hang extends Error {}

type Stats = { statements: number; errors: number; disconnects: number; copies_in: number };

/** A session that sends `count` generated strings, answering COPY requests, reconnecting when it is closed. */
async function fuzzSession(port: number, random: Random, count: number, stats: Stats): Promise<void> {
  let session = await RawSession.connect(port);
  try {
    for (let i = 0; i < count; i++) {
      const sql = statement(random);
      stats.statements++;
      try {
        await session.write(query(sql));
        for (;;) {
          const reply = await session.readUntil((m) => m.type === "Z" || m.type === "G", REPLY_TIMEOUT_MS)
            .catch((error) => {
              throw new Hang(`${error.message} after ${JSON.stringify(sql.slice(0, 300))} (seed ${SEED})`);
            });
          stats.errors += reply.filter((m) => m.type === "E").length;
          const last = reply.at(-1);
          if (last?.type === "Z") break;
          if (last?.type !== "G") throw new Error("closed by the server");
          stats.copies_in++;
          for (const part of copyAnswer(random)) await session.write(part);
        }
      } catch (error) {
        if (error instanceof Hang) throw error;
        stats.disconnects++;
        session.close();
        session = await RawSession.connect(port);
      }
      // Now and then end whatever transaction is open, so that the other sessions get the backend too.
      if (random() < 0.1) await session.exchange([query("rollback")], 1, REPLY_TIMEOUT_MS).catch(() => {});
    }
    if (!session.closed) await session.write(backendMessage("X")).catch(() => {});
  } finally {
    session.close();
  }
}

type Ledger = { acknowledged: Set<number>; in_doubt_present: Set<number>; errors: string[]; reconnects: number };

/**
 * Commits (or rolls back) one row per transaction until `done()`. A commit counts only when its CommandComplete
 * arrived; when the connection breaks after COMMIT was sent, a new connection looks whether the row is there.
 */
async function ledgerWriter(port: number, random: Random, done: () => boolean): Promise<Ledger> {
  const ledger: Ledger = { acknowledged: new Set(), in_doubt_present: new Set(), errors: [], reconnects: 0 };
  let session = await RawSession.connect(port);
  try {
    for (let id = 1; !done(); id++) {
      const commit = random() < 0.8;
      const steps = ["begin", `insert into ledger values (${id})`, commit ? "commit" : "rollback"];
      let broken_at = -1;
      let committed = false;
      for (const [i, sql] of steps.entries()) {
        // A failed write is a broken connection; a read that times out is a hang, and fails the test.
        const reply = await session.write(query(sql)).then(
          () => session.readUntil((m) => m.type === "Z", REPLY_TIMEOUT_MS),
          () => [],
        );
        if (reply.at(-1)?.type !== "Z") {
          broken_at = i;
          break;
        }
        const lines = describe(reply);
        ledger.errors.push(...lines.filter((line) => line.startsWith("E ")).map((line) => `${sql}: ${line}`));
        committed = i === 2 && commit && lines.includes("C COMMIT");
      }
      if (committed) ledger.acknowledged.add(id);
      if (broken_at < 0) continue;
      ledger.reconnects++;
      session.close();
      session = await RawSession.connect(port);
      if (broken_at === 2 && commit) {
        const check = await session.exchange([query(`select count(*) from ledger where id = ${id}`)]);
        if (describe(check).includes("D 1")) ledger.in_doubt_present.add(id);
      }
    }
  } finally {
    session.close();
  }
  return ledger;
}

Deno.test({
  name: `server statement fuzz: ${
    SESSIONS * STATEMENTS_PER_SESSION
  } generated statements beside a ledger (seed ${SEED})`,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    console.log(`server statement fuzz: seed ${SEED} (replay with TARN_FUZZ_SEED=${SEED})`);
    const random = prng(SEED);
    const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024, fault_injection: true });
    const server = TarnServer.start(engine, { port: 0, idle_in_transaction_ms: 10_000 });
    try {
      const setup = await RawSession.connect(server.port);
      deepStrictEqual(describe(await setup.exchange([query("create table ledger (id int primary key)")])), [
        "C CREATE TABLE",
        "Z I",
      ]);
      setup.close();

      const stats: Stats = { statements: 0, errors: 0, disconnects: 0, copies_in: 0 };
      let fuzzing = true;
      // Each session draws from its own generator, so that a seed replays the same strings whatever the timing.
      const seeds = Array.from({ length: SESSIONS + 1 }, () => int(random, 0x7fff_ffff));
      const ledger_run = ledgerWriter(server.port, prng(seeds[SESSIONS]), () => !fuzzing);
      // Meanwhile Postgres itself dies now and then, in the middle of whatever runs.
      const killer = (async () => {
        for (let kill = 0; kill < ENGINE_KILLS && fuzzing; kill++) {
          await new Promise((resolve) => setTimeout(resolve, 1_000 + int(random, 2_000)));
          const { compute, release } = await engine.attachCompute("main");
          await engine.injectFault(compute);
          await release();
        }
      })();
      try {
        await Promise.all(
          seeds.slice(0, SESSIONS).map((seed) => fuzzSession(server.port, prng(seed), STATEMENTS_PER_SESSION, stats)),
        );
      } finally {
        fuzzing = false;
      }
      await killer;
      const ledger = await ledger_run;
      const metrics = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
      const failures = Number(/^tarn_engine_failures_total (\d+)$/m.exec(metrics)?.[1]);
      ok(failures >= 1, `the engine never failed (seed ${SEED})\n${metrics}`);
      console.log({
        ...stats,
        engine_failures: failures,
        acknowledged: ledger.acknowledged.size,
        ledger_reconnects: ledger.reconnects,
      });

      // The listener still takes new connections, and the ledger holds exactly what was acknowledged.
      const after = await RawSession.connect(server.port);
      try {
        deepStrictEqual(describe(await after.exchange([query("select 41 + 1 as answer")])), [
          "T answer",
          "D 42",
          "C SELECT 1",
          "Z I",
        ]);
        const rows = describe(await after.exchange([query("select id from ledger order by id")]))
          .filter((line) => line.startsWith("D ")).map((line) => Number(line.slice(2)));
        const expected = [...ledger.acknowledged, ...ledger.in_doubt_present].sort((a, b) => a - b);
        deepStrictEqual(rows, expected, `ledger rows (seed ${SEED})`);
      } finally {
        after.close();
      }
      ok(ledger.acknowledged.size >= 10, `only ${ledger.acknowledged.size} ledger commits (seed ${SEED})`);
      // Another session's settings, prepared statements and failed transactions never reach the ledger's session.
      deepStrictEqual(ledger.errors, [], `ledger session errors (seed ${SEED})`);
      ok(stats.statements === SESSIONS * STATEMENTS_PER_SESSION);
    } finally {
      await server.close();
      await engine.close();
    }
  },
});
