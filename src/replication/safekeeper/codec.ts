/**
 * The binary form of safekeeper protocol messages: one frame per message, little-endian,
 * `magic u32 | version u8 | type u8 | flags u16 | body_length u32 | body | crc32c u32` (the CRC covers header and
 * body). Decoding checks every field and throws {@linkcode ProtocolFormatError}, never anything else.
 *
 * @module
 */
import { crc32c } from "../../crc32c.ts";
import { formatLsn, type Lsn } from "../../lsn.ts";
import {
  type AppendStatus,
  ID_PATTERN,
  isSegmentSize,
  MAX_FRAME_BODY_BYTES,
  MAX_WAL_BYTES_PER_MESSAGE,
  type Message,
  type ReadStatus,
} from "./messages.ts";
import { lastTerm } from "./term_history.ts";
import { ProtocolFormatError, Reader, Writer } from "./wire_fields.ts";

export { ProtocolFormatError };

/** `TSKP` in ASCII, read as a little-endian u32. */
export const FRAME_MAGIC = 0x504b5354;
/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;
/** Bytes before the body. */
export const FRAME_HEADER_BYTES = 12;
/** Bytes after the body (the CRC32C). */
export const FRAME_TRAILER_BYTES = 4;

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const TYPE_CODES = {
  status_request: 1,
  status_response: 2,
  vote_request: 3,
  vote_response: 4,
  elected: 5,
  append_request: 6,
  append_response: 7,
  read_request: 8,
  read_response: 9,
  hello: 10,
  hello_response: 11,
} as const;
const TYPE_NAMES = Object.fromEntries(Object.entries(TYPE_CODES).map(([name, code]) => [code, name]));
const APPEND_STATUSES: readonly AppendStatus[] = ["ok", "term_rejected", "not_elected", "gap"];
const READ_STATUSES: readonly ReadStatus[] = ["ok", "term_mismatch", "not_held"];

function bodySize(msg: Message): number {
  switch (msg.type) {
    case "status_request":
      return 0;
    case "status_response":
      return 40;
    case "vote_request":
      return 16;
    case "vote_response":
      return 8 + 1 + 24 + 4 + 16 * msg.term_history.length;
    case "elected":
      return 16 + 4 + 16 * msg.term_history.length;
    case "append_request":
      return 24 + 4 + msg.bytes.length;
    case "append_response":
      return 8 + 1 + 16;
    case "read_request":
      return 24;
    case "read_response":
      return 8 + 1 + 16 + msg.bytes.length;
    case "hello":
      return 1 + msg.tenant_id.length + 1 + msg.timeline_id.length + 4;
    case "hello_response":
      return 4 + 24;
  }
}

/**
 * What in a handshake message the writer cannot represent faithfully (a DataView would wrap a number, a long id
 * would overflow its length byte), checked before writing; decoding checks the rest.
 */
function handshakeProblem(msg: Message): string | undefined {
  if (msg.type === "hello") {
    if (!ID_PATTERN.test(msg.tenant_id)) {
      return `tenant id ${JSON.stringify(msg.tenant_id)} is not 1-64 of [A-Za-z0-9_-]`;
    }
    if (!ID_PATTERN.test(msg.timeline_id)) {
      return `timeline id ${JSON.stringify(msg.timeline_id)} is not 1-64 of [A-Za-z0-9_-]`;
    }
    if (!isSegmentSize(msg.segment_size)) return `segment size ${msg.segment_size} is not a power of two 1 MiB..1 GiB`;
  }
  if (msg.type === "hello_response" && !(Number.isInteger(msg.node_id) && msg.node_id >= 0 && msg.node_id < 2 ** 32)) {
    return `node id ${msg.node_id} is not a u32`;
  }
  return undefined;
}

function writeBody(w: Writer, msg: Message): void {
  switch (msg.type) {
    case "status_request":
      return;
    case "status_response":
      for (const v of [msg.term, msg.flush_lsn, msg.commit_lsn, msg.last_log_term, msg.wal_start_lsn]) w.u64(v);
      return;
    case "vote_request":
      w.u64(msg.term);
      w.u64(msg.proposer_id);
      return;
    case "vote_response":
      w.u64(msg.term);
      w.u8(msg.granted ? 1 : 0);
      for (const v of [msg.flush_lsn, msg.commit_lsn, msg.last_log_term]) w.u64(v);
      w.history(msg.term_history);
      return;
    case "elected":
      w.u64(msg.term);
      w.u64(msg.term_start_lsn);
      w.history(msg.term_history);
      return;
    case "append_request":
      for (const v of [msg.term, msg.begin_lsn, msg.commit_lsn]) w.u64(v);
      w.u32(msg.bytes.length);
      w.raw(msg.bytes);
      return;
    case "append_response":
      w.u64(msg.term);
      w.u8(APPEND_STATUSES.indexOf(msg.status));
      w.u64(msg.flush_lsn);
      w.u64(msg.commit_lsn);
      return;
    case "read_request":
      for (const v of [msg.term, msg.lsn_start, msg.lsn_end]) w.u64(v);
      return;
    case "read_response":
      w.u64(msg.term);
      w.u8(READ_STATUSES.indexOf(msg.status));
      w.u64(msg.lsn_start);
      w.u64(msg.lsn_end);
      w.raw(msg.bytes);
      return;
    case "hello":
      w.id(msg.tenant_id);
      w.id(msg.timeline_id);
      w.u32(msg.segment_size);
      return;
    case "hello_response":
      w.u32(msg.node_id);
      for (const v of [msg.term, msg.flush_lsn, msg.commit_lsn]) w.u64(v);
      return;
  }
}

/** Encodes `msg` as one frame. Throws {@linkcode ProtocolFormatError} for a message decoding would refuse. */
export function encodeMessage(msg: Message): Uint8Array {
  const problem = handshakeProblem(msg);
  if (problem !== undefined) throw new ProtocolFormatError(problem);
  const body_bytes = bodySize(msg);
  const w = new Writer(FRAME_HEADER_BYTES + body_bytes + FRAME_TRAILER_BYTES);
  w.u32(FRAME_MAGIC);
  w.u8(PROTOCOL_VERSION);
  w.u8(TYPE_CODES[msg.type]);
  w.u8(0);
  w.u8(0);
  w.u32(body_bytes);
  writeBody(w, msg);
  w.u32(crc32c(w.bytes.subarray(0, w.at)));
  // Decoding the result is the one place that knows every rule: a message it would refuse must not leave.
  decodeFrame(w.bytes);
  return w.bytes;
}

/** The body length a frame header declares; throws {@linkcode ProtocolFormatError} when the header is bad. */
export function frameBodyLength(header: Uint8Array, max_body_bytes = MAX_FRAME_BODY_BYTES): number {
  const view = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES);
  const magic = view.getUint32(0, true);
  if (magic !== FRAME_MAGIC) throw new ProtocolFormatError(`magic 0x${magic.toString(16)}, not "TSKP"`);
  const version = view.getUint8(4);
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolFormatError(`protocol version ${version}, this Tarn speaks ${PROTOCOL_VERSION}`);
  }
  if (TYPE_NAMES[view.getUint8(5)] === undefined) throw new ProtocolFormatError(`unknown type ${view.getUint8(5)}`);
  if (view.getUint16(6, true) !== 0) throw new ProtocolFormatError(`flags ${view.getUint16(6, true)}, expected 0`);
  const body_bytes = view.getUint32(8, true);
  if (body_bytes > max_body_bytes) {
    throw new ProtocolFormatError(`body of ${body_bytes} bytes is over the limit of ${max_body_bytes}`);
  }
  return body_bytes;
}

/** Decodes exactly one whole frame; throws {@linkcode ProtocolFormatError} on anything invalid. */
export function decodeFrame(frame: Uint8Array, max_body_bytes = MAX_FRAME_BODY_BYTES): Message {
  if (frame.length < FRAME_HEADER_BYTES + FRAME_TRAILER_BYTES) {
    throw new ProtocolFormatError(`frame of ${frame.length} bytes is shorter than a header and checksum`);
  }
  const body_bytes = frameBodyLength(frame, max_body_bytes);
  const body_end = FRAME_HEADER_BYTES + body_bytes;
  if (frame.length !== body_end + FRAME_TRAILER_BYTES) {
    throw new ProtocolFormatError(`frame of ${frame.length} bytes declares a body of ${body_bytes}`);
  }
  const stored = new DataView(frame.buffer, frame.byteOffset + body_end, 4).getUint32(0, true);
  if (stored !== crc32c(frame.subarray(0, body_end))) throw new ProtocolFormatError("checksum mismatch");
  const type = TYPE_NAMES[frame[5]] as Message["type"];
  const r = new Reader(frame.subarray(FRAME_HEADER_BYTES, body_end));
  const msg = readBody(r, type);
  r.end();
  return msg;
}

function readBody(r: Reader, type: Message["type"]): Message {
  switch (type) {
    case "status_request":
      return { type };
    case "status_response":
      return readStatusResponse(r);
    case "vote_request":
      return readVoteRequest(r);
    case "vote_response":
      return readVoteResponse(r);
    case "elected":
      return readElected(r);
    case "append_request":
      return readAppendRequest(r);
    case "append_response":
      return readAppendResponse(r);
    case "read_request":
      return readReadRequest(r);
    case "read_response":
      return readReadResponse(r);
    case "hello":
      return readHello(r);
    case "hello_response":
      return readHelloResponse(r);
  }
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new ProtocolFormatError(what);
}

function readStatusResponse(r: Reader): Message {
  const term = r.u64("term");
  const flush_lsn = r.u64("flush LSN");
  const commit_lsn = r.u64("commit LSN");
  const last_log_term = r.u64("last log term");
  const wal_start_lsn = r.u64("WAL start LSN");
  check(last_log_term <= term, `last log term ${last_log_term} is above the term ${term}`);
  check(wal_start_lsn <= flush_lsn, `WAL start ${formatLsn(wal_start_lsn)} is past flush ${formatLsn(flush_lsn)}`);
  return { type: "status_response", term, flush_lsn, commit_lsn, last_log_term, wal_start_lsn };
}

function readVoteRequest(r: Reader): Message {
  const term = r.u64("term");
  const proposer_id = r.u64("proposer id");
  check(term > 0n, "vote request for term 0");
  check(proposer_id > 0n, "proposer id 0");
  return { type: "vote_request", term, proposer_id };
}

function readVoteResponse(r: Reader): Message {
  const term = r.u64("term");
  const granted = r.flag("granted");
  const flush_lsn = r.u64("flush LSN");
  const commit_lsn = r.u64("commit LSN");
  const last_log_term = r.u64("last log term");
  const term_history = r.history();
  check(last_log_term === lastTerm(term_history), `last log term ${last_log_term} is not the history's last`);
  check(last_log_term <= term, `last log term ${last_log_term} is above the term ${term}`);
  const last_start = term_history.at(-1)?.start_lsn ?? 0n;
  check(last_start <= flush_lsn, `history switch at ${formatLsn(last_start)} is past flush ${formatLsn(flush_lsn)}`);
  return { type: "vote_response", term, granted, flush_lsn, commit_lsn, last_log_term, term_history };
}

function readElected(r: Reader): Message {
  const term = r.u64("term");
  const term_start_lsn = r.u64("term start LSN");
  const term_history = r.history();
  const last = term_history.at(-1);
  check(last !== undefined && last.term === term, `elected for term ${term} with a history not ending in it`);
  check(last!.start_lsn === term_start_lsn, "history's last switch is not at the term start LSN");
  return { type: "elected", term, term_start_lsn, term_history };
}

function readAppendRequest(r: Reader): Message {
  const term = r.u64("term");
  const begin_lsn = r.u64("begin LSN");
  const commit_lsn = r.u64("commit LSN");
  const size_bytes = r.u32("WAL length");
  check(size_bytes <= MAX_WAL_BYTES_PER_MESSAGE, `append of ${size_bytes} bytes is over the limit`);
  check(term > 0n, "append in term 0");
  check(begin_lsn + BigInt(size_bytes) <= U64_MAX, "append runs past the largest LSN");
  return { type: "append_request", term, begin_lsn, commit_lsn, bytes: r.raw(size_bytes, "WAL bytes") };
}

function readAppendResponse(r: Reader): Message {
  const term = r.u64("term");
  const code = r.u8("status");
  check(code < APPEND_STATUSES.length, `append status ${code} is unknown`);
  const flush_lsn = r.u64("flush LSN");
  const commit_lsn = r.u64("commit LSN");
  return { type: "append_response", term, status: APPEND_STATUSES[code], flush_lsn, commit_lsn };
}

function readReadRequest(r: Reader): Message {
  const term = r.u64("term");
  const lsn_start = r.u64("start LSN");
  const lsn_end = r.u64("end LSN");
  checkRange(lsn_start, lsn_end);
  return { type: "read_request", term, lsn_start, lsn_end };
}

function readReadResponse(r: Reader): Message {
  const term = r.u64("term");
  const code = r.u8("status");
  check(code < READ_STATUSES.length, `read status ${code} is unknown`);
  const lsn_start = r.u64("start LSN");
  const lsn_end = r.u64("end LSN");
  checkRange(lsn_start, lsn_end);
  const status = READ_STATUSES[code];
  check(status === "ok" || lsn_end === lsn_start, `a ${status} read response carries bytes`);
  const bytes = r.raw(Number(lsn_end - lsn_start), "WAL bytes");
  return { type: "read_response", term, status, lsn_start, lsn_end, bytes };
}

function checkRange(lsn_start: Lsn, lsn_end: Lsn): void {
  check(lsn_start <= lsn_end, `range ends at ${formatLsn(lsn_end)} before its start ${formatLsn(lsn_start)}`);
  check(lsn_end - lsn_start <= BigInt(MAX_WAL_BYTES_PER_MESSAGE), "range is over the per-message limit");
}

function readHello(r: Reader): Message {
  const tenant_id = r.id("tenant id");
  const timeline_id = r.id("timeline id");
  const segment_size = r.u32("segment size");
  check(isSegmentSize(segment_size), `segment size ${segment_size} is not a power of two 1 MiB..1 GiB`);
  return { type: "hello", tenant_id, timeline_id, segment_size };
}

function readHelloResponse(r: Reader): Message {
  const node_id = r.u32("node id");
  const term = r.u64("term");
  const flush_lsn = r.u64("flush LSN");
  const commit_lsn = r.u64("commit LSN");
  return { type: "hello_response", node_id, term, flush_lsn, commit_lsn };
}
