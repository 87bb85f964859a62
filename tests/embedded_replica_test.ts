import { equal, ok, rejects } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { ReadOnlyError } from "../src/errors.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("embedded replica: follows the head within its lag, one state per transaction, refuses writes", async () => {
  await using tarn = await Tarn.open();
  await using main = await tarn.connect();
  await main.exec("create table t (n int); insert into t values (1)");
  await using replica = await tarn.connect("main", { replica: true, max_lag_ms: 200 });
  const value = async () => (await replica.query<{ n: number }>("select n from t")).rows[0].n;
  equal(await value(), 1);
  await rejects(replica.exec("insert into t values (2)"), ReadOnlyError);

  await main.exec("update t set n = 2");
  await sleep(250);
  equal(await value(), 2, "past the lag, a statement reads the newest commit");

  const lsns = await replica.transaction(async (tx) => {
    const first =
      (await tx.query<{ n: number; lsn: string }>("select n, current_setting('tarn.replay_lsn') as lsn from t"))
        .rows[0];
    await main.exec("update t set n = 3");
    await sleep(250);
    const again =
      (await tx.query<{ n: number; lsn: string }>("select n, current_setting('tarn.replay_lsn') as lsn from t"))
        .rows[0];
    equal(again.n, first.n, "a transaction sees one state");
    equal(again.lsn, first.lsn);
    return first.lsn;
  });
  equal(await value(), 3, "the next statement moves on");
  const now = (await replica.query<{ lsn: string }>("select current_setting('tarn.replay_lsn') as lsn")).rows[0].lsn;
  ok(now !== lsns, "it reads a newer LSN than the transaction did");
});
