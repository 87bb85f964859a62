/**
 * What a server's `GET /metrics` and `GET /status` show: its connections, sessions and statements, and, for a
 * compute on a pageserver, each branch's page cache, GetPage requests, WAL commits and engine restarts.
 *
 * @module
 */
import { LatencyHistogram } from "../latency_histogram.ts";
import type { BranchStats } from "../compute/remote/remote_tenant.ts";

/** The server's counters. */
export class ServerMetrics {
  /** Client connections accepted. */
  connections_total = 0;
  /** Times Postgres failed under a statement. */
  engine_failures_total = 0;
  /** Sessions ended because their branch's engine failed under another. */
  sessions_terminated_total = 0;
  /** Statements (a simple query, or an extended-protocol batch up to its Sync), from sending to the reply. */
  readonly statements = new LatencyHistogram();

  /** Prometheus text format 0.0.4. */
  text(sessions: number, branches: BranchStats[]): string {
    const lines = [
      ...counter("tarn_connections_total", "Client connections accepted.", this.connections_total),
      "# HELP tarn_sessions Client sessions open now.",
      "# TYPE tarn_sessions gauge",
      `tarn_sessions ${sessions}`,
      ...this.statements.lines("tarn_statement_seconds", "Statement latency, from the client's message to the reply."),
      ...counter(
        "tarn_engine_failures_total",
        "Times Postgres failed under a statement and was restarted from storage.",
        this.engine_failures_total,
      ),
      ...counter(
        "tarn_sessions_terminated_total",
        "Sessions ended because their branch's engine failed under another.",
        this.sessions_terminated_total,
      ),
    ];
    if (branches.length > 0) lines.push(...branchLines(branches));
    return lines.join("\n") + "\n";
  }
}

function counter(name: string, help: string, value: number): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${value}`];
}

const BRANCH_COUNTERS: [string, string, (b: BranchStats) => number][] = [
  ["tarn_compute_page_cache_hits_total", "Page cache hits since Postgres last started.", (b) => b.page_cache.hits],
  [
    "tarn_compute_page_cache_misses_total",
    "Page cache misses since Postgres last started.",
    (b) => b.page_cache.misses,
  ],
  ["tarn_compute_getpage_requests_total", "GetPages requests sent to the pageserver.", (b) => b.getpage.requests],
  ["tarn_compute_getpage_pages_total", "Pages those requests carried.", (b) => b.getpage.pages],
  ["tarn_compute_getpage_seconds_total", "Time spent waiting for them.", (b) => b.getpage.request_ms / 1000],
  ["tarn_compute_prefetch_hits_total", "Read-ahead pages that were then read.", (b) => b.getpage.prefetched_hits],
  ["tarn_compute_wal_commits_total", "WAL flushes that waited for a majority of safekeepers.", (b) => b.wal.flushes],
  ["tarn_compute_wal_commit_seconds_total", "Time they waited: the WAL commit lag.", (b) => b.wal.flush_wait_ms / 1000],
  ["tarn_compute_engine_restarts_total", "Times the branch's Postgres restarted from storage.", (b) => b.restarts],
];

function branchLines(branches: BranchStats[]): string[] {
  const lines: string[] = [];
  for (const [name, help, value] of BRANCH_COUNTERS) {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
    for (const b of branches) lines.push(`${name}{branch="${b.branch}",timeline="${b.timeline_id}"} ${value(b)}`);
  }
  return lines;
}
