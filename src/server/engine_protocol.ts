/**
 * The messages between the server's thread and the engine Worker (`engine_worker.ts`). They never leave the
 * process, so they are structured-clone objects, not a byte format. Requests with an `id` get one reply with that
 * id; `attach_running`, `done` and the lane's wake-ups (`wake`, `lane_wake`, see `engine_channel.ts`) are one-way. Attachment ids are the server thread's, so it can attach again to a
 * running compute without waiting for the Worker.
 *
 * A backend is held under a token: the `exec` that starts an ownership says `acquire`; the Worker gives the backend
 * back by itself when Postgres's reply ends with ReadyForQuery "idle" (saying `released` in its reply), which saves
 * two messages a statement; `done` gives back a backend still held (a session that left mid-transaction).
 *
 * @module
 */

import type { BranchAt } from "../replication/branch_point.ts";
import type { AdminRequest } from "../branch_admin.ts";
import type { Lane } from "./engine_channel.ts";
import type { CopyFeedMemory } from "./copy_feed.ts";

/** How the engine opens its data directory. */
export type EngineOpenOptions = {
  /** Data directory; memory only when absent. */
  dir?: string;
  /** A branch compute stops this long after its last connection (ms). */
  compute_idle_ms: number;
  /** Pages in each compute's page cache. */
  page_cache_pages: number;
  /** Each branch's cache of decompressed storage blocks (bytes). */
  block_cache_bytes?: number;
  /** Safekeepers (`HOST:PORT`) for the WAL; none: local fsyncs. */
  safekeepers?: string[];
  /** The lake of an embedded database (`tarn start --remote URL`, `TarnOptions.remote`). */
  lake?: string;
  /** Serve a tenant of a pageserver (`tarn compute`) instead of a data directory. */
  remote?: {
    pageserver: string;
    tenant: string;
    /** A bootstrap port of the page I/O Worker the host started (`pageIoPort`). */
    io?: MessagePort;
  };
  /** Where COPY data reaches a statement waiting for it (`copy_feed.ts`). */
  copy_feed: CopyFeedMemory;
  /** A COPY FROM STDIN waiting longer than this for the client's data fails (ms). */
  copy_wait_ms: number;
  /** Tests only: `inject_fault` makes a compute's Postgres abort in its next statement. */
  fault_injection?: boolean;
};

/** What a connection's compute looks like to the server's thread. */
export type AttachedCompute = {
  /** The same id for the same compute, across attachments. */
  compute_id: number;
  /** Where a read-only compute stands. */
  lsn?: bigint;
  /** Where to cancel its running statement: undefined when its memory is not shared. */
  cancel?: {
    memory: SharedArrayBuffer;
    control: SharedArrayBuffer;
    query_cancel_pending: number;
    interrupt_pending: number;
  };
};

/** Server thread to engine. */
export type EngineRequest =
  | { op: "open"; id: number; options: EngineOpenOptions; lane: Lane }
  | { op: "attach"; id: number; attach_id: number; branch: string; at?: BranchAt }
  | { op: "attach_running"; attach_id: number; compute_id: number; branch: string }
  | { op: "release"; id: number; attach_id: number }
  | {
    op: "exec";
    id: number;
    token: number;
    compute_id: number;
    acquire: boolean;
    seq: number;
    /** Whether a COPY FROM STDIN may ask the server's thread for the client's data (`copy_output`). */
    copy: boolean;
    /** Who the call runs as (`identityCode`). */
    identity: [number, number];
    bytes: Uint8Array;
  }
  | { op: "inject_fault"; id: number; compute_id: number }
  | { op: "done"; token: number }
  | { op: "wake" }
  | { op: "admin"; id: number; request: AdminRequest }
  | { op: "stats"; id: number }
  | { op: "head"; id: number; branch: string }
  | { op: "close"; id: number };

/**
 * The reply to `exec`: Postgres's messages, and whether the backend was given back after them; `cancel` when the
 * compute's Postgres was restarted (after a crash) and its interrupt flags moved.
 */
export type ExecResult = { bytes: Uint8Array; released: boolean; cancel?: AttachedCompute["cancel"] };

/** An error as it crosses threads: its class name survives, so callers can tell user errors apart. */
export type EngineError = { name: string; message: string };

/** Engine to server thread. */
export type EngineReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: EngineError }
  | { log: string; fields: Record<string, unknown> }
  /** The exec `id` waits in a COPY FROM STDIN: `bytes` for the client, then the client's data in the feed. */
  | { copy_output: { id: number; asked: number; bytes: Uint8Array } }
  | { lane_wake: true };

/** Index of the control word a canceller sets to the `seq` of the exec it cancels. */
export const CONTROL_CANCEL_SEQ = 0;
