// SIGKILL `tarn start` while clients commit over the wire: every commit a client saw acknowledged is there after
// a restart on the same directory.
import { deepStrictEqual, ok } from "node:assert/strict";
// @ts-types="npm:@types/pg@8.23.1"
import pg from "pg";
import { withTempDir } from "./fixtures/temp_dir.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function startServer(dir: string): Promise<{ port: number; child: Deno.ChildProcess; drained: Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "start", "--data", dir, "--port", "0", "--log-format", "json"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("tarn start exited before listening");
    text += value;
    const match = /"event":"listening"[^\n]*"port":(\d+)/.exec(text);
    if (match) {
      const drained = (async () => {
        while (!(await reader.read()).done);
      })();
      return { port: Number(match[1]), child, drained };
    }
  }
}

Deno.test({
  name: "server crash: SIGKILL under concurrent commits loses no acknowledged one",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir(async (dir) => {
      const acked = new Set<number>();
      for (let round = 0; round < 3; round++) {
        const server = await startServer(dir);
        const clients = await Promise.all([0, 1, 2].map(async () => {
          const c = new pg.Client({ host: "127.0.0.1", port: server.port, user: "postgres" });
          c.on("error", () => {});
          await c.connect();
          return c;
        }));
        await clients[0].query("create table if not exists acks (id int primary key, pad text)");
        let stop = false;
        const writers = clients.map(async (c, w) => {
          for (let i = 0; !stop; i++) {
            const id = round * 1_000_000 + w * 100_000 + i;
            try {
              await c.query("begin");
              await c.query("insert into acks values ($1, repeat('x', 100))", [id]);
              await c.query("commit");
              acked.add(id);
            } catch {
              return; // the server died under this statement: not acknowledged
            }
          }
        });
        await new Promise((resolve) => setTimeout(resolve, 300 + Math.random() * 700));
        server.child.kill("SIGKILL");
        stop = true;
        await Promise.all(writers);
        await server.child.status;
        await server.drained;
        for (const c of clients) await c.end().catch(() => {});
      }
      ok(acked.size > 0, "no commit was acknowledged");
      const server = await startServer(dir);
      const check = new pg.Client({ host: "127.0.0.1", port: server.port, user: "postgres" });
      await check.connect();
      const { rows } = await check.query("select id from acks");
      const stored = new Set(rows.map((r: { id: number }) => r.id));
      deepStrictEqual([...acked].filter((id) => !stored.has(id)), [], "acknowledged commits lost");
      await check.end();
      server.child.kill("SIGTERM");
      await server.child.status;
      await server.drained;
    }),
});
