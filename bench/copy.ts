/**
 * COPY FROM STDIN through the server (streamed to Postgres in the engine Worker, `engine_guard.ts`) against the
 * same rows given to plain PGlite in one call in this process, and the time from an engine failure to the next
 * answered query.
 *
 * @module
 */
import postgres from "postgres";
import { PGlite } from "@electric-sql/pglite";
import { EngineHost } from "../src/server/engine_host.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage, concatBytes, cStrings } from "../src/server/wire.ts";

/** What {@linkcode benchCopy} measured. */
export type CopyFigures = { rows: number; server_ms: number; pglite_ms: number; recovery_ms: number };

function rowsText(rows: number): string {
  let text = "";
  for (let i = 0; i < rows; i++) text += `${i}\tname ${i}\t${i * 0.5}\n`;
  return text;
}

/** COPY of `rows` rows: through `tarn start`'s server, and into plain PGlite in one call; then a restart. */
export async function benchCopy(rows: number): Promise<CopyFigures> {
  const text = rowsText(rows);
  const lite = await PGlite.create();
  await lite.exec("create table t (id int, name text, score float8)");
  const data = new TextEncoder().encode(text);
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < data.length; at += 64 * 1024) chunks.push(backendMessage("d", data.subarray(at, at + 65536)));
  const started_lite = performance.now();
  await lite.execProtocolRaw(concatBytes([
    backendMessage("Q", cStrings("copy t from stdin")),
    ...chunks,
    backendMessage("c"),
  ]));
  const pglite_ms = performance.now() - started_lite;
  await lite.close();

  const engine = await EngineHost.open({ compute_idle_ms: 60_000, page_cache_pages: 1024, fault_injection: true });
  const server = TarnServer.start(engine, { port: 0 });
  const sql = postgres({ host: "127.0.0.1", port: server.port, user: "postgres", max: 1, onnotice: () => {} });
  try {
    await sql`create table t (id int, name text, score float8)`;
    const started = performance.now();
    const writable = await sql`copy t from stdin`.writable();
    await new Promise<void>((resolve, reject) => {
      writable.on("error", reject);
      writable.on("finish", resolve);
      for (let at = 0; at < text.length; at += 64 * 1024) writable.write(text.slice(at, at + 64 * 1024));
      writable.end();
    });
    const server_ms = performance.now() - started;
    const [{ n }] = await sql`select count(*)::int as n from t`;
    if (n !== rows) throw new Error(`COPY loaded ${n} rows of ${rows}`);

    const { compute, release } = await engine.attachCompute("main");
    await engine.injectFault(compute);
    await release();
    await sql`select 1`.catch(() => {});
    const failed = performance.now();
    const again = postgres({ host: "127.0.0.1", port: server.port, user: "postgres", max: 1 });
    await again`select count(*) from t`;
    const recovery_ms = performance.now() - failed;
    await again.end();
    return { rows, server_ms, pglite_ms, recovery_ms };
  } finally {
    await sql.end({ timeout: 1 }); // its connection was ended by the failure: do not wait for it
    await server.close();
    await engine.close();
  }
}
