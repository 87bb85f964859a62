import { deepStrictEqual, ok } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { ACCOUNTS, INITIAL_BALANCE } from "./fixtures/bank_worker.ts";

const WORKER = new URL("./fixtures/bank_worker.ts", import.meta.url).pathname;
const KILLS = 20;

/** Runs the worker until a random moment, SIGKILLs it, and returns the transfer ids it saw acknowledged. */
async function runAndKill(dir: string, seed: number, kill_after_ms: number): Promise<number[]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", WORKER, dir, String(seed)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), kill_after_ms);
  const [output, status] = await Promise.all([child.output(), child.status]);
  clearTimeout(timer);
  const stderr = new TextDecoder().decode(output.stderr);
  ok(status.signal === "SIGKILL", `worker ended by itself (code ${status.code}): ${stderr}`);
  const lines = new TextDecoder().decode(output.stdout).split("\n");
  // The last line may be cut by the kill: only whole lines count as acknowledged.
  lines.pop();
  return lines.filter((line) => line.startsWith("ack ")).map((line) => Number(line.slice(4)));
}

Deno.test({
  name: "crash: SIGKILL at random moments loses no acknowledged transfer and keeps the sum",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tarn-crash-" });
    try {
      const acked = new Set<number>();
      // The first run creates the database (initdb in the child): give it time before killing.
      for (const id of await runAndKill(dir, 1, 6000)) acked.add(id);
      for (let run = 2; run <= KILLS; run++) {
        for (const id of await runAndKill(dir, run, 400 + Math.floor(Math.random() * 1400))) acked.add(id);
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
