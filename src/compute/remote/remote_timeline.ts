/**
 * Opens a timeline's storage for a compute on a pageserver: the pages through {@linkcode RemotePages}, the WAL as
 * a quorum of safekeepers (authoritative) over a local cache that starts with what the pageserver holds from the
 * newest checkpoint's redo point, and, below the branch point, the parent's WAL read from the pageserver. The
 * compute then takes the timeline at the pageserver with the term its election gave it, fencing older computes.
 *
 * @module
 */
import { formatLsn, type Lsn, LSN_MAX } from "../../lsn.ts";
import type { Logger } from "../../logger.ts";
import { QuorumWal } from "../../replication/quorum_wal.ts";
import type { SafekeeperAddress } from "../../replication/safekeeper_client.ts";
import { TimelineWal } from "../../replication/timeline_wal.ts";
import { WalLog } from "../../replication/wal_log.ts";
import { CorruptDataError } from "../../errors.ts";
import type { TimelineStorage } from "../compute.ts";
import { parseControlFile } from "../pg_control.ts";
import { type FileEntry, MAX_WAL_READ_BYTES } from "../../pageserver/messages.ts";
import type { PageChannel } from "./page_channel.ts";
import { RemotePages } from "./remote_pages.ts";
import { RemoteWalSource } from "./remote_wal.ts";
import type { WalSource } from "../../replication/wal_api.ts";
import { walHead } from "../../replication/branch_point.ts";
import { PageStore } from "../../storage/page_store.ts";
import { newTimelineId } from "../../tenant_file.ts";

/** PostgreSQL's WAL page size (XLOG_BLCKSZ). */
const WAL_PAGE_BYTES = 8192n;
/** WAL fetched from the pageserver at start in pieces of this many bytes. */
const PREFILL_PIECE_BYTES = MAX_WAL_READ_BYTES;

/** What opening a remote timeline needs. */
export type RemoteTimelineOptions = {
  channel: PageChannel;
  branch: string;
  tenant_id: string;
  segment_size: number;
  safekeepers: SafekeeperAddress[];
  election_timeout_ms: number;
  log: Logger;
};

/** A remote timeline's storage, its branch, the pages' counters, and why a newer compute fenced it, once one has. */
export type RemoteTimeline = TimelineStorage & {
  branch: string;
  remote: RemotePages;
  quorum: QuorumWal;
  fenced: () => string | undefined;
};

/** Opens `branch`'s timeline: WAL cache filled, elected by the safekeepers, attached at the pageserver. */
export async function openRemoteTimeline(options: RemoteTimelineOptions): Promise<RemoteTimeline> {
  const { channel, log } = options;
  const reply = await channel.request({ type: "branch_info", branch: options.branch });
  if (reply.type !== "branch_info_ok") throw new Error(`branch_info answered with ${reply.type}`);
  const info = reply.info;
  const timeline_id = info.timeline_id;
  const pages = new RemotePages(channel, timeline_id, info.wal_end_lsn);
  const local = await WalLog.open({ segment_size: options.segment_size });
  const control_page = pages.getPage("global/pg_control", 0, LSN_MAX);
  if (control_page === undefined) throw new CorruptDataError(`timeline ${timeline_id}`, "no pg_control");
  const redo_lsn = parseControlFile(control_page).redo_lsn;
  // Recovery reads the redo record's WAL page from its start (the page header is checked).
  let from = redo_lsn - redo_lsn % WAL_PAGE_BYTES;
  if (from < info.branch_lsn) from = info.branch_lsn;
  if (from < info.wal_start_lsn) from = info.wal_start_lsn;
  await prefill(channel, timeline_id, local, from, info.wal_end_lsn);
  const quorum = await QuorumWal.open({
    local,
    safekeepers: options.safekeepers,
    tenant_id: options.tenant_id,
    timeline_id,
    segment_size: options.segment_size,
    timeline_start_lsn: from,
    election_timeout_ms: options.election_timeout_ms,
    log,
  }).catch(async (error) => {
    await local.close();
    throw error;
  });
  // Below the cache, the pageserver serves the WAL (the ancestor's below a branch point): recovery reads the first
  // page of the redo record's segment, and a branch's recovery replays its parent's WAL.
  const history_start = info.wal_start_lsn < from ? info.wal_start_lsn : from;
  const history = new RemoteWalSource(channel, timeline_id, history_start, from);
  const wal = new TimelineWal(quorum, history, from, options.segment_size);
  const term = quorum.term;
  await channel.request({ type: "attach", timeline_id, term, wal_end_lsn: quorum.end_lsn }).catch(async (error) => {
    await quorum.close();
    throw error;
  });
  pages.own(term, wal, await listFiles(channel, timeline_id));
  log("timeline_attached", {
    branch: options.branch,
    timeline_id,
    term: Number(term),
    redo: formatLsn(redo_lsn),
    wal_end: formatLsn(quorum.end_lsn),
  });
  return {
    pages,
    wal,
    remote: pages,
    branch: options.branch,
    quorum,
    failed: () => channel.failure !== undefined || quorum.deposed !== undefined || pages.fenced !== undefined,
    fenced: () => quorum.deposed ?? pages.fenced,
  };
}

/** The timeline's whole file tree at its head, in as many pages as it takes. */
async function listFiles(channel: PageChannel, timeline_id: string): Promise<FileEntry[]> {
  const entries: FileEntry[] = [];
  for (let after = "";;) {
    const reply = await channel.request({ type: "list_files", timeline_id, lsn: LSN_MAX, after });
    if (reply.type !== "files") throw new Error(`list_files answered with ${reply.type}`);
    entries.push(...reply.entries);
    if (!reply.more || reply.entries.length === 0) return entries;
    after = reply.entries.at(-1)!.path;
  }
}

/** Copies the timeline's own WAL the pageserver holds, [from, end), into the local cache. */
async function prefill(channel: PageChannel, timeline_id: string, local: WalLog, from: Lsn, end: Lsn): Promise<void> {
  for (let at = from; at < end;) {
    const piece_end = end - at > BigInt(PREFILL_PIECE_BYTES) ? at + BigInt(PREFILL_PIECE_BYTES) : end;
    const reply = await channel.request({ type: "read_wal", timeline_id, lsn_start: at, lsn_end: piece_end });
    if (reply.type !== "wal_bytes") throw new Error(`read_wal answered with ${reply.type}`);
    local.append(at, reply.bytes);
    at = piece_end;
  }
}

/** What opening a timeline read only at its head needs. */
export type ReaderTimelineOptions = { channel: PageChannel; branch: string; segment_size: number };

/**
 * Opens `branch`'s timeline read only at its head as the pageserver has it (a replica's next compute): pages at that
 * LSN from the pageserver under an in-memory layer that takes what Postgres writes while it recovers, the WAL below
 * it from the pageserver. No election and no attach: the primary is not disturbed. Resolves with the LSN replayed
 * to and the LSN pages are read at (the end of the WAL the pageserver holds).
 */
export async function openReaderTimeline(
  options: ReaderTimelineOptions,
): Promise<{ storage: TimelineStorage; lsn: Lsn; pages_lsn: Lsn }> {
  const { channel } = options;
  const reply = await channel.request({ type: "branch_info", branch: options.branch });
  if (reply.type !== "branch_info_ok") throw new Error(`branch_info answered with ${reply.type}`);
  const info = reply.info;
  // The last record may end a few bytes past the stored WAL (its trailing zeros are not stored): the replay point
  // is past it, the pages are read at the end of what the pageserver holds (no version lies in between).
  const history = zerosPastEnd(new RemoteWalSource(channel, info.timeline_id, info.wal_start_lsn, info.wal_end_lsn));
  const lsn = walHead(history, info.wal_end_lsn);
  const remote = new RemotePages(channel, info.timeline_id, info.wal_end_lsn, info.wal_end_lsn);
  const pages = await PageStore.open({
    timeline_id: newTimelineId(),
    ancestor: { source: remote, branch_lsn: info.wal_end_lsn },
  });
  const own = await WalLog.open({ segment_size: options.segment_size });
  return {
    storage: { pages, wal: new TimelineWal(own, history, lsn, options.segment_size) },
    lsn,
    pages_lsn: info.wal_end_lsn,
  };
}

/** `source`, read as zeros past its end (where the record decoder looks for a next record). */
function zerosPastEnd(source: WalSource): WalSource {
  return {
    start_lsn: source.start_lsn,
    end_lsn: source.end_lsn,
    retainFrom: () => {},
    read: (lsn_start, lsn_end) => {
      if (lsn_end <= source.end_lsn) return source.read(lsn_start, lsn_end);
      const out = new Uint8Array(Number(lsn_end - lsn_start));
      if (lsn_start < source.end_lsn) out.set(source.read(lsn_start, source.end_lsn));
      return out;
    },
  };
}
