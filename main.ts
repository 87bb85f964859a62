/**
 * The `tarn` command line: one binary, its role picked by the first argument.
 *
 * @module
 */
import denoConfig from "./deno.json" with { type: "json" };
import { Tarn } from "./mod.ts";

const HELP = `tarn ${denoConfig.version}: PostgreSQL with compute separated from storage

Usage:
  tarn demo [--data DIR]    an embedded session on DIR (default ./tarn-data) that shows Tarn working
  tarn --help               this text
  tarn --version            the version

Roles still to come: start (a Postgres server), safekeeper, pageserver, compute, branch, status.
`;

/** A command line mistake: printed with the usage hint, exit code 2. */
class UsageError extends Error {}

async function demo(args: string[]): Promise<void> {
  let dir = "./tarn-data";
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--data" && args[i + 1] !== undefined) dir = args[++i];
    else if (args[i] === "--help") return console.log("tarn demo [--data DIR]: an embedded session on DIR");
    else throw new UsageError(`tarn demo: unknown flag or missing value: ${args[i]}`);
  }
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

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || command === "--help" || command === "help") console.log(HELP);
    else if (command === "--version") console.log(`tarn ${denoConfig.version}`);
    else if (command === "demo") await demo(rest);
    else throw new UsageError(`tarn: unknown command "${command}"; see tarn --help`);
    return 0;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(error.message);
    return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
