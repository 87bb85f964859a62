/**
 * `tarn pageserver`: the page store as a network service for many tenants, serving its protocol and its HTTP
 * management API on one TCP port.
 *
 * @module
 */
import { PageserverServer } from "../pageserver/server.ts";
import { flagValue, parseDuration, parseFlags, parseListen, untilSignal, UsageError } from "./flags.ts";
import { makeLogger } from "./log.ts";
import { openRemoteStorage } from "../remote_storage/mod.ts";

/** Help text. */
export const PAGESERVER_HELP = `tarn pageserver: serve pages, branches and history to computes, for many tenants

  --data DIR          data directory (required; created if missing): tenants/<name>/timelines/<timeline>/
  --listen HOST:PORT  address for the pageserver protocol and HTTP (required; port 0 picks a free one)
  --remote URL        the lake: file:///path or s3://bucket/prefix (S3 reads AWS_ACCESS_KEY_ID,
                      AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL_S3). Layers and indexes are uploaded
                      as they are written; tenants it holds that --data does not are downloaded at start
  --cache-disk-mb N   with --remote: keep at most N MB of layer files on disk; layers of timelines idle for
                      --evict-after (default 30s) are deleted locally and downloaded again when used
  --evict-after D     how long a timeline goes unused before its layers may be evicted
  --gc-interval D     how often timelines are looked at for GC (default 10s): history older than a tenant's
                      window (PUT /v1/tenants/T/config {"pitr": "7d"}, the default) goes once it doubled the layers
  --log-format F      text (default) or json: one JSON object a line

The same port answers HTTP: GET /status, GET /metrics (Prometheus), and the management API under /v1/tenants
(tenants and their branches; see docs/pageserver_protocol.md). There is no authentication yet: listen beyond
loopback only on a network you trust. Stops cleanly on SIGINT or SIGTERM.`;

/** Serves until SIGINT or SIGTERM, then persists what is committed and stops. */
export async function pageserver(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(PAGESERVER_HELP);
  const { flags } = parseFlags("pageserver", args, {
    "--data": (v) => v.length > 0,
    "--listen": (v) => parseListen(v) !== undefined,
    "--log-format": (v) => v === "text" || v === "json",
    "--remote": (v) => /^(file|s3):\/\/./.test(v),
    "--gc-interval": (v) => (parseDuration(v) ?? 0) > 0,
    "--cache-disk-mb": (v) => /^\d{1,9}$/.test(v),
    "--evict-after": (v) => parseDuration(v) !== undefined,
  });
  for (const name of ["--data", "--listen"]) {
    if (flags[name] === undefined) throw new UsageError(`tarn pageserver: ${name} is required; see --help`);
  }
  const { hostname, port } = parseListen(flagValue(flags, "--listen", ""))!;
  const log = makeLogger(flagValue(flags, "--log-format", "text") === "json");
  const dir = flagValue(flags, "--data", "");
  const remote_url = flags["--remote"];
  const remote = typeof remote_url === "string" ? openRemoteStorage(remote_url, { log }) : undefined;
  const gc_interval_ms = parseDuration(flagValue(flags, "--gc-interval", "10s"));
  const cache_mb = flags["--cache-disk-mb"];
  if (cache_mb !== undefined && remote === undefined) {
    throw new UsageError("tarn pageserver: --cache-disk-mb needs --remote: without a lake the disk is the only copy");
  }
  const server = await PageserverServer.start({
    dir,
    hostname,
    port,
    log,
    remote,
    gc_interval_ms,
    cache_disk_bytes: cache_mb === undefined ? undefined : Number(cache_mb) * 1024 * 1024,
    evict_idle_ms: parseDuration(flagValue(flags, "--evict-after", "30s")),
  }).catch((error) => {
    if (!(error instanceof Deno.errors.AddrInUse || error instanceof Deno.errors.AddrNotAvailable)) throw error;
    throw new UsageError(`tarn pageserver: --listen ${flags["--listen"]}: ${error.message}; pick another address`);
  });
  log("listening", { host: hostname, port: server.port, data: dir });
  await untilSignal();
  log("stopping", {});
  await server.close();
  remote?.close();
  log("stopped", {});
}
