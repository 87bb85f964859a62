/**
 * `tarn compute`: a stateless compute. Postgres serves the wire protocol on pages read from a pageserver and WAL
 * made durable by a quorum of safekeepers; it keeps nothing of its own, so it can die anywhere and another one,
 * on another node, serves the same data.
 *
 * @module
 */
import { EngineHost } from "../server/engine_host.ts";
import { flagValue, parseDuration, parseFlags, UsageError } from "./flags.ts";
import { makeLogger } from "./log.ts";
import { readPassword, serveUntilSignal } from "./start.ts";

/** Help text. */
export const COMPUTE_HELP = `tarn compute: serve PostgreSQL on a tenant of a pageserver, keeping no state of its own

  --pageserver HOST:PORT  the pageserver (tarn pageserver) holding the tenant (required)
  --safekeepers LIST      HOST:PORT,HOST:PORT,...: the safekeepers that make the WAL durable (required)
  --tenant NAME           the tenant (required; the first compute of a new tenant creates it)
  --branch NAME           the branch of the "postgres" database (default main); others by their name as database
  --port N                TCP port (default 55432; 0 picks a free one)
  --host ADDR             address to listen on (default 127.0.0.1; beyond loopback needs --password-file)
  --password-file F       require the password in F (its first line) from every client: SCRAM-SHA-256
  --cache-mb N            each branch's page cache (default 128)
  --suspend-after D       stop a branch's Postgres after D with no connection (30s, 5m, 1h; 0: never; default 5m);
                          the port stays open and the next connection starts it again
  --replica               serve read replicas only: read-only sessions on each branch's newest committed state,
                          never more than --max-lag old (docs/replicas.md); as many as wanted beside the primary
  --max-lag D             a replica's new transaction sees a state at most D old (default 1s)
  --log-format F          text (default) or json

A newer compute on the same branch takes it over: this one's writes are refused from then on.
GET /status and GET /metrics answer on the same port. SIGINT or SIGTERM stops it cleanly.`;

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);
const ADDRESS = (v: string) => /^.+:\d{1,5}$/.test(v);

/** Serves until SIGINT or SIGTERM, then stops cleanly. */
export async function compute(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(COMPUTE_HELP);
  const { flags } = parseFlags("compute", args, {
    "--pageserver": ADDRESS,
    "--safekeepers": (v) => v.split(",").every(ADDRESS),
    "--tenant": (v) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(v),
    "--branch": (v) => v.length > 0,
    "--port": (v) => /^\d+$/.test(v) && Number(v) < 65536,
    "--host": (v) => v.length > 0,
    "--password-file": (v) => v.length > 0,
    "--cache-mb": (v) => /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 65536,
    "--suspend-after": (v) => parseDuration(v) !== undefined,
    "--log-format": (v) => v === "text" || v === "json",
    "--replica": "boolean",
    "--max-lag": (v) => (parseDuration(v) ?? 0) > 0,
  });
  for (const name of ["--pageserver", "--safekeepers", "--tenant"]) {
    if (flags[name] === undefined) throw new UsageError(`tarn compute: ${name} is required; see --help`);
  }
  const host = flagValue(flags, "--host", "127.0.0.1");
  const password = await readPassword(flags["--password-file"]);
  if (!LOOPBACK.has(host) && password === undefined) {
    throw new UsageError(`tarn compute: --host ${host} is beyond loopback: give a password with --password-file`);
  }
  const log = makeLogger(flagValue(flags, "--log-format", "text") === "json");
  const engine = await EngineHost.open({
    compute_idle_ms: parseDuration(flagValue(flags, "--suspend-after", "5m"))!,
    page_cache_pages: Number(flagValue(flags, "--cache-mb", "128")) * 128,
    safekeepers: flagValue(flags, "--safekeepers", "").split(","),
    remote: { pageserver: flagValue(flags, "--pageserver", ""), tenant: flagValue(flags, "--tenant", "") },
  }, log);
  const port = Number(flagValue(flags, "--port", "55432"));
  const default_branch = flagValue(flags, "--branch", "main");
  const replica_max_lag_ms = parseDuration(flagValue(flags, "--max-lag", "1s"))!;
  if (flags["--replica"] !== undefined) {
    const options = { hostname: host, port, log, password, default_branch, replica_only: true, replica_max_lag_ms };
    return await serveUntilSignal(engine, options);
  }
  // Postgres starts while the listener comes up, so that the first client does not wait for it; a failure here is
  // logged, and the first connection tries again and reports it.
  engine.attachCompute(default_branch).then(({ release }) => release()).catch((error) =>
    log("compute_start_failed", { branch: default_branch, error: String(error) })
  );
  await serveUntilSignal(engine, { hostname: host, port, log, password, default_branch, replica_max_lag_ms });
}
