import { deepStrictEqual, ok, rejects } from "node:assert/strict";
import { DatabaseLockedError, Tarn } from "../mod.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

Deno.test("memory: query, exec, sql, transaction commit and rollback", async () => {
  await using tarn = await Tarn.open();
  const db = await tarn.connect();
  await db.exec("create table t (id int primary key, v text)");
  const inserted = await db.query("insert into t values ($1, $2), ($3, $4)", [1, "a", 2, "b"]);
  deepStrictEqual(inserted.affectedRows, 2);
  const id = 2;
  const one = await db.sql<{ v: string }>`select v from t where id = ${id}`;
  deepStrictEqual(one.rows, [{ v: "b" }]);
  deepStrictEqual(one.fields.map((f) => f.name), ["v"]);
  await db.transaction(async (tx) => {
    await tx.query("insert into t values (3, 'c')");
  });
  await rejects(
    db.transaction(async (tx) => {
      await tx.query("insert into t values (4, 'd')");
      throw new Error("abort this one");
    }),
    /abort this one/,
  );
  const all = await db.query<{ id: number }>("select id from t order by id");
  deepStrictEqual(all.rows.map((r) => r.id), [1, 2, 3]);
  const results = await db.exec("select 1 as a; select 2 as b");
  deepStrictEqual(results.map((r) => r.rows[0]), [{ a: 1 }, { b: 2 }]);
});

Deno.test("directory: data survives close and reopen, and reopening never runs initdb", async () => {
  await withTempDir(async (dir) => {
    {
      await using tarn = await Tarn.open(dir);
      const db = await tarn.connect();
      await db.exec("create table kv (k text primary key, v int)");
      await db.query("insert into kv select 'k' || g, g from generate_series(1, 5000) g");
    }
    const tenant = await Deno.readTextFile(`${dir}/tarn.json`);
    for (let round = 0; round < 3; round++) {
      await using tarn = await Tarn.open(dir);
      const db = await tarn.connect();
      const { rows } = await db.query<{ n: number; s: number }>("select count(*)::int n, sum(v)::int s from kv");
      deepStrictEqual(rows[0], { n: 5000 + round, s: 12502500 + (5001 * round + (round * (round - 1)) / 2) });
      await db.query("insert into kv values ($1, $2)", [`extra${round}`, 5001 + round]);
      const system = await db.query<{ id: string }>("select system_identifier::text as id from pg_control_system()");
      ok(system.rows[0].id.length > 0);
    }
    deepStrictEqual(await Deno.readTextFile(`${dir}/tarn.json`), tenant, "reopening rewrote the tenant file");
  });
});

Deno.test("directory: the same cluster (system identifier) after reopen", async () => {
  await withTempDir(async (dir) => {
    const ids: string[] = [];
    for (let round = 0; round < 2; round++) {
      await using tarn = await Tarn.open(dir);
      const db = await tarn.connect();
      const { rows } = await db.query<{ id: string }>("select system_identifier::text as id from pg_control_system()");
      ids.push(rows[0].id);
    }
    deepStrictEqual(ids[0], ids[1]);
  });
});

Deno.test("directory lock: a second process gets an error naming the holder's pid", async () => {
  await withTempDir(async (dir) => {
    await using tarn = await Tarn.open(dir);
    const code = `
      import { Tarn, DatabaseLockedError } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
      try { await Tarn.open(${JSON.stringify(dir)}); console.log("opened"); }
      catch (e) { console.log(e instanceof DatabaseLockedError ? "locked:" + e.holder_pid + ":" + e.message : "other:" + e); }`;
    const output = await new Deno.Command(Deno.execPath(), { args: ["eval", code], stdout: "piped" }).output();
    const line = new TextDecoder().decode(output.stdout).trim();
    ok(line.startsWith(`locked:${Deno.pid}:`), line);
    ok(line.includes(`process ${Deno.pid}`), line);
    await rejects(Tarn.open(dir), DatabaseLockedError);
    const db = await tarn.connect();
    deepStrictEqual((await db.query("select 1 as one")).rows, [{ one: 1 }]);
  });
});

Deno.test("directory: a corrupt older layer file is a clear error naming the file", async () => {
  await withTempDir(async (dir) => {
    {
      await using tarn = await Tarn.open(dir, { checkpoint_wal_bytes: 64 * 1024 });
      const db = await tarn.connect();
      await db.exec("create table t (id int primary key, pad text)");
      for (let i = 0; i < 20; i++) {
        await db.query("insert into t select g, repeat('x', 200) from generate_series($1::int, $1::int + 99) g", [
          i * 100,
        ]);
      }
    }
    const timelines = `${dir}/timelines`;
    const [timeline] = [...Deno.readDirSync(timelines)].map((e) => e.name);
    const layers = [...Deno.readDirSync(`${timelines}/${timeline}`)].map((e) => e.name).filter((n) =>
      n.endsWith(".layer")
    ).sort();
    ok(layers.length >= 2, `expected several layers, got ${layers}`);
    const victim = `${timelines}/${timeline}/${layers[0]}`;
    const bytes = await Deno.readFile(victim);
    bytes[bytes.length - 40] ^= 0xff; // in the index and footer, which every open checks
    await Deno.writeFile(victim, bytes);
    await rejects(Tarn.open(dir), (error: Error) => error.message.includes(layers[0]));
  });
});
