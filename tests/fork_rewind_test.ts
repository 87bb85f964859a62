import { deepStrictEqual, ok } from "node:assert/strict";
import { Tarn } from "../mod.ts";

Deno.test("rewind: a fork goes back to the moment it was made, again and again", async () => {
  await using tarn = await Tarn.open();
  const main = await tarn.connect();
  await main.exec("create table t (id int primary key, v text); insert into t values (1, 'seed')");
  await using fork = await tarn.fork();
  for (let round = 0; round < 5; round++) {
    await fork.exec(`
      insert into t select g, 'round' from generate_series(100, 400) g;
      update t set v = 'changed' where id = 1;
      create table scratch_${round} (x int);
      create temp table temp_${round} (x int);
      set application_name = 'dirty';`);
    deepStrictEqual((await fork.query("select count(*)::int as n from t")).rows, [{ n: 302 }]);
    await tarn.rewind(fork);
    deepStrictEqual(tarn.lastRewindFallback(fork), undefined, "rewound in place");
    deepStrictEqual((await fork.query("select id, v from t order by id")).rows, [{ id: 1, v: "seed" }]);
    const tables = await fork.query("select count(*)::int as n from pg_class where relname like 'scratch_%'");
    deepStrictEqual(tables.rows, [{ n: 0 }]);
    deepStrictEqual((await fork.query("show application_name")).rows, [{ application_name: "" }]);
  }
  deepStrictEqual((await main.query("select count(*)::int as n from t")).rows, [{ n: 1 }]);
});

Deno.test("rewind: an open transaction or a library loaded after the fork falls back to a restart", async () => {
  await using tarn = await Tarn.open();
  const main = await tarn.connect();
  await main.exec("create table t (id int primary key)");
  await using fork = await tarn.fork();
  await fork.exec("begin; insert into t values (1)");
  await tarn.rewind(fork);
  deepStrictEqual(tarn.lastRewindFallback(fork), "a transaction is open");
  deepStrictEqual((await fork.query("select count(*)::int as n from t")).rows, [{ n: 0 }]);
  await fork.exec(`create function f() returns int language plpgsql as $$ begin return 7; end $$`);
  deepStrictEqual((await fork.query("select f() as v")).rows, [{ v: 7 }]);
  await tarn.rewind(fork);
  const reason = tarn.lastRewindFallback(fork);
  ok(reason === undefined || reason.includes("library"), `unexpected fallback: ${reason}`);
  deepStrictEqual((await fork.query("select count(*)::int as n from pg_proc where proname = 'f'")).rows, [{ n: 0 }]);
  await fork.exec(`create function g() returns int language plpgsql as $$ begin return 8; end $$`);
  deepStrictEqual((await fork.query("select g() as v")).rows, [{ v: 8 }], "plpgsql works after the rewind");
});
