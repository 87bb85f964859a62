/**
 * `tarn status --safekeepers LIST`: each safekeeper's term, flush LSN, commit LSN and lag per timeline, from its
 * HTTP `/status` endpoint.
 *
 * @module
 */
import { parseSafekeeperAddress } from "../replication/safekeeper_client.ts";

/** One timeline on one safekeeper, as `/status` reports it. */
type TimelineStatus = {
  tenant_id: string;
  timeline_id: string;
  term: number;
  flush_lsn: string;
  commit_lsn: string;
  lag_bytes: number;
};

const STATUS_TIMEOUT_MS = 5000;

/** Prints the status of every safekeeper in `list` (`HOST:PORT,...`); an unreachable one is reported, not fatal. */
export async function safekeeperStatus(list: string, json: boolean): Promise<void> {
  const addresses = list.split(",").map(parseSafekeeperAddress);
  const reports = await Promise.all(addresses.map(async ({ hostname, port }) => {
    const address = `${hostname}:${port}`;
    try {
      const response = await fetch(`http://${address}/status`, { signal: AbortSignal.timeout(STATUS_TIMEOUT_MS) });
      const status = await response.json() as { node_id: number; timelines: TimelineStatus[] };
      return { address, node_id: status.node_id, timelines: status.timelines };
    } catch (error) {
      return { address, error: `unreachable: ${(error as Error).message}` };
    }
  }));
  if (json) return console.log(JSON.stringify({ safekeepers: reports }));
  for (const report of reports) {
    if ("error" in report) {
      console.log(`safekeeper ${report.address}: ${report.error}`);
      continue;
    }
    console.log(`safekeeper ${report.address} (id ${report.node_id}): ${report.timelines.length} timeline(s)`);
    for (const t of report.timelines) {
      console.log(
        `  ${t.tenant_id}/${t.timeline_id} term ${t.term} flush ${t.flush_lsn} commit ${t.commit_lsn} ` +
          `lag ${t.lag_bytes} bytes`,
      );
    }
  }
}
