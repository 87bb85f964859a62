/**
 * `Tarn.open` of existing databases of two sizes to the first query result, each in a fresh process (as a
 * restarted compute would be), and the RSS of one open database after a full scan.
 *
 * @module
 */
import { Tarn } from "../mod.ts";

const PROBE = new URL("./open_probe.ts", import.meta.url).pathname;
const RUNS = 5;

/** Figures for one database size. */
export type OpenResult = { size_mb: number; open_ms_median: number; rss_mb: number };

async function build(dir: string, size_mb: number): Promise<void> {
  const tarn = await Tarn.open(dir);
  const db = await tarn.connect();
  await db.exec("create table big (id int primary key, pad text)");
  const rows = Math.round(size_mb * 1024 * 1024 / 1000);
  for (let start = 1; start <= rows; start += 10_000) {
    await db.query("insert into big select g, repeat(md5(g::text), 28) from generate_series($1::int, $2::int) g", [
      start,
      Math.min(rows, start + 9_999),
    ]);
  }
  await tarn.close();
}

async function probe(dir: string): Promise<{ open_ms: number; rss_bytes: number }> {
  const output = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", PROBE, dir], stdout: "piped" })
    .output();
  if (!output.success) throw new Error(`open probe failed on ${dir}`);
  return JSON.parse(new TextDecoder().decode(output.stdout).trim());
}

/** Builds each database, then opens it RUNS times in fresh processes. */
export async function benchOpen(sizes_mb: number[]): Promise<OpenResult[]> {
  const results: OpenResult[] = [];
  for (const size_mb of sizes_mb) {
    const dir = await Deno.makeTempDir({ prefix: `tarn-bench-open-${size_mb}mb-` });
    try {
      await build(dir, size_mb);
      const runs = [];
      for (let i = 0; i < RUNS; i++) runs.push(await probe(dir));
      const open = runs.map((r) => r.open_ms).sort((a, b) => a - b);
      results.push({
        size_mb,
        open_ms_median: open[Math.floor(RUNS / 2)],
        rss_mb: Math.max(...runs.map((r) => r.rss_bytes)) / 1024 / 1024,
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
  return results;
}
