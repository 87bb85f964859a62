import { deepStrictEqual, equal, ok } from "node:assert/strict";
import postgres from "postgres";
import { withPgServer } from "./fixtures/pg_server.ts";

type PgError = Error & { code?: string };

const MAX_LAG_MS = 1000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: "replica: a reader follows the primary within the lag bound, never backwards, and cannot write",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withPgServer({ replica_max_lag_ms: MAX_LAG_MS }, async (port, connect) => {
      const primary = await connect();
      await primary.query("create table counter (n int); insert into counter values (0)");
      // postgres.js prepares every statement: they must survive the replica's moves to newer computes.
      const replica = postgres({ host: "127.0.0.1", port, user: "postgres", database: "postgres-ro", max: 1 });
      try {
        await replica`set application_name = 'reader'`;
        const acked: { n: number; at_ms: number }[] = [];
        const seen: { n: number; at_ms: number }[] = [];
        let writing = true;
        const writer = (async () => {
          for (let n = 1; writing; n++) {
            await primary.query("update counter set n = $1", [n]);
            acked.push({ n, at_ms: performance.now() });
            await sleep(40);
          }
        })();
        const until_ms = performance.now() + 2500;
        while (performance.now() < until_ms) {
          // When the read was asked: its transaction begins later, so the bound holds from here whatever the load.
          const asked_ms = performance.now();
          const [row] = await replica`select n from counter`;
          seen.push({ n: row.n, at_ms: asked_ms });
          await sleep(15);
        }
        writing = false;
        await writer;
        for (let i = 1; i < seen.length; i++) {
          ok(seen[i].n >= seen[i - 1].n, `went back: ${seen[i - 1].n} -> ${seen[i].n}`);
        }
        // Every read sees at least what was acknowledged max-lag before it was asked (250 ms of slack for timers).
        const lags_ms: number[] = [];
        for (const read of seen) {
          const due = acked.filter((a) => a.at_ms <= read.at_ms - MAX_LAG_MS - 250).at(-1);
          if (due !== undefined) ok(read.n >= due.n, `read ${read.n} at ${read.at_ms} misses ${due.n}`);
          const first = seen.find((s) => s.n >= read.n)!;
          const write = acked.find((a) => a.n === read.n);
          if (write !== undefined) lags_ms.push(first.at_ms - write.at_ms);
        }
        // The reader moves on: the last value written shows up (however slow the machine, within a few generations).
        let last_n = seen.at(-1)!.n;
        for (const until_ms = performance.now() + 15_000; last_n < acked.length && performance.now() < until_ms;) {
          await sleep(100);
          last_n = (await replica`select n from counter`)[0].n;
        }
        equal(last_n, acked.length, "the reader moved on to the last value written");
        const [{ name }] = await replica`select current_setting('application_name') as name`;
        equal(name, "reader", "the session's SET follows it to newer computes");
        const error = await replica`insert into counter values (-1)`.then(() => undefined, (e: PgError) => e);
        equal(error?.code, "25006");
        lags_ms.sort((a, b) => a - b);
        console.log(
          `replica lag (first read of a value after its commit): p50 ${
            lags_ms[lags_ms.length >> 1]?.toFixed(0)
          } ms, max ${lags_ms.at(-1)?.toFixed(0)} ms; ${seen.length} reads`,
        );
      } finally {
        await replica.end();
      }
    }),
});

Deno.test({
  name: "replica: a transaction sees one snapshot from its first to its last statement while the primary commits",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withPgServer({ replica_max_lag_ms: 300 }, async (_port, connect) => {
      const primary = await connect();
      await primary.query("create table t (n int); insert into t values (1)");
      const replica = await connect({ database: "postgres-ro" });
      await replica.query("begin isolation level repeatable read");
      const first = (await replica.query("select n, current_setting('tarn.replay_lsn') as lsn from t")).rows[0];
      for (let n = 2; n <= 4; n++) {
        await primary.query("update t set n = $1", [n]);
        await sleep(150);
        deepStrictEqual(
          (await replica.query("select n, current_setting('tarn.replay_lsn') as lsn from t")).rows[0],
          first,
        );
      }
      await replica.query("commit");
      await sleep(400);
      const after = (await replica.query("select n, current_setting('tarn.replay_lsn') as lsn from t")).rows[0];
      equal(after.n, 4, "the next transaction sees the newest commit");
      ok(after.lsn !== first.lsn);
    }),
});
