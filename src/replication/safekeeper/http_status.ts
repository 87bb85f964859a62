/**
 * The safekeeper's HTTP answers, served on its protocol port: `GET /status` (JSON) and `GET /metrics` (Prometheus
 * text format 0.0.4). Each request gets one HTTP/1.1 response with `Connection: close`.
 *
 * @module
 */
import { formatLsn } from "../../lsn.ts";
import type { FailedTimeline, TimelineStatus } from "./timeline_registry.ts";

/** What the HTTP answers describe, taken at the moment of the request. */
export interface ServerSnapshot {
  /** The safekeeper's node id. */
  readonly node_id: number;
  /** Open protocol and HTTP connections. */
  readonly connections: number;
  /** The healthy timelines. */
  readonly timelines: readonly TimelineStatus[];
  /** The timelines that stopped after a storage failure. */
  readonly failed: readonly FailedTimeline[];
}

/** The most bytes of request line and headers read before answering 431. */
export const MAX_REQUEST_HEAD_BYTES = 8192;

/** Whether `head` (the bytes received so far) holds a whole request head. */
export function isRequestHeadComplete(head: string): boolean {
  return head.includes("\r\n\r\n") || head.includes("\n\n");
}

/** The HTTP response (head and body) for a request head beginning `GET `. */
export function httpResponse(head: string, snapshot: ServerSnapshot): Uint8Array {
  if (head.length > MAX_REQUEST_HEAD_BYTES) return response(431, "text/plain", "request head too large\n");
  const target = /^GET (\S+) HTTP\/1\.[01]\r?\n/.exec(head)?.[1];
  if (target === undefined) return response(400, "text/plain", "expected GET <path> HTTP/1.1\n");
  const path = target.split("?")[0];
  if (path === "/status") return response(200, "application/json", JSON.stringify(statusJson(snapshot)) + "\n");
  if (path === "/metrics") return response(200, "text/plain; version=0.0.4", metricsText(snapshot));
  return response(404, "text/plain", `no ${path} here: try /status or /metrics\n`);
}

/** `/status`: LSNs as PostgreSQL prints them; `lag_bytes` is flush minus commit (negative: behind the commit). */
export function statusJson(snapshot: ServerSnapshot): Record<string, unknown> {
  return {
    node_id: snapshot.node_id,
    connections: snapshot.connections,
    timelines: snapshot.timelines.map(({ tenant_id, timeline_id, status, offloaded_lsn }) => ({
      tenant_id,
      timeline_id,
      term: Number(status.term),
      flush_lsn: formatLsn(status.flush_lsn),
      commit_lsn: formatLsn(status.commit_lsn),
      lag_bytes: Number(status.flush_lsn - status.commit_lsn),
      last_log_term: Number(status.last_log_term),
      wal_start_lsn: formatLsn(status.wal_start_lsn),
      offloaded_lsn: offloaded_lsn === undefined ? undefined : formatLsn(offloaded_lsn),
    })),
    failed: snapshot.failed,
  };
}

const METRICS: readonly { name: string; help: string; value: (s: TimelineStatus) => bigint }[] = [
  { name: "tarn_safekeeper_term", help: "The highest term seen.", value: (s) => s.status.term },
  { name: "tarn_safekeeper_flush_lsn_bytes", help: "The end of the durable WAL.", value: (s) => s.status.flush_lsn },
  {
    name: "tarn_safekeeper_commit_lsn_bytes",
    help: "The commit LSN last heard of from the proposer.",
    value: (s) => s.status.commit_lsn,
  },
  {
    name: "tarn_safekeeper_lag_bytes",
    help: "Flush LSN minus commit LSN: WAL held but not yet known committed (negative: behind the commit LSN).",
    value: (s) => s.status.flush_lsn - s.status.commit_lsn,
  },
];

/** `/metrics` in Prometheus text format 0.0.4: one gauge per timeline and figure, labelled by tenant and timeline. */
export function metricsText(snapshot: ServerSnapshot): string {
  const lines: string[] = [];
  for (const metric of METRICS) {
    lines.push(`# HELP ${metric.name} ${metric.help}`, `# TYPE ${metric.name} gauge`);
    for (const timeline of snapshot.timelines) {
      lines.push(`${metric.name}${labels(timeline)} ${metric.value(timeline)}`);
    }
  }
  lines.push(
    "# HELP tarn_safekeeper_timelines_failed Timelines stopped after a storage failure (restart to recover).",
    "# TYPE tarn_safekeeper_timelines_failed gauge",
    `tarn_safekeeper_timelines_failed ${snapshot.failed.length}`,
    "# HELP tarn_safekeeper_connections Open connections (protocol and HTTP).",
    "# TYPE tarn_safekeeper_connections gauge",
    `tarn_safekeeper_connections ${snapshot.connections}`,
  );
  return lines.join("\n") + "\n";
}

function labels(timeline: TimelineStatus): string {
  // Ids are [A-Za-z0-9_-] (ID_PATTERN): nothing in them needs escaping in a label value.
  return `{tenant_id="${timeline.tenant_id}",timeline_id="${timeline.timeline_id}"}`;
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  431: "Request Header Fields Too Large",
};

function response(status: number, content_type: string, body: string): Uint8Array {
  const body_bytes = new TextEncoder().encode(body);
  const head = `HTTP/1.1 ${status} ${REASONS[status]}\r\n` +
    `Content-Type: ${content_type}\r\nContent-Length: ${body_bytes.length}\r\nConnection: close\r\n\r\n`;
  const head_bytes = new TextEncoder().encode(head);
  const out = new Uint8Array(head_bytes.length + body_bytes.length);
  out.set(head_bytes);
  out.set(body_bytes, head_bytes.length);
  return out;
}
