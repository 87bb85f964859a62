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
      "# HELP tarn_pageserver_remote_bytes Bytes of the layers the timeline's index in the lake lists.",
      "# TYPE tarn_pageserver_remote_bytes gauge",
      "# HELP tarn_pageserver_remote_layers Layers the timeline's index in the lake lists.",
      "# TYPE tarn_pageserver_remote_layers gauge",
      "# HELP tarn_pageserver_upload_lag_bytes WAL bytes between the durable LSN here and the one the lake holds.",
      "# TYPE tarn_pageserver_upload_lag_bytes gauge",
    );
    for (const t of tenants) {
      for (const branch of t.manager.list()) {
        const labels = `{tenant="${t.name}",timeline="${branch.timeline_id}",branch="${branch.name}"}`;
        const r = await t.storageReport(branch.timeline_id);
        if (r.layers !== undefined) lines.push(`tarn_pageserver_layers${labels} ${r.layers}`);
        lines.push(`tarn_pageserver_disk_bytes${labels} ${r.local_bytes}`);
        if (r.remote_bytes !== undefined) lines.push(`tarn_pageserver_remote_bytes${labels} ${r.remote_bytes}`);
        if (r.remote_layers !== undefined) lines.push(`tarn_pageserver_remote_layers${labels} ${r.remote_layers}`);
        if (r.upload_lag_bytes !== undefined) {
          lines.push(`tarn_pageserver_upload_lag_bytes${labels} ${r.upload_lag_bytes}`);
        }
      }
    }
    return lines.join("\n") + "\n";
  }
}
