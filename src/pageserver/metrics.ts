/**
 * The pageserver's counters and its GetPage latency histogram, and their Prometheus text form.
 *
 * @module
 */
import type { Tenant } from "./tenant.ts";

/** Upper bounds of the GetPage latency buckets, in seconds (Prometheus convention). */
const BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1];

/** Counters shared by every connection. */
export class PageserverMetrics {
  /** Pages served. */
  pages = 0;
  readonly #bucket_counts = new Array<number>(BUCKETS_S.length).fill(0);
  #requests = 0;
  #sum_s = 0;

  /** Records a GetPages request of `count` pages that took `elapsed_ms`. */
  getPages(count: number, elapsed_ms: number): void {
    this.pages += count;
    this.#requests++;
    this.#sum_s += elapsed_ms / 1000;
    const i = BUCKETS_S.findIndex((le) => elapsed_ms / 1000 <= le);
    if (i >= 0) this.#bucket_counts[i]++;
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
      "# HELP tarn_pageserver_getpage_seconds GetPages request latency inside the pageserver.",
      "# TYPE tarn_pageserver_getpage_seconds histogram",
    ];
    let cumulative = 0;
    BUCKETS_S.forEach((le, i) => {
      cumulative += this.#bucket_counts[i];
      lines.push(`tarn_pageserver_getpage_seconds_bucket{le="${le}"} ${cumulative}`);
    });
    lines.push(
      `tarn_pageserver_getpage_seconds_bucket{le="+Inf"} ${this.#requests}`,
      `tarn_pageserver_getpage_seconds_sum ${this.#sum_s}`,
      `tarn_pageserver_getpage_seconds_count ${this.#requests}`,
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
