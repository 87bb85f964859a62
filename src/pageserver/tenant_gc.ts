/**
 * GC for a pageserver timeline: where its history window starts (the last commit at or before now minus the
 * tenant's `pitr`, found in its WAL), what must stay readable below it (its children's branch points), and whether
 * enough has piled up to be worth a rewrite. The work itself is `PageStore.gc`.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";
import { lsnAtTime } from "../replication/branch_point.ts";
import type { TimelineStorage } from "../timelines.ts";

/** Below this many bytes of layers a timeline is not worth collecting (unless asked to). */
const MIN_GC_BYTES = 1024 * 1024;

/** What one timeline's GC did. */
export type GcOutcome = { horizon_lsn: Lsn; bytes_before: number; bytes_after: number };

/** Per-timeline memory between runs: where the WAL scan for the horizon goes on, and the size after the last run. */
export type GcMemory = { scan_from_lsn: Lsn; horizon_lsn: Lsn; bytes_after: number };

/**
 * Collects the timeline's garbage when its layers have at least doubled since the last run (or `force`). Undefined
 * when nothing was done: no commit is old enough yet, or it is not worth it.
 */
export async function collectTimeline(
  storage: TimelineStorage,
  keep_lsns: Lsn[],
  pitr_ms: number,
  now_ms: number,
  memory: GcMemory,
  force: boolean,
): Promise<GcOutcome | undefined> {
  const { pages, wal } = storage;
  const end_lsn = pages.disk_consistent_lsn;
  if (end_lsn <= pages.gc_cutoff_lsn) return undefined;
  const from = memory.scan_from_lsn > pages.gc_cutoff_lsn ? memory.scan_from_lsn : pages.gc_cutoff_lsn;
  const found = lsnAtTime(wal, new Date(now_ms - pitr_ms), end_lsn, from);
  if (found !== undefined && found > memory.horizon_lsn) {
    memory.horizon_lsn = found;
    // The next scan starts from the page of the last commit found: the window only moves forward.
    memory.scan_from_lsn = found;
  }
  const horizon_lsn = memory.horizon_lsn < end_lsn ? memory.horizon_lsn : end_lsn;
  if (horizon_lsn <= pages.gc_cutoff_lsn) return undefined;
  const bytes = pages.disk_bytes;
  if (!force && (bytes < MIN_GC_BYTES || bytes < 2 * memory.bytes_after)) return undefined;
  const { bytes_before, bytes_after } = await pages.gc(horizon_lsn, keep_lsns);
  memory.bytes_after = bytes_after;
  return { horizon_lsn, bytes_before, bytes_after };
}
