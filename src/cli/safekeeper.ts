/**
 * `tarn safekeeper`: the WAL safekeeper role, serving its protocol and HTTP status on one TCP port.
 *
 * @module
 */
import { openRemoteStorage } from "../remote_storage/mod.ts";
import { SafekeeperServer } from "../replication/safekeeper/server.ts";
import { flagValue, parseFlags, parseListen, untilSignal, UsageError } from "./flags.ts";
import { makeLogger } from "./log.ts";

/** Help text. */
export const SAFEKEEPER_HELP = `tarn safekeeper: keep WAL durable for computes, as one member of a quorum

  --data DIR          data directory (required; created if missing): tenants/<tenant>/timelines/<timeline>/
  --listen HOST:PORT  address for the safekeeper protocol and HTTP (required; port 0 picks a free one;
                      an IPv6 host goes in brackets: [::1]:7676)
  --id N              this safekeeper's node id, 0 to 4294967295 (required; unique in the quorum)
  --remote URL        offload sealed committed WAL segments to file:///path or s3://bucket/prefix (S3 reads the
                      AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL_S3 environment)
  --log-format F      text (default) or json: one JSON object a line

The same port answers HTTP: GET /status (JSON: term, flush LSN, commit LSN, lag per timeline) and GET /metrics
(Prometheus). There is no authentication yet: any host that reaches the port can write WAL and read it, so listen
beyond loopback only on a network you trust.
Stops cleanly on SIGINT or SIGTERM.`;

/** Serves until SIGINT or SIGTERM, then shuts down cleanly. */
export async function safekeeper(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(SAFEKEEPER_HELP);
  const { flags } = parseFlags("safekeeper", args, {
    "--data": (v) => v.length > 0,
    "--listen": (v) => parseListen(v) !== undefined,
    "--id": (v) => /^\d{1,10}$/.test(v) && Number(v) < 2 ** 32,
    "--log-format": (v) => v === "text" || v === "json",
    "--remote": (v) => /^(file|s3):\/\/./.test(v),
  });
  for (const name of ["--data", "--listen", "--id"]) {
    if (flags[name] === undefined) throw new UsageError(`tarn safekeeper: ${name} is required; see --help`);
  }
  const { hostname, port } = parseListen(flagValue(flags, "--listen", ""))!;
  const log = makeLogger(flagValue(flags, "--log-format", "text") === "json");
  const dir = flagValue(flags, "--data", "");
  const node_id = Number(flagValue(flags, "--id", ""));
  const remote_url = flags["--remote"];
  const remote = typeof remote_url === "string" ? openRemoteStorage(remote_url, { log }) : undefined;
  const server = await SafekeeperServer.start({ dir, hostname, port, node_id, log, remote }).catch((error) => {
    if (!(error instanceof Deno.errors.AddrInUse || error instanceof Deno.errors.AddrNotAvailable)) throw error;
    throw new UsageError(`tarn safekeeper: --listen ${flags["--listen"]}: ${error.message}; pick another address`);
  });
  log("listening", { host: hostname, port: server.port, node_id, data: dir });
  await untilSignal();
  log("stopping", {});
  await server.close();
  remote?.close();
  log("stopped", {});
}
