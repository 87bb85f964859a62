// Child process for bench/open_time.ts: times Tarn.open of an existing directory to the first query result,
// then reports the process's RSS after a scan of the whole table.
import { Tarn } from "../mod.ts";

const [dir] = Deno.args;
const started_ms = performance.now();
const tarn = await Tarn.open(dir);
const db = await tarn.connect();
await db.query("select 1");
const open_ms = performance.now() - started_ms;
await db.query("select count(*), sum(length(pad)) from big");
console.log(JSON.stringify({ open_ms, rss_bytes: Deno.memoryUsage().rss }));
await tarn.close();
