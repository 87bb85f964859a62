// The pageserver's disk as a cache of the lake: with a small `--cache-disk-mb`, a timeline nobody uses has its
// layer files deleted locally once they are all in the lake, and the next compute on it reads the same data,
// its layers downloaded again (checked) when the timeline opens.
import { deepEqual, equal, ok } from "node:assert/strict";
import postgres from "postgres";
import { spawnCompute, withCluster } from "./fixtures/tarn_process.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function layerFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const tl of Deno.readDir(dir)) {
    for await (const f of Deno.readDir(`${dir}/${tl.name}`)) if (f.name.endsWith(".layer")) names.push(f.name);
  }
  return names;
}

Deno.test({
  name: "lake cache: an idle timeline's layers are evicted over the disk budget and come back when it is used",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir((dir) =>
      withCluster(dir, async ({ sks, ps, started }) => {
        const first = await spawnCompute(ps, sks, "acme");
        started.push(first);
        const sql = postgres(`postgresql://postgres@127.0.0.1:${first.port}/postgres`, { max: 1, onnotice: () => {} });
        await sql`create table t as select g as id, md5(g::text) as h from generate_series(1, 30000) g`;
        const expected = await sql`select count(*)::int as n, sum(id)::bigint as s, max(h) as h from t`;
        await sql.end();
        equal(await first.stop(), 0);
        const evictions = () => ps.events.filter((e) => e.event === "timeline_evicted");
        const before = evictions().length; // one may have come while the first compute started (it is idle then)
        for (let i = 0; i < 150 && evictions().length === before; i++) await sleep(100);
        const evicted = evictions().at(-1);
        ok(evicted !== undefined && Number(evicted.freed_bytes) > 1024 * 1024, JSON.stringify(evicted));
        deepEqual(await layerFiles(`${dir}/ps/tenants/acme/timelines`), [], "no layer file left on disk");

        const second = await spawnCompute(ps, sks, "acme");
        started.push(second);
        const again = postgres(`postgresql://postgres@127.0.0.1:${second.port}/postgres`, {
          max: 1,
          onnotice: () => {},
        });
        deepEqual(await again`select count(*)::int as n, sum(id)::bigint as s, max(h) as h from t`, expected);
        await again.end();
        ok(ps.events.some((e) => e.event === "layers_downloaded"), "the layers came back from the lake");
      }, { remote: `file://${dir}/lake`, pageserver_args: ["--cache-disk-mb", "1", "--evict-after", "1s"] })
    ),
});
