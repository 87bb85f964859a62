import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { SafekeeperServer } from "../src/replication/safekeeper/server.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

/** Three safekeepers in this process, on free ports, stopped after `fn`. */
async function withSafekeepers(dir: string, fn: (addresses: string[], servers: SafekeeperServer[]) => Promise<void>) {
  const servers: SafekeeperServer[] = [];
  try {
    for (const id of [1, 2, 3]) {
      servers.push(
        await SafekeeperServer.start({ dir: `${dir}/sk${id}`, hostname: "127.0.0.1", port: 0, node_id: id }),
      );
    }
    await fn(servers.map((s) => `127.0.0.1:${s.port}`), servers);
  } finally {
    for (const server of servers) await server.close();
  }
}

/** The newest WAL segment file of the main timeline. */
function newestSegment(data: string): string {
  const timelines = [...Deno.readDirSync(`${data}/timelines`)].map((e) => e.name);
  const files = timelines.flatMap((t) => {
    try {
      return [...Deno.readDirSync(`${data}/timelines/${t}/wal`)].map((e) => `${data}/timelines/${t}/wal/${e.name}`);
    } catch {
      return [];
    }
  });
  return files.sort().at(-1)!;
}

Deno.test("quorum wal: commits reach the safekeepers; a compute whose local WAL lost its tail gets it back", async () => {
  await withTempDir(async (dir) => {
    await withSafekeepers(dir, async (safekeepers) => {
      const data = `${dir}/data`;
      {
        await using tarn = await Tarn.open(data, { safekeepers });
        const db = await tarn.connect();
        await db.exec("create table t (id int primary key, note text)");
        for (let i = 0; i < 50; i++) await db.query("insert into t values ($1, repeat('x', 500))", [i]);
        await db.close();
      }
      // The local WAL is only a cache of committed WAL (never fsynced per commit): lose its last 8 KB.
      const segment = newestSegment(data);
      const size = (await Deno.stat(segment)).size;
      await Deno.truncate(segment, size - 8000);
      {
        const events: string[] = [];
        await using tarn = await Tarn.open(data, { safekeepers, log: (event) => events.push(event) });
        ok(events.includes("recovered_from_safekeepers"), events.join(", "));
        const db = await tarn.connect();
        deepStrictEqual((await db.query<{ n: number }>("select count(*)::int as n from t")).rows, [{ n: 50 }]);
        await db.close();
      }
    });
  });
});

Deno.test("quorum wal: the safekeepers' status shows the same flush LSN once commits return", async () => {
  await withTempDir(async (dir) => {
    await withSafekeepers(dir, async (safekeepers, servers) => {
      await using tarn = await Tarn.open(`${dir}/data`, { safekeepers });
      const db = await tarn.connect();
      await db.exec("create table t (id int)");
      await db.exec("insert into t values (1)");
      const statuses = await Promise.all(servers.map(async (s) => {
        const response = await fetch(`http://127.0.0.1:${s.port}/status`);
        return await response.json() as { timelines: { flush_lsn: string; term: number }[] };
      }));
      // A majority holds the commit; all three catch up within the proposer's next ticks.
      const flushed = statuses.map((s) => s.timelines[0]?.flush_lsn);
      ok(flushed.filter((lsn) => lsn === flushed[0]).length >= 2, JSON.stringify(statuses));
      equal(statuses[0].timelines[0].term >= 1, true);
      await db.close();
    });
  });
});

Deno.test("quorum wal: a branch's WAL goes to the safekeepers as its own timeline and survives a reopen", async () => {
  await withTempDir(async (dir) => {
    await withSafekeepers(dir, async (safekeepers, servers) => {
      const data = `${dir}/data`;
      {
        await using tarn = await Tarn.open(data, { safekeepers });
        const main = await tarn.connect();
        await main.exec("create table t (id int); insert into t values (1)");
        await main.close();
        await tarn.createBranch("dev");
        const dev = await tarn.connect("dev");
        await dev.exec("insert into t values (2)");
        await dev.close();
      }
      const response = await fetch(`http://127.0.0.1:${servers[0].port}/status`);
      const status = await response.json() as { timelines: unknown[] };
      equal(status.timelines.length, 2);
      await using tarn = await Tarn.open(data, { safekeepers });
      const dev = await tarn.connect("dev");
      deepStrictEqual((await dev.query<{ id: number }>("select id from t order by id")).rows, [{ id: 1 }, { id: 2 }]);
      await dev.close();
      const main = await tarn.connect();
      deepStrictEqual((await main.query<{ id: number }>("select id from t")).rows, [{ id: 1 }]);
      await main.close();
    });
  });
});

Deno.test("quorum wal: opening with no safekeeper reachable fails with a clear error", async () => {
  await withTempDir(async (dir) => {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = listener.addr.port;
    listener.close();
    await rejects(
      Tarn.open(`${dir}/data`, { safekeepers: [`127.0.0.1:${port}`], election_timeout_ms: 500 }),
      (error: Error) => error.name === "QuorumUnavailableError" && /0 of 1 reachable/.test(error.message),
    );
    // The directory is not left locked.
    await using tarn = await Tarn.open(`${dir}/data`);
    const db = await tarn.connect();
    deepStrictEqual((await db.query<{ one: number }>("select 1 as one")).rows, [{ one: 1 }]);
    await db.close();
  });
});
