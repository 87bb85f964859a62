import { deepStrictEqual, ok } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { runAndKill } from "./fixtures/kill_child.ts";

const WORKER = new URL("./fixtures/branch_worker.ts", import.meta.url).pathname;

Deno.test({
  name: "branch crash: SIGKILL during branch creation and deletion leaves whole branches and no orphans",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tarn-branch-crash-" });
    try {
      const created = new Set<string>();
      const deleted = new Set<string>();
      // A deletion under way when the process died may have happened or not.
      const deleting = new Set<string>();
      for (let run = 1; run <= 6; run++) {
        const lines = await runAndKill(WORKER, [dir, String(run)], { after_ready_ms: Math.floor(Math.random() * 900) });
        for (const line of lines) {
          if (line.startsWith("created ")) created.add(line.slice(8));
          if (line.startsWith("deleted ")) deleted.add(line.slice(8));
          if (line.startsWith("deleting ")) deleting.add(line.slice(9));
        }
      }
      await using tarn = await Tarn.open(dir);
      const names = new Set(tarn.branches().map((b) => b.name));
      for (const name of created) {
        if (!deleting.has(name)) ok(names.has(name), `acknowledged branch ${name} lost`);
      }
      for (const name of deleted) ok(!names.has(name), `deleted branch ${name} came back`);
      // A branch holds the row inserted just before it was made, and not the next one.
      const survivors = [...created].filter((name) => names.has(name) && !deleted.has(name));
      for (const name of survivors.slice(-4)) {
        const [run, i] = name.slice(1).split("-b").map(Number);
        const db = await tarn.connect(name);
        const { rows } = await db.query<{ id: number }>("select id from t where id in ($1, $2) order by id", [
          run * 10_000 + i,
          run * 10_000 + i + 1,
        ]);
        deepStrictEqual(rows.map((r) => r.id), [run * 10_000 + i], `branch ${name}`);
        await db.close();
      }
      // A branch's directory appears when its compute first runs; no directory may belong to no branch.
      const known = new Set(tarn.branches().map((b) => b.timeline_id));
      const orphans = [...Deno.readDirSync(`${dir}/timelines`)].map((e) => e.name).filter((id) => !known.has(id));
      deepStrictEqual(orphans, [], "orphan timeline directories");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
