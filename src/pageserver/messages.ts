/**
 * The messages of the pageserver protocol (`docs/pageserver_protocol.md`) and their bodies. Every message starts
 * with a u32 request id: requests are pipelined, and each reply (or error) names the request it answers. Puts and
 * WAL pieces get no reply unless they fail.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";
import { BLOCK_SIZE, type FileEvent, type PageValue, type PathMeta } from "../storage/page_api.ts";
import { FieldReader, FieldWriter } from "./fields.ts";
import { encodeFrame, type Frame, PageProtocolError } from "./frames.ts";

/** The most pages one GetPages asks for. */
export const MAX_PAGES_PER_REQUEST = 256;
/** The most entries one ListFiles reply carries; `more` says when another request must go on after the last. */
export const MAX_FILES_PER_REPLY = 4096;
/** The most WAL bytes one ReadWal returns. */
export const MAX_WAL_READ_BYTES = 1024 * 1024;

/** What a compute writes: a page version or a file event. */
export type PutRecord =
  | { kind: "page"; path: string; blkno: number; lsn: Lsn; value: PageValue }
  | { kind: "event"; path: string; lsn: Lsn; event: FileEvent };

/** A page asked for, with the LSN of the last version the asker wrote itself (0 when none it knows of). */
export type PageKey = { path: string; blkno: number; not_modified_since: Lsn };

/** A page as a GetPages reply carries it: bytes, zeros (never written, or past the end), or no such file. */
export type PageReply = Uint8Array | "zero" | "absent";

/** What the pageserver knows of a branch. */
export type BranchInfo = {
  timeline_id: string;
  branch_lsn: Lsn;
  /** The first and end LSN of the WAL the pageserver holds for the timeline (its own and its ancestors'). */
  wal_start_lsn: Lsn;
  wal_end_lsn: Lsn;
  disk_consistent_lsn: Lsn;
  /** The highest compute term seen on the timeline (0: none yet). */
  term: bigint;
};

/** A file or directory of a timeline at an LSN. */
export type FileEntry = { path: string; meta: PathMeta };

/** Error codes: what kind of failure, for the client to act on. */
export const ERROR_CODES = {
  bad_request: 1,
  unknown_tenant: 2,
  unknown_branch: 3,
  unknown_timeline: 4,
  lsn_out_of_range: 5,
  fenced: 6,
  not_yet_ingested: 7,
  internal: 8,
} as const;
/** A kind of error reply. */
export type ErrorCode = keyof typeof ERROR_CODES;
const ERROR_NAMES = Object.fromEntries(Object.entries(ERROR_CODES).map(([name, code]) => [code, name])) as Record<
  number,
  ErrorCode
>;

/** A request, compute to pageserver. */
export type Request =
  | { type: "hello"; id: number; tenant: string; create: boolean }
  | { type: "branch_info"; id: number; branch: string }
  | { type: "attach"; id: number; timeline_id: string; term: bigint; wal_end_lsn: Lsn }
  | { type: "get_pages"; id: number; timeline_id: string; lsn: Lsn; keys: PageKey[] }
  | { type: "stat"; id: number; timeline_id: string; lsn: Lsn; path: string }
  | { type: "readdir"; id: number; timeline_id: string; lsn: Lsn; path: string }
  | { type: "list_files"; id: number; timeline_id: string; lsn: Lsn; after: string }
  | { type: "put"; id: number; timeline_id: string; term: bigint; records: PutRecord[] }
  | { type: "wal"; id: number; timeline_id: string; term: bigint; lsn_start: Lsn; commit_lsn: Lsn; bytes: Uint8Array }
  | { type: "persist"; id: number; timeline_id: string; term: bigint }
  | { type: "read_wal"; id: number; timeline_id: string; lsn_start: Lsn; lsn_end: Lsn };

/** A request before its id is given. */
export type RequestBody = Request extends infer R ? R extends Request ? Omit<R, "id"> : never : never;

/** A reply, pageserver to compute. */
export type Reply =
  | { type: "hello_ok"; id: number; tenant_id: string; segment_size: number }
  | { type: "branch_info_ok"; id: number; info: BranchInfo }
  | { type: "attach_ok"; id: number; term: bigint }
  | { type: "pages"; id: number; pages: PageReply[] }
  | { type: "stat_ok"; id: number; meta: PathMeta | undefined }
  | { type: "readdir_ok"; id: number; names: string[] }
  | { type: "files"; id: number; entries: FileEntry[]; more: boolean }
  | { type: "persisted"; id: number; disk_consistent_lsn: Lsn; wal_end_lsn: Lsn }
  | { type: "wal_bytes"; id: number; bytes: Uint8Array }
  | { type: "error"; id: number; code: ErrorCode; message: string };

/** Any message. */
export type Message = Request | Reply;

const TYPE_CODES: Record<Message["type"], number> = {
  hello: 1,
  hello_ok: 2,
  branch_info: 3,
  branch_info_ok: 4,
  attach: 5,
  attach_ok: 6,
  get_pages: 7,
  pages: 8,
  stat: 9,
  stat_ok: 10,
  readdir: 11,
  readdir_ok: 12,
  put: 13,
  wal: 15,
  persist: 17,
  persisted: 18,
  read_wal: 19,
  wal_bytes: 20,
  list_files: 21,
  files: 22,
  error: 31,
};
const TYPE_NAMES = Object.fromEntries(Object.entries(TYPE_CODES).map(([name, code]) => [code, name])) as Record<
  number,
  Message["type"]
>;
const REQUEST_TYPES = new Set([
  "hello",
  "branch_info",
  "attach",
  "get_pages",
  "stat",
  "readdir",
  "list_files",
  "put",
  "wal",
  "persist",
  "read_wal",
]);
const EVENT_KINDS: FileEvent["kind"][] = ["create", "resize", "unlink", "mkdir", "rmdir"];
const PAGE_IMAGE = 0;
const PAGE_DELTA = 1;
const EVENT = 2;

/** Whether a message goes from compute to pageserver. */
export function isRequest(message: Message): message is Request {
  return REQUEST_TYPES.has(message.type);
}

/** The frame of `message`. */
export function encodeMessage(message: Message): Uint8Array {
  const w = new FieldWriter(sizeHint(message));
  w.u32(message.id);
  writeBody(w, message);
  return encodeFrame(TYPE_CODES[message.type], w.finish());
}

/** About the body's size, so that a large one is written without growing (and copying) its buffer. */
function sizeHint(m: Message): number {
  if (m.type === "pages") return 8 + m.pages.length * (BLOCK_SIZE + 1);
  if (m.type === "wal" || m.type === "wal_bytes") return 64 + m.bytes.length;
  return m.type === "put" ? 64 * 1024 : 256;
}

function writeBody(w: FieldWriter, m: Message): void {
  switch (m.type) {
    case "hello":
      return void w.str(m.tenant).u8(m.create ? 1 : 0);
    case "hello_ok":
      return void w.timeline(m.tenant_id).u32(m.segment_size);
    case "branch_info":
      return void w.str(m.branch);
    case "branch_info_ok": {
      const i = m.info;
      w.timeline(i.timeline_id).u64(i.branch_lsn).u64(i.wal_start_lsn).u64(i.wal_end_lsn);
      return void w.u64(i.disk_consistent_lsn).u64(i.term);
    }
    case "attach":
      return void w.timeline(m.timeline_id).u64(m.term).u64(m.wal_end_lsn);
    case "attach_ok":
      return void w.u64(m.term);
    case "get_pages":
      w.timeline(m.timeline_id).u64(m.lsn).u16(m.keys.length);
      for (const k of m.keys) w.str(k.path).u32(k.blkno).u64(k.not_modified_since);
      return;
    case "pages":
      w.u16(m.pages.length);
      for (const p of m.pages) {
        if (p === "zero") w.u8(1);
        else if (p === "absent") w.u8(2);
        else w.u8(0).raw(p);
      }
      return;
    case "stat":
    case "readdir":
      return void w.timeline(m.timeline_id).u64(m.lsn).str(m.path);
    case "stat_ok":
      return writeMeta(w, m.meta);
    case "readdir_ok":
      w.u32(m.names.length);
      for (const name of m.names) w.str(name);
      return;
    case "list_files":
      return void w.timeline(m.timeline_id).u64(m.lsn).str(m.after);
    case "files":
      w.u8(m.more ? 1 : 0).u32(m.entries.length);
      for (const e of m.entries) writeMeta(w.str(e.path), e.meta);
      return;
    case "put":
      w.timeline(m.timeline_id).u64(m.term).u32(m.records.length);
      for (const r of m.records) writeRecord(w, r);
      return;
    case "wal":
      return void w.timeline(m.timeline_id).u64(m.term).u64(m.lsn_start).u64(m.commit_lsn).bytes(m.bytes);
    case "persist":
      return void w.timeline(m.timeline_id).u64(m.term);
    case "persisted":
      return void w.u64(m.disk_consistent_lsn).u64(m.wal_end_lsn);
    case "read_wal":
      return void w.timeline(m.timeline_id).u64(m.lsn_start).u64(m.lsn_end);
    case "wal_bytes":
      return void w.bytes(m.bytes);
    case "error":
      return void w.u16(ERROR_CODES[m.code]).str(m.message.slice(0, 1000));
  }
}

function writeMeta(w: FieldWriter, meta: PathMeta | undefined): void {
  if (meta === undefined) w.u8(0).u64(0n);
  else w.u8(meta.kind === "file" ? 1 : 2).u64(BigInt(meta.kind === "file" ? meta.size_bytes : 0));
}

/** Appends one put record to `w` (also used to build put batches incrementally). */
export function writeRecord(w: FieldWriter, r: PutRecord): void {
  if (r.kind === "event") {
    w.u8(EVENT).str(r.path).u64(r.lsn).u8(EVENT_KINDS.indexOf(r.event.kind));
    w.u64(BigInt(r.event.kind === "resize" ? r.event.size_bytes : 0));
  } else if (r.value.kind === "image") {
    w.u8(PAGE_IMAGE).str(r.path).u64(r.lsn).u32(r.blkno).raw(r.value.bytes);
  } else {
    w.u8(PAGE_DELTA).str(r.path).u64(r.lsn).u32(r.blkno).u16(r.value.ranges.length);
    for (const range of r.value.ranges) w.u16(range.offset).u16(range.bytes.length).raw(range.bytes);
  }
}

/** The message in a checked frame; throws {@linkcode PageProtocolError} on anything malformed. */
export function decodeMessage(frame: Frame): Message {
  const type = TYPE_NAMES[frame.type];
  if (type === undefined) throw new PageProtocolError(`unknown message type ${frame.type}`);
  const r = new FieldReader(frame.body);
  const id = r.u32("request id");
  const message = readBody(r, type, id);
  r.end();
  return message;
}

function readBody(r: FieldReader, type: Message["type"], id: number): Message {
  switch (type) {
    case "hello":
      return { type, id, tenant: r.str("tenant"), create: flag(r, "create") };
    case "hello_ok":
      return { type, id, tenant_id: r.timeline("tenant id"), segment_size: r.u32("segment size") };
    case "branch_info":
      return { type, id, branch: r.str("branch") };
    case "branch_info_ok":
      return {
        type,
        id,
        info: {
          timeline_id: r.timeline("timeline"),
          branch_lsn: r.u64("branch lsn"),
          wal_start_lsn: r.u64("wal start"),
          wal_end_lsn: r.u64("wal end"),
          disk_consistent_lsn: r.u64("disk consistent lsn"),
          term: r.u64("term"),
        },
      };
    case "attach":
      return { type, id, timeline_id: r.timeline("timeline"), term: r.u64("term"), wal_end_lsn: r.u64("wal end") };
    case "attach_ok":
      return { type, id, term: r.u64("term") };
    case "get_pages": {
      const timeline_id = r.timeline("timeline");
      const lsn = r.u64("lsn");
      const count = r.u16("page count");
      if (count > MAX_PAGES_PER_REQUEST) throw new PageProtocolError(`${count} pages asked for in one request`);
      const keys: PageKey[] = [];
      for (let i = 0; i < count; i++) {
        keys.push({ path: r.str("path"), blkno: r.u32("block"), not_modified_since: r.u64("not modified since") });
      }
      return { type, id, timeline_id, lsn, keys };
    }
    case "pages": {
      const count = r.u16("page count");
      const pages: PageReply[] = [];
      for (let i = 0; i < count; i++) {
        const status = r.u8("page status");
        if (status === 0) pages.push(r.raw(BLOCK_SIZE, "page").slice());
        else if (status === 1) pages.push("zero");
        else if (status === 2) pages.push("absent");
        else throw new PageProtocolError(`page status ${status}`);
      }
      return { type, id, pages };
    }
    case "stat":
    case "readdir":
      return { type, id, timeline_id: r.timeline("timeline"), lsn: r.u64("lsn"), path: r.str("path") };
    case "stat_ok":
      return { type, id, meta: readMeta(r) };
    case "readdir_ok": {
      const count = r.u32("name count");
      if (count * 2 > r.left_bytes) throw new PageProtocolError(`${count} names do not fit the body`);
      const names = [];
      for (let i = 0; i < count; i++) names.push(r.str("name"));
      return { type, id, names };
    }
    case "list_files":
      return { type, id, timeline_id: r.timeline("timeline"), lsn: r.u64("lsn"), after: r.str("after") };
    case "files": {
      const more = flag(r, "more");
      const count = r.u32("entry count");
      if (count > MAX_FILES_PER_REPLY) throw new PageProtocolError(`${count} files in one reply`);
      const entries: FileEntry[] = [];
      for (let i = 0; i < count; i++) {
        const path = r.str("path");
        const meta = readMeta(r);
        if (meta === undefined) throw new PageProtocolError(`file ${path} listed as absent`);
        entries.push({ path, meta });
      }
      return { type, id, entries, more };
    }
    case "put": {
      const timeline_id = r.timeline("timeline");
      const term = r.u64("term");
      const count = r.u32("record count");
      if (count * 12 > r.left_bytes) throw new PageProtocolError(`${count} records do not fit the body`);
      const records: PutRecord[] = [];
      for (let i = 0; i < count; i++) records.push(readRecord(r));
      return { type, id, timeline_id, term, records };
    }
    case "wal":
      return {
        type,
        id,
        timeline_id: r.timeline("timeline"),
        term: r.u64("term"),
        lsn_start: r.u64("lsn start"),
        commit_lsn: r.u64("commit lsn"),
        bytes: r.bytes("wal").slice(),
      };
    case "persist":
      return { type, id, timeline_id: r.timeline("timeline"), term: r.u64("term") };
    case "persisted":
      return { type, id, disk_consistent_lsn: r.u64("disk consistent lsn"), wal_end_lsn: r.u64("wal end") };
    case "read_wal":
      return {
        type,
        id,
        timeline_id: r.timeline("timeline"),
        lsn_start: r.u64("lsn start"),
        lsn_end: r.u64("lsn end"),
      };
    case "wal_bytes":
      return { type, id, bytes: r.bytes("wal").slice() };
    case "error": {
      const code = ERROR_NAMES[r.u16("error code")];
      if (code === undefined) throw new PageProtocolError(`unknown error code`);
      return { type, id, code, message: r.str("message") };
    }
  }
}

function readMeta(r: FieldReader): PathMeta | undefined {
  const kind = r.u8("kind");
  const size = r.u64("size");
  if (kind > 2 || size > BigInt(Number.MAX_SAFE_INTEGER)) throw new PageProtocolError(`path kind ${kind}`);
  return kind === 0 ? undefined : kind === 1 ? { kind: "file", size_bytes: Number(size) } : { kind: "dir" };
}

function flag(r: FieldReader, what: string): boolean {
  const value = r.u8(what);
  if (value > 1) throw new PageProtocolError(`${what} is ${value}, not 0 or 1`);
  return value === 1;
}

function readRecord(r: FieldReader): PutRecord {
  const kind = r.u8("record kind");
  const path = r.str("path");
  const lsn = r.u64("lsn");
  if (kind === EVENT) {
    const event_kind = EVENT_KINDS[r.u8("event kind")];
    const size = r.u64("size");
    if (event_kind === undefined) throw new PageProtocolError(`unknown file event kind`);
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new PageProtocolError(`file size ${size}`);
    const event: FileEvent = event_kind === "resize"
      ? { kind: "resize", size_bytes: Number(size) }
      : { kind: event_kind };
    return { kind: "event", path, lsn, event };
  }
  const blkno = r.u32("block");
  if (kind === PAGE_IMAGE) {
    return { kind: "page", path, lsn, blkno, value: { kind: "image", bytes: r.raw(BLOCK_SIZE, "page").slice() } };
  }
  if (kind !== PAGE_DELTA) throw new PageProtocolError(`unknown record kind ${kind}`);
  const count = r.u16("range count");
  const ranges = [];
  for (let i = 0; i < count; i++) {
    const offset = r.u16("range offset");
    const bytes = r.raw(r.u16("range length"), "range").slice();
    if (offset + bytes.length > BLOCK_SIZE) throw new PageProtocolError(`delta range past the end of the page`);
    ranges.push({ offset, bytes });
  }
  return { kind: "page", path, lsn, blkno, value: { kind: "delta", ranges } };
}
