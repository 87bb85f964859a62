import { deepStrictEqual, ok } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { ACCOUNTS, INITIAL_BALANCE } from "./fixtures/bank_worker.ts";
import { runAndKill } from "./fixtures/kill_child.ts";

const WORKER = new URL("./fixtures/bank_worker.ts", import.meta.url).pathname;
const KILLS = 20;

Deno.test({
  name: "crash: SIGKILL at random moments loses no acknowledged transfer and keeps the sum",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tarn-crash-" });
    try {
      const acked = new Set<number>();
      for (let run = 1; run <= KILLS; run++) {
        // Odd runs die at any moment from spawn (start-up and recovery included), even ones while transferring.
        const at = run % 2 === 1 && run > 1
          ? { after_spawn_ms: 200 + Math.floor(Math.random() * 1500) }
          : { after_ready_ms: Math.floor(Math.random() * 800) };
        const lines = await runAndKill(WORKER, [dir, String(run)], at);
        for (const line of lines) if (line.startsWith("ack ")) acked.add(Number(line.slice(4)));
      }
      ok(acked.size > 0, "the workload acknowledged no transfer");
      await using tarn = await Tarn.open(dir);
      const db = await tarn.connect();
      const sum = await db.query<{ total: string; n: number }>(
        "select sum(balance)::text as total, count(*)::int as n from accounts",
      );
      deepStrictEqual(sum.rows[0], { total: String(ACCOUNTS * INITIAL_BALANCE), n: ACCOUNTS });
      const stored = await db.query<{ id: number }>("select id::int from transfers");
      const ids = new Set(stored.rows.map((row) => row.id));
      const lost = [...acked].filter((id) => !ids.has(id));
      deepStrictEqual(lost, [], `acknowledged transfers missing after recovery`);
      const replay = await db.query<{ bad: number }>(`
        select count(*)::int as bad from accounts a
        where a.balance <> ${INITIAL_BALANCE}
          - coalesce((select sum(amount) from transfers where src = a.id), 0)
          + coalesce((select sum(amount) from transfers where dst = a.id), 0)`);
      deepStrictEqual(replay.rows[0].bad, 0, "balances disagree with the transfer history");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
