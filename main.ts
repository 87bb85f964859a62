/**
 * The `tarn` command line: one binary, its role picked by the first argument.
 *
 * @module
 */
import denoConfig from "./deno.json" with { type: "json" };
import { Tarn } from "./mod.ts";
import { TarnServer } from "./src/compute/server/server.ts";

const HELP = `tarn ${denoConfig.version}: PostgreSQL with compute separated from storage

Usage:
  tarn start [--data DIR] [--port N] [--host 127.0.0.1] [--log-format text|json]
                            serve PostgreSQL on 127.0.0.1:55432 with data in DIR (default ./tarn-data)
  tarn demo [--data DIR]    an embedded session on DIR (default ./tarn-data) that shows Tarn working
  tarn --help               this text
  tarn --version            the version

Roles still to come: safekeeper, pageserver, compute, branch, status.
`;

const START_HELP = `tarn start: serve PostgreSQL (wire protocol v3) on embedded storage

  --data DIR          data directory (default ./tarn-data; created if missing)
  --port N            TCP port (default 55432; 0 picks a free one)
  --host ADDR         address to listen on (default 127.0.0.1; loopback only until passwords land)
  --log-format F      text (default) or json: one JSON object a line

Connect with: psql "postgresql://postgres@127.0.0.1:55432/postgres"
A branch: use its name as the database, or options=--branch=NAME.
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

/** Flags as name -> value, each checked against `known`; a bad flag or missing value is a UsageError. */
function parseFlags(command: string, args: string[], known: Record<string, (value: string) => boolean>) {
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const name = args[i];
    const check = known[name];
    if (check === undefined) throw new UsageError(`tarn ${command}: unknown flag ${name}; see tarn ${command} --help`);
    const value = args[++i];
    if (value === undefined || !check(value)) {
      throw new UsageError(`tarn ${command}: ${name} needs a valid value, got ${value ?? "nothing"}`);
    }
    flags[name] = value;
  }
  return flags;
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);

async function start(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(START_HELP);
  const flags = parseFlags("start", args, {
    "--data": (v) => v.length > 0,
    "--port": (v) => /^\d+$/.test(v) && Number(v) < 65536,
    "--host": (v) => v.length > 0,
    "--log-format": (v) => v === "text" || v === "json",
  });
  const host = flags["--host"] ?? "127.0.0.1";
  if (!LOOPBACK.has(host)) {
    throw new UsageError(`tarn start: --host ${host} is beyond loopback, which needs a password: not supported yet`);
  }
  const json = flags["--log-format"] === "json";
  const log = (event: string, fields: Record<string, unknown>) => {
    const line = { time: new Date().toISOString(), event, ...fields };
    if (json) console.log(JSON.stringify(line));
    else console.log(`${line.time} ${event} ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(" ")}`);
  };
  const dir = flags["--data"] ?? "./tarn-data";
  const tarn = await Tarn.open(dir);
  const server = TarnServer.start(tarn, { hostname: host, port: Number(flags["--port"] ?? 55432), log });
  log("listening", { host, port: server.port, data: dir });
  const stop = async () => {
    log("stopping", {});
    await server.close();
    await tarn.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await new Promise(() => {});
}

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || command === "--help" || command === "help") console.log(HELP);
    else if (command === "--version") console.log(`tarn ${denoConfig.version}`);
    else if (command === "demo") await demo(rest);
    else if (command === "start") await start(rest);
    else throw new UsageError(`tarn: unknown command "${command}"; see tarn --help`);
    return 0;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(error.message);
    return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
