import { deepStrictEqual, equal, ok } from "node:assert/strict";
import pg from "pg";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage } from "../src/server/wire.ts";
import { startupPacket } from "./fixtures/startup_packet.ts";

/** Everything the server sends until it closes the connection (or `limit_ms` passes: then "open"). */
async function answerOf(conn: Deno.Conn, limit_ms: number): Promise<Uint8Array | "open"> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(4096);
  const deadline = Date.now() + limit_ms;
  for (;;) {
    const timer = new Promise<"open">((resolve) =>
      setTimeout(() => resolve("open"), Math.max(0, deadline - Date.now()))
    );
    const n = await Promise.race([conn.read(buffer).catch(() => null), timer]);
    if (n === "open") return "open";
    if (n === null) return new Uint8Array(chunks.flatMap((c) => [...c]));
    chunks.push(buffer.slice(0, n));
  }
}

Deno.test({
  name: "server startup: bad, oversized, truncated and silent startups get PostgreSQL's answers and hold nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024 });
    const server = TarnServer.start(engine, { port: 0, authentication_timeout_ms: 400, max_connections: 30 });
    const port = server.port;
    const open: Deno.Conn[] = [];
    const dial = async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      open.push(conn);
      return conn;
    };
    try {
      // Terminate before any startup packet: silence, then the connection ends.
      const early = await dial();
      await early.write(backendMessage("X"));
      deepStrictEqual(await answerOf(early, 2_000), new Uint8Array(0));

      // A startup packet announcing 50 MB is refused at its header, without waiting for the bytes.
      const huge = await dial();
      const header = new Uint8Array(8);
      new DataView(header.buffer).setInt32(0, 50_000_000);
      await huge.write(header);
      deepStrictEqual(await answerOf(huge, 2_000), new Uint8Array(0));

      // 10,001 bytes is over PostgreSQL's limit; a packet under it is served.
      const over = await dial();
      const packet = new Uint8Array(10_001);
      new DataView(packet.buffer).setInt32(0, 10_001);
      await over.write(packet);
      deepStrictEqual(await answerOf(over, 2_000), new Uint8Array(0));

      // Truncated or silent startups: told and closed after the authentication timeout; meanwhile others connect.
      const silent = await Promise.all(Array.from({ length: 20 }, () => dial()));
      const truncated = await dial();
      await truncated.write(startupPacket().subarray(0, 10));
      const client = new pg.Client({ host: "127.0.0.1", port, user: "postgres", database: "template1" });
      await client.connect();
      deepStrictEqual((await client.query("select 1 as one")).rows, [{ one: 1 }], "template1 is main");
      for (const conn of [...silent, truncated]) {
        const answer = await answerOf(conn, 3_000);
        ok(answer !== "open", "a silent connection was closed");
        ok(new TextDecoder().decode(answer).includes("canceling authentication due to timeout"));
      }
      // All those slots are free again: as many new connections as the limit minus the one in use.
      const more = await Promise.all(Array.from({ length: 29 }, async () => {
        const c = new pg.Client({ host: "127.0.0.1", port, user: "postgres" });
        await c.connect();
        return c;
      }));
      equal(more.length, 29);
      for (const c of more) await c.end();
      await client.end();
    } finally {
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // closed by the server
        }
      }
      await server.close();
      await engine.close();
    }
  },
});
