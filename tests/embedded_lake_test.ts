// The lake for an embedded database: `Tarn.open(dir, { remote })` uploads layers, indexes and its own WAL; after a
// clean close, a new empty directory opened with the same remote holds every committed row, on every branch.
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { ConfigurationError } from "../src/errors.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

Deno.test({
  name: "embedded lake: an empty directory opened with the same remote has every committed row, on every branch",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir(async (dir) => {
      const remote = `file://${dir}/lake`;
      const events: string[] = [];
      const log = (event: string) => void events.push(event);
      const first = await Tarn.open(`${dir}/a`, { remote, log });
      const main = await first.connect();
      await main.query("create table t (id int primary key, pad text)");
      await main.query("insert into t select g, repeat('x', 300) from generate_series(1, 20000) g");
      await first.createBranch("dev");
      const dev = await first.connect("dev");
      await dev.query("insert into t values (-1, 'dev only')");
      await dev.close();
      await main.query("delete from t where id > 19000");
      await main.close();
      await first.close();
      ok(events.includes("timeline_uploaded") && events.includes("wal_partial_offloaded"), events.join());

      const second = await Tarn.open(`${dir}/b`, { remote, log });
      try {
        const m = await second.connect();
        deepEqual((await m.query("select count(*)::int as n, min(id) as lo from t")).rows, [{ n: 19000, lo: 1 }]);
        await m.close();
        const d = await second.connect("dev");
        deepEqual((await d.query("select count(*)::int as n, min(id) as lo from t")).rows, [{ n: 20001, lo: -1 }]);
        await d.close();
        ok(events.includes("tenant_downloaded") && events.includes("layers_downloaded"), events.join());
      } finally {
        await second.close();
      }
      await rejects(Tarn.open(undefined, { remote }), ConfigurationError);
      equal((await Deno.stat(`${dir}/lake/tenants/db`)).isDirectory, true);
    }),
});
