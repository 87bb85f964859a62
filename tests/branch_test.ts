import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import {
  BranchExistsError,
  BranchNotFoundError,
  BranchRuleError,
  LsnOutOfRangeError,
  ReadOnlyError,
  Tarn,
  type TarnClient,
} from "../mod.ts";
import { withTempDir as withDir } from "./fixtures/temp_dir.ts";

async function ids(db: TarnClient, table = "t"): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(`select id from ${table} order by id`);
  return rows.map((r) => r.id);
}

Deno.test("branches: isolation both ways, siblings, and a branch of a branch", async () => {
  await using tarn = await Tarn.open();
  const main = await tarn.connect();
  await main.exec("create table t (id int primary key); insert into t values (1), (2)");
  await tarn.createBranch("dev");
  const dev = await tarn.connect("dev");
  await dev.query("insert into t values (100)");
  await main.query("insert into t values (200)");
  deepStrictEqual(await ids(dev), [1, 2, 100]);
  deepStrictEqual(await ids(main), [1, 2, 200]);
  await tarn.createBranch("sibling");
  deepStrictEqual(await ids(await tarn.connect("sibling")), [1, 2, 200]);
  await tarn.createBranch("feature", { from: "dev" });
  const feature = await tarn.connect("feature");
  await feature.exec("create table only_here (id int)");
  deepStrictEqual(await ids(feature), [1, 2, 100]);
  await rejects(dev.query("select * from only_here"), /does not exist/);
  const listed = tarn.branches().map((b) => [b.name, b.parent ?? null]);
  deepStrictEqual(listed, [["main", null], ["dev", "main"], ["sibling", "main"], ["feature", "dev"]]);
});

Deno.test("branches: at an LSN and at a time, checked against rows committed before and after", async () => {
  await using tarn = await Tarn.open();
  const main = await tarn.connect();
  await main.exec("create table t (id int primary key)");
  const points: { lsn: string; time: Date }[] = [];
  for (let i = 1; i <= 5; i++) {
    await main.query("insert into t values ($1)", [i]);
    const { rows } = await main.query<{ lsn: string }>("select pg_current_wal_insert_lsn()::text as lsn");
    await new Promise((resolve) => setTimeout(resolve, 30));
    points.push({ lsn: rows[0].lsn, time: new Date() });
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  await tarn.createBranch("at-lsn", { at: points[1].lsn });
  deepStrictEqual(await ids(await tarn.connect("at-lsn")), [1, 2]);
  await tarn.createBranch("at-time", { at: points[2].time });
  deepStrictEqual(await ids(await tarn.connect("at-time")), [1, 2, 3]);
  const past = await tarn.connect("main", { at: points[3].lsn });
  deepStrictEqual(await ids(past), [1, 2, 3, 4]);
  await rejects(past.query("insert into t values (99)"), ReadOnlyError);
  await past.close();
  const head = await tarn.connect("main", { readOnly: true });
  deepStrictEqual(await ids(head), [1, 2, 3, 4, 5]);
  await head.close();
  await rejects(tarn.createBranch("future", { at: "FF/0" }), LsnOutOfRangeError);
  await rejects(tarn.createBranch("ancient", { at: new Date(2000, 0, 1) }), LsnOutOfRangeError);
  deepStrictEqual(await ids(main), [1, 2, 3, 4, 5]);
});

Deno.test("branches: delete, reset and protect rules; unknown and duplicate names", async () => {
  await using tarn = await Tarn.open();
  const main = await tarn.connect();
  await main.exec("create table t (id int primary key); insert into t values (1)");
  await tarn.createBranch("dev");
  await tarn.createBranch("child", { from: "dev" });
  await rejects(tarn.createBranch("dev"), BranchExistsError);
  await rejects(tarn.createBranch("bad name!"), BranchRuleError);
  await rejects(tarn.connect("nope"), BranchNotFoundError);
  await rejects(tarn.deleteBranch("main"), BranchRuleError);
  await rejects(tarn.deleteBranch("dev"), /has children \(child\)/);
  await tarn.protectBranch("child", true);
  await rejects(tarn.deleteBranch("dev", { recursive: true }), /protected/);
  await rejects(tarn.resetBranch("child"), /protected/);
  await tarn.protectBranch("child", false);
  await tarn.deleteBranch("dev", { recursive: true });
  deepStrictEqual(tarn.branches().map((b) => b.name), ["main"]);
  await tarn.createBranch("scratch");
  const scratch = await tarn.connect("scratch");
  await scratch.query("insert into t values (50)");
  await main.query("insert into t values (2)");
  await tarn.resetBranch("scratch");
  deepStrictEqual(await ids(await tarn.connect("scratch")), [1, 2], "reset discards the branch's own changes");
});

Deno.test("branches: reopening keeps every branch; deleting one frees its storage", async () => {
  await withDir(async (dir) => {
    {
      await using tarn = await Tarn.open(dir);
      const main = await tarn.connect();
      await main.exec("create table t (id int primary key, pad text); insert into t values (1, 'x')");
      await tarn.createBranch("dev");
      const dev = await tarn.connect("dev");
      await dev.query("insert into t select g, repeat('y', 500) from generate_series(10, 2009) g");
      await tarn.createBranch("doomed", { from: "dev" });
      await (await tarn.connect("doomed")).query("insert into t values (5000, 'z')");
    }
    await using tarn = await Tarn.open(dir);
    deepStrictEqual(tarn.branches().map((b) => b.name), ["main", "dev", "doomed"]);
    deepStrictEqual((await ids(await tarn.connect("doomed"))).length, 2002);
    deepStrictEqual(await ids(await tarn.connect("main")), [1]);
    const used = await tarn.branchDiskBytes("dev");
    ok(used > 100_000, `dev holds ${used} bytes`);
    const doomed_id = tarn.branches().find((b) => b.name === "doomed")!.timeline_id;
    await tarn.deleteBranch("doomed");
    await tarn.deleteBranch("dev");
    deepStrictEqual(await tarn.branchDiskBytes("main") > 0, true);
    const left = [...Deno.readDirSync(`${dir}/timelines`)].map((e) => e.name);
    deepStrictEqual(left, [tarn.branches()[0].timeline_id], `timeline directories left: ${left} (doomed ${doomed_id})`);
  });
});

Deno.test("fork: an ephemeral branch per test, deleted on dispose", async () => {
  await using tarn = await Tarn.open();
  const main = await tarn.connect();
  await main.exec("create table t (id int primary key); insert into t values (1)");
  {
    await using a = await tarn.fork();
    await using b = await tarn.fork();
    await a.query("insert into t values (10)");
    await b.query("insert into t values (20)");
    deepStrictEqual(await ids(a), [1, 10]);
    deepStrictEqual(await ids(b), [1, 20]);
  }
  deepStrictEqual(tarn.branches().map((b) => b.name), ["main"]);
  deepStrictEqual(await ids(main), [1]);
});
