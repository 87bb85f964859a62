/**
 * `tarn demo`: a short embedded session that shows Tarn working, on a directory that keeps its data.
 *
 * @module
 */
import { Tarn } from "../tarn.ts";
import { flagValue, parseFlags } from "./flags.ts";

/** Help text. */
export const DEMO_HELP = `tarn demo [--data DIR]: an embedded session on DIR (default ./tarn-data)`;

/** Runs the demo. */
export async function demo(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(DEMO_HELP);
  const { flags } = parseFlags("demo", args, { "--data": (v) => v.length > 0 });
  const dir = flagValue(flags, "--data", "./tarn-data");
  const started_ms = performance.now();
  const tarn = await Tarn.open(dir);
  try {
    const db = await tarn.connect();
    console.log(`opened ${dir} in ${(performance.now() - started_ms).toFixed(0)} ms`);
    await db.exec("create table if not exists visits (id serial primary key, at timestamptz default now())");
    await db.query("insert into visits default values");
    const { rows } = await db.query<{ visits: number; first: Date }>(
      "select count(*)::int as visits, min(at) as first from visits",
    );
    console.log(`visits: ${rows[0].visits} since ${rows[0].first.toISOString()} (run me again: the count goes on)`);
    const version = await db.query<{ version: string }>("select version()");
    console.log(version.rows[0].version);
  } finally {
    await tarn.close();
  }
}
