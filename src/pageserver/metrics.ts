/**
 * The pageserver's counters and its GetPage latency histogram, and their Prometheus text form.
 *
 * @module
 */
import { LatencyHistogram } from "../latency_histogram.ts";
import type { Tenant } from "./tenant.ts";

/** Counters shared by every connection. */
export class PageserverMetrics {
  /** Pages served. */
  pages = 0;
  readonly #latency = new LatencyHistogram();

  /** Records a GetPages request of `count` pages that took `elapsed_ms`. */
  getPages(count: number, elapsed_ms: number): void {
    this.pages += count;
    this.#latency.observe(elapsed_ms);
  }

  /** Prometheus text format 0.0.4. */
  async text(tenants: Tenant[], connections: number): Promise<string> {
    const lines = [
      "# HELP tarn_pageserver_connections Open protocol connections.",
      "# TYPE tarn_pageserver_connections gauge",
      `tarn_pageserver_connections ${connections}`,
      "# HELP tarn_pageserver_getpage_pages_total Pages served.",
      "# TYPE tarn_pageserver_getpage_pages_total counter",
      `tarn_pageserver_getpage_pages_total ${this.pages}`,
      ...this.#latency.lines("tarn_pageserver_getpage_seconds", "GetPages request latency inside the pageserver."),
    ];
    lines.push(
      "# HELP tarn_pageserver_ingest_bytes_total Page, event and WAL bytes received from computes.",
      "# TYPE tarn_pageserver_ingest_bytes_total counter",
    );
    for (const t of tenants) {
      lines.push(`tarn_pageserver_ingest_bytes_total{tenant="${t.name}"} ${t.counters.ingest_bytes}`);
    }
    lines.push(
      "# HELP tarn_pageserver_layers Layer files per timeline.",
      "# TYPE tarn_pageserver_layers gauge",
      "# HELP tarn_pageserver_disk_bytes Bytes on disk per timeline (layers and WAL).",
      "# TYPE tarn_pageserver_disk_bytes gauge",
    );
    for (const t of tenants) {
      for (const branch of t.manager.list()) {
        const labels = `{tenant="${t.name}",timeline="${branch.timeline_id}",branch="${branch.name}"}`;
        const storage = t.timelines.opened(branch.timeline_id);
        if (storage !== undefined) lines.push(`tarn_pageserver_layers${labels} ${storage.pages.layer_count}`);
        lines.push(`tarn_pageserver_disk_bytes${labels} ${await t.timelines.diskBytes(branch.timeline_id)}`);
      }
    }
    return lines.join("\n") + "\n";
  }
}
