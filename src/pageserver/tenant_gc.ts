/**
 * GC for a pageserver timeline: where its history window starts (the last commit at or before now minus the
 * tenant's `pitr`, found in its WAL), what must stay readable below it (its children's branch points), and whether
 * enough has piled up to be worth a rewrite. The work itself is `PageStore.gc`.
 *
 * @module
 */
import { formatLsn, type Lsn, LSN_MAX } from "../lsn.ts";
import type { Logger } from "../logger.ts";
import type { BranchCatalog } from "../storage/branch_catalog.ts";
import type { TenantFile } from "../tenant_file.ts";
import type { Timelines } from "../timelines.ts";
import type { TenantUploader } from "./tenant_uploader.ts";
import { parseControlFile } from "../compute/pg_control.ts";
import { scanCommits } from "../replication/branch_point.ts";
import type { TimelineStorage } from "../timelines.ts";

/** Below this many bytes of layers a timeline is not worth collecting (unless asked to). */
const MIN_GC_BYTES = 1024 * 1024;
/** WAL records one GC run decodes at most while it looks for its horizon. */
const MAX_SCAN_RECORDS = 50_000;
/** The same for a GC run asked for through the API (about 1 GB of WAL). */
const FORCED_SCAN_RECORDS = 20_000_000;
/** A window that moved past less WAL than this frees too little to be worth a GC (unless the layers doubled). */
const MIN_GC_WAL_BYTES = 8 * 1024 * 1024;

/** What one timeline's GC did. */
export type GcOutcome = { horizon_lsn: Lsn; bytes_before: number; bytes_after: number; wal_needed_lsn: Lsn };

/** Per-timeline memory between runs: where the WAL scan for the horizon goes on, and the size after the last run. */
export type GcMemory = { scan_from_lsn: Lsn; horizon_lsn: Lsn; bytes_after: number };

/**
 * Collects the timeline's garbage when it is worth it (or `force`), then lets its WAL go below what is still needed.
 * Undefined when nothing was done: no commit is old enough yet, or it is not worth it.
 */
export async function collectTimeline(
  storage: TimelineStorage,
  children: Child[],
  leased_lsns: Lsn[],
  pitr_ms: number,
  now_ms: number,
  memory: GcMemory,
  force: boolean,
): Promise<GcOutcome | undefined> {
  const { pages, wal } = storage;
  const end_lsn = pages.disk_consistent_lsn;
  if (end_lsn <= pages.gc_cutoff_lsn) return undefined;
  // The scan goes on where the last one stopped (the window only moves forward), a bounded stretch per run: a long
  // stretch without a commit (a bulk load) takes several runs, never one long block of the event loop.
  const from = memory.scan_from_lsn > pages.gc_cutoff_lsn
    ? { boundary: memory.scan_from_lsn }
    : { page_of: pages.gc_cutoff_lsn };
  const budget = force ? FORCED_SCAN_RECORDS : MAX_SCAN_RECORDS; // asked for now: find the horizon now
  const scan = scanCommits(wal, new Date(now_ms - pitr_ms), end_lsn, from, budget);
  memory.scan_from_lsn = scan.resume_lsn;
  if (scan.found_lsn !== undefined && scan.found_lsn > memory.horizon_lsn) memory.horizon_lsn = scan.found_lsn;
  const horizon_lsn = memory.horizon_lsn < end_lsn ? memory.horizon_lsn : end_lsn;
  if (horizon_lsn <= pages.gc_cutoff_lsn) return undefined;
  // Worth a rewrite of the layers once they doubled, or once the window moved past as much WAL as they hold (which
  // it frees): either way a GC costs at most about what was written since the last one.
  const bytes = pages.disk_bytes;
  const moved = Number(horizon_lsn - pages.gc_cutoff_lsn);
  const worth = bytes >= MIN_GC_BYTES && bytes >= 2 * memory.bytes_after ||
    moved >= MIN_GC_WAL_BYTES && moved >= memory.bytes_after;
  if (!force && !worth) return undefined;
  const keep_lsns = [...children.map((c) => c.branch_lsn), ...leased_lsns];
  const { bytes_before, bytes_after } = await pages.gc(horizon_lsn, keep_lsns);
  memory.bytes_after = bytes_after;
  const wal_needed_lsn = await walNeededFrom(storage, children, leased_lsns);
  wal.own.retainFrom(wal_needed_lsn);
  return { horizon_lsn, bytes_before, bytes_after, wal_needed_lsn };
}

/** A child branch of a timeline: where it branched, and its storage. */
export type Child = { branch_lsn: Lsn; storage: TimelineStorage };

/** The redo point of the checkpoint `pages` sees at `lsn`; undefined when there is no control file. */
function redoAt(pages: TimelineStorage["pages"], lsn: Lsn): Lsn | undefined {
  const page = pages.getPage("global/pg_control", 0, lsn);
  return page === undefined ? undefined : parseControlFile(page).redo_lsn;
}

/**
 * The oldest WAL the timeline still needs: from the redo point of the checkpoint the GC cutoff sees (a branch made
 * anywhere in the window replays from its own redo point, no earlier than that), of its newest checkpoint (a
 * compute starting replays from there), of leased points, and what its children replay of it. A child that
 * never wrote gets its share copied into its own log (from the start of the segment of the redo point its branch
 * point sees: recovery reads that segment's first page), so that this timeline need not keep it.
 */
export async function walNeededFrom(storage: TimelineStorage, children: Child[], leased_lsns: Lsn[]): Promise<Lsn> {
  const { pages, wal } = storage;
  let needed = pages.gc_cutoff_lsn;
  // A compute starting at the head, a branch made anywhere in the window (its first compute replays from the redo
  // point it sees, at the earliest the one at the cutoff), or a read-only compute at a leased LSN.
  for (const lsn of [LSN_MAX, pages.gc_cutoff_lsn, ...leased_lsns]) {
    const redo = redoAt(pages, lsn);
    if (redo === undefined) return 0n;
    if (redo < needed) needed = redo;
  }
  for (const child of children) {
    // The child's newest checkpoint: its own, or ours at its branch point while it never made one.
    const redo = redoAt(child.storage.pages, LSN_MAX) ?? 0n;
    if (redo >= child.branch_lsn) continue; // it checkpointed on its own: it replays none of ours
    const own = child.storage.wal.own;
    if (own.end_lsn !== 0n && own.start_lsn <= redo) continue; // it holds a copy already
    if (own.end_lsn === 0n) {
      const segment_start = redo - redo % BigInt(wal.segment_size);
      await child.storage.wal.adoptAncestorWal(segment_start > wal.start_lsn ? segment_start : wal.start_lsn);
      continue;
    }
    if (redo < needed) needed = redo;
  }
  return needed;
}

/** What {@linkcode collectTenant} works on: one tenant's parts. */
export type TenantGcContext = {
  tenant: string;
  file: TenantFile;
  catalog: BranchCatalog;
  timelines: Timelines;
  pitr_ms: number;
  /** Per-timeline memory between runs, kept by the tenant. */
  memory: Map<string, GcMemory>;
  /** The LSNs leased on each timeline (read-only computes, replicas): kept readable below the horizon. */
  leases: (timeline_id: string) => Lsn[];
  uploader: TenantUploader | undefined;
  log: Logger;
};

/**
 * Collects garbage on every open timeline of a tenant where it is worth it (`force`: whatever the sizes), keeping
 * each child branch's branch point readable, and deletes the lake's WAL below what each still needs.
 */
export async function collectTenant(
  ctx: TenantGcContext,
  force: boolean,
): Promise<({ timeline_id: string } & GcOutcome)[]> {
  const done = [];
  for (const branch of ctx.catalog.list()) {
    const storage = ctx.timelines.opened(branch.timeline_id);
    if (storage === undefined) continue;
    let memory = ctx.memory.get(branch.timeline_id);
    if (memory === undefined) {
      ctx.memory.set(branch.timeline_id, memory = { scan_from_lsn: 0n, horizon_lsn: 0n, bytes_after: 0 });
    }
    const children = [];
    for (const child of ctx.catalog.children(branch.timeline_id)) {
      children.push({ branch_lsn: child.branch_lsn, storage: await ctx.timelines.open(child.timeline_id) });
    }
    const leased = ctx.leases(branch.timeline_id);
    const outcome = await collectTimeline(storage, children, leased, ctx.pitr_ms, Date.now(), memory, force);
    if (outcome === undefined) continue;
    await ctx.uploader?.deleteWalBelow(
      ctx.file.timeline_id,
      branch.timeline_id,
      outcome.wal_needed_lsn,
      ctx.file.segment_size,
    ).catch((error) => ctx.log("upload_failed", { tenant: ctx.tenant, error: String(error), at: "wal_delete" }));
    ctx.log("timeline_gc", {
      tenant: ctx.tenant,
      timeline_id: branch.timeline_id,
      cutoff: formatLsn(outcome.horizon_lsn),
      bytes_before: outcome.bytes_before,
      bytes_after: outcome.bytes_after,
    });
    done.push({ timeline_id: branch.timeline_id, ...outcome });
  }
  return done;
}
