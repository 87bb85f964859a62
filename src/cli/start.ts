/**
 * `tarn start`: all roles in one process on embedded storage, serving the PostgreSQL wire protocol.
 *
 * @module
 */
import { type EngineFailedError, EngineHost } from "../server/engine_host.ts";
import type { AdminRequest } from "../branch_admin.ts";
import { type ServerOptions, TarnServer } from "../server/server.ts";
import type { Logger } from "../logger.ts";
import { removeServerFile, writeServerFile } from "./admin_client.ts";
import { flagValue, parseDuration, parseFlags, UsageError } from "./flags.ts";
import { makeLogger } from "./log.ts";

/** Help text. */
export const START_HELP = `tarn start: serve PostgreSQL (wire protocol v3) on embedded storage

  --data DIR          data directory (default ./tarn-data; created if missing)
  --port N            TCP port (default 55432; 0 picks a free one)
  --host ADDR         address to listen on (default 127.0.0.1; beyond loopback needs --password-file)
  --password-file F   require the password in F (its first line) from every client: SCRAM-SHA-256
  --page-cache-mb N   each branch compute's page cache (default 128: a server's working set is larger), and
                      half as much again for decompressed storage blocks
  --safekeepers LIST  HOST:PORT,HOST:PORT,...: a commit returns once a majority of these safekeepers
                      (tarn safekeeper) has fsynced its WAL; without it, the WAL is fsynced locally
  --remote URL        the lake: file:///path or s3://bucket/prefix (AWS_* environment for S3); layers, indexes
                      and WAL are uploaded as written, and an empty --data is filled from it at start
  --suspend-after D   stop a branch's compute (not main's) after D with no connection (30s, 5m; 0: at once;
                      default 60s); its next connection starts it again
  --log-format F      text (default) or json: one JSON object a line

Connect with: psql "postgresql://postgres@127.0.0.1:55432/postgres"
A branch: use its name as the database, or options=--branch=NAME; the past, read only: options=--at=LSN|TIME.
A branch's compute starts on its first connection and stops 60 s after its last one.
SIGINT or SIGTERM stops it cleanly; a second one exits at once (acknowledged commits are durable already).`;

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);

/** Serves until SIGINT or SIGTERM, then shuts down cleanly. */
export async function start(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(START_HELP);
  const { flags } = parseFlags("start", args, {
    "--data": (v) => v.length > 0,
    "--port": (v) => /^\d+$/.test(v) && Number(v) < 65536,
    "--host": (v) => v.length > 0,
    "--log-format": (v) => v === "text" || v === "json",
    "--password-file": (v) => v.length > 0,
    "--page-cache-mb": (v) => /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 65536,
    "--safekeepers": (v) => v.split(",").every((address) => /^.+:\d{1,5}$/.test(address)),
    "--suspend-after": (v) => parseDuration(v) !== undefined,
    "--remote": (v) => /^(file|s3):\/\/./.test(v),
  });
  const host = flagValue(flags, "--host", "127.0.0.1");
  const password = await readPassword(flags["--password-file"]);
  if (!LOOPBACK.has(host) && password === undefined) {
    throw new UsageError(`tarn start: --host ${host} is beyond loopback: give a password with --password-file`);
  }
  const log = makeLogger(flagValue(flags, "--log-format", "text") === "json");
  const dir = flagValue(flags, "--data", "./tarn-data");
  const page_cache_mb = Number(flagValue(flags, "--page-cache-mb", "128"));
  const page_cache_pages = page_cache_mb * 128; // 8 KiB pages
  // Half as much again for decompressed storage blocks: first reads of a page land in a block read for a neighbour
  // (pgbench -S at scale 10: 2.2x the reads per second of a 4 MiB block cache).
  const block_cache_bytes = page_cache_mb * 512 * 1024;
  // The engine runs in a Worker: this thread keeps serving sockets (and CancelRequests) while a statement runs.
  const safekeepers = typeof flags["--safekeepers"] === "string" ? flags["--safekeepers"].split(",") : undefined;
  const engine = await EngineHost.open(
    {
      dir,
      compute_idle_ms: parseDuration(flagValue(flags, "--suspend-after", "60s"))!,
      page_cache_pages,
      block_cache_bytes,
      safekeepers,
      lake: typeof flags["--remote"] === "string" ? flags["--remote"] : undefined,
    },
    log,
  );
  const port = Number(flagValue(flags, "--port", "55432"));
  await serveUntilSignal(engine, { hostname: host, port, log, password }, dir);
}

/**
 * Serves the wire protocol on `engine` until SIGINT or SIGTERM (or the engine fails), then stops cleanly. With
 * `dir`, a `server.json` there tells `tarn branch` where to reach the server.
 */
export async function serveUntilSignal(
  engine: EngineHost,
  options: Omit<ServerOptions, "admin"> & { hostname: string; log: Logger },
  dir?: string,
): Promise<void> {
  const { log } = options;
  const admin = (request: AdminRequest) => engine.admin(request);
  const server = TarnServer.start(engine, { ...options, admin, branch_stats: () => engine.stats() });
  if (dir !== undefined) await writeServerFile(dir, options.hostname, server.port);
  log("listening", { host: options.hostname, port: server.port, data: dir });
  let signals = 0;
  const crashed = await new Promise<EngineFailedError | undefined>((resolve) => {
    const stop = () => {
      // A clean stop waits for the WAL to be durable, which without a majority of safekeepers is forever: a
      // second signal exits at once (every acknowledged commit is durable already).
      if (++signals > 1) {
        log("stopped_without_waiting", {});
        Deno.exit(130);
      }
      resolve(undefined);
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    engine.crashed.then(resolve);
  });
  if (crashed !== undefined) {
    log("engine_failed", { message: crashed.message });
    await server.close();
    throw crashed;
  }
  log("stopping", {});
  if (dir !== undefined) await removeServerFile(dir);
  await server.close();
  await engine.close();
}

/** The password in `file` (its first line), for SCRAM; undefined when no file is given. */
export async function readPassword(file: string | true | undefined): Promise<string | undefined> {
  if (typeof file !== "string") return undefined;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    throw new UsageError(`tarn start: --password-file ${file} cannot be read (${(error as Error).message})`);
  }
  const password = text.split("\n")[0].trimEnd();
  if (password.length === 0) throw new UsageError(`tarn start: --password-file ${file} holds no password`);
  return password;
}
