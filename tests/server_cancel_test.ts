import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import postgres from "postgres";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage } from "../src/server/wire.ts";
import { startupPacket } from "./fixtures/startup_packet.ts";

/** A server whose engine runs in a Worker (as `tarn start` runs it), over an in-memory database. */
function workerServerTest(name: string, fn: (port: number) => Promise<void>) {
  Deno.test({
    name,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024 });
      const server = TarnServer.start(engine, { port: 0 });
      try {
        await fn(server.port);
      } finally {
        await server.close();
        await engine.close();
      }
    },
  });
}

const CROSS_JOIN = "select count(*) from generate_series(1, 6000) a, generate_series(1, 6000) b";

workerServerTest(
  "server cancel: a CancelRequest stops a running statement, in and out of a transaction",
  async (port) => {
    const sql = postgres({ host: "127.0.0.1", port, user: "postgres", max: 1, onnotice: () => {} });
    try {
      await sql`create table t (id int)`;
      const outside = sql.unsafe(CROSS_JOIN);
      setTimeout(() => outside.cancel(), 200);
      await rejects(outside, (error: { code?: string }) => error.code === "57014");
      deepStrictEqual([...await sql`select 1 as one`], [{ one: 1 }]);

      await rejects(
        sql.begin(async (tx) => {
          await tx`insert into t values (1)`;
          const inside = tx.unsafe(CROSS_JOIN);
          setTimeout(() => inside.cancel(), 200);
          await inside;
        }),
        (error: { code?: string }) => error.code === "57014",
      );
      // The cancelled transaction rolled back; a cancel that came after its statement ended hits nothing later.
      deepStrictEqual([...await sql`select count(*)::int as n from t`], [{ n: 0 }]);
      await sql`insert into t values (2)`;
      deepStrictEqual([...await sql`select id from t`], [{ id: 2 }]);
    } finally {
      await sql.end();
    }
  },
);

workerServerTest("server cancel: a CancelRequest with a wrong key cancels nothing", async (port) => {
  const sql = postgres({ host: "127.0.0.1", port, user: "postgres", max: 1 });
  try {
    const running = sql`select pg_sleep(0.6), 7 as seven`.execute();
    await new Promise((resolve) => setTimeout(resolve, 150));
    // Session ids start at 1; a made-up secret must not reach it.
    await sendCancel(port, 1, 12345);
    await sendCancel(port, 2, 12345);
    equal((await running)[0].seven, 7);
  } finally {
    await sql.end();
  }
});

workerServerTest("server cancel: clients connect and are served their startup while a statement runs", async (port) => {
  const sql = postgres({ host: "127.0.0.1", port, user: "postgres", max: 1 });
  try {
    let long_done = false;
    const long = sql`select pg_sleep(1.5)`.execute().then(() => long_done = true);
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Startup (and its ReadyForQuery) is the server's own work: it does not wait for the engine.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(startupPacket());
    const reply = await readUntilReady(conn);
    ok(!long_done, "startup was answered only after the long statement ended");
    ok(reply.includes("Z".charCodeAt(0)));
    await conn.write(backendMessage("X"));
    conn.close();
    await long;
  } finally {
    await sql.end();
  }
});

async function sendCancel(port: number, pid: number, secret: number): Promise<void> {
  const packet = new Uint8Array(16);
  const view = new DataView(packet.buffer);
  view.setInt32(0, 16);
  view.setInt32(4, 80877102);
  view.setInt32(8, pid);
  view.setInt32(12, secret);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(packet);
  // The server closes a cancel connection without answering.
  equal(await conn.read(new Uint8Array(16)), null);
  conn.close();
}

async function readUntilReady(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buffer = new Uint8Array(4096);
  for (let reads = 0; reads < 100; reads++) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(...buffer.subarray(0, n));
    if (chunks.length >= 6 && chunks[chunks.length - 6] === "Z".charCodeAt(0)) break;
  }
  return new Uint8Array(chunks);
}
