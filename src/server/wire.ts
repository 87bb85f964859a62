/**
 * PostgreSQL wire protocol (v3) framing: the startup packet, frontend messages read whole from a byte stream, and
 * the few backend messages the server writes itself. Every length is checked against a limit before anything is
 * buffered, and a malformed packet is a typed {@linkcode ProtocolError}, never a crash. Format: docs/wire_protocol.md.
 *
 * @module
 */

/** Protocol version 3.0, as the startup packet carries it. */
export const PROTOCOL_V3 = 196608;
/** Special startup codes. */
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** Frontend message types the server passes to Postgres (anything else is refused). */
export const FORWARDED_TYPES: ReadonlySet<string> = new Set([
  "Q",
  "P",
  "B",
  "D",
  "E",
  "C",
  "S",
  "H",
  "F",
  "d",
  "c",
  "f",
]);

/** A protocol violation by the client: the connection gets an ErrorResponse (where possible) and is closed. */
export class ProtocolError extends Error {
  /** @param message what the client sent wrong */
  constructor(message: string) {
    super(message);
    this.name = "ProtocolError";
  }
}

/**
 * A first packet that cannot be a startup packet (a length outside 8..10,000 bytes, as PostgreSQL's limit): like
 * PostgreSQL, the server closes the connection without an answer (a client that sent Terminate before its startup
 * packet, or a port scanner, gets silence).
 */
export class InvalidStartupError extends ProtocolError {
  /** @param length the length the packet announced */
  constructor(length: number) {
    super(`invalid length of startup packet (${length} bytes; 8 to ${STARTUP_MAX_BYTES} are accepted)`);
    this.name = "InvalidStartupError";
  }
}

/** PostgreSQL's limit on a startup packet (MAX_STARTUP_PACKET_LENGTH). */
export const STARTUP_MAX_BYTES = 10_000;

/** A frontend message: its type letter and body (without type and length). */
export type FrontendMessage = { type: string; body: Uint8Array };

/** What the first packet of a connection asked for. */
export type StartupPacket =
  | { kind: "startup"; params: Record<string, string> }
  | { kind: "ssl" }
  | { kind: "gssenc" }
  | { kind: "cancel"; pid: number; secret: number };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Accumulates bytes from a socket and cuts them into whole messages. */
export class MessageReader {
  #buffer = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  readonly #max_message_bytes: number;

  /** @param max_message_bytes the largest message accepted; a longer one is a {@linkcode ProtocolError} */
  constructor(max_message_bytes: number) {
    this.#max_message_bytes = max_message_bytes;
  }

  /** Appends bytes read from the socket. */
  push(bytes: Uint8Array): void {
    if (this.#end + bytes.length > this.#buffer.length) {
      const needed = this.#end - this.#start + bytes.length;
      const next = needed > this.#buffer.length / 2 ? new Uint8Array(Math.max(needed * 2, 64 * 1024)) : this.#buffer;
      next.set(this.#buffer.subarray(this.#start, this.#end), 0);
      this.#end -= this.#start;
      this.#start = 0;
      this.#buffer = next;
    }
    this.#buffer.set(bytes, this.#end);
    this.#end += bytes.length;
  }

  /** Bytes buffered and not yet taken. */
  get buffered_bytes(): number {
    return this.#end - this.#start;
  }

  /** A copy of the first `n` buffered bytes (fewer when fewer are buffered), left in place. */
  peek(n: number): Uint8Array {
    return this.#buffer.slice(this.#start, Math.min(this.#end, this.#start + n));
  }

  /** Every buffered byte, taken. */
  takeBuffered(): Uint8Array {
    const bytes = this.#buffer.slice(this.#start, this.#end);
    this.#start = this.#end = 0;
    return bytes;
  }

  /** The startup packet (length-prefixed, no type byte), or undefined until it is whole. */
  takeStartup(): StartupPacket | undefined {
    if (this.buffered_bytes < 4) return undefined;
    const length = new DataView(this.#buffer.buffer, this.#start, 4).getInt32(0);
    if (length < 8 || length > STARTUP_MAX_BYTES) throw new InvalidStartupError(length);
    const whole = this.#take(0);
    if (whole === undefined) return undefined;
    if (whole.length < 4) throw new ProtocolError("startup packet too short");
    const view = new DataView(whole.buffer, whole.byteOffset, whole.byteLength);
    const code = view.getInt32(0);
    if (code === SSL_REQUEST) return { kind: "ssl" };
    if (code === GSSENC_REQUEST) return { kind: "gssenc" };
    if (code === CANCEL_REQUEST) {
      if (whole.length !== 12) throw new ProtocolError("malformed CancelRequest");
      return { kind: "cancel", pid: view.getInt32(4), secret: view.getInt32(8) };
    }
    if (code !== PROTOCOL_V3) {
      throw new ProtocolError(`unsupported protocol ${code >> 16}.${code & 0xffff}: this server speaks 3.0`);
    }
    return { kind: "startup", params: parsePairs(whole.subarray(4)) };
  }

  /** The next whole frontend message, or undefined until one is buffered. */
  takeMessage(): FrontendMessage | undefined {
    if (this.buffered_bytes < 1) return undefined;
    const type = String.fromCharCode(this.#buffer[this.#start]);
    const body = this.#take(1);
    return body === undefined ? undefined : { type, body };
  }

  /** A length-prefixed packet after `prefix` bytes, consumed; undefined when not whole yet. */
  #take(prefix: number): Uint8Array | undefined {
    if (this.buffered_bytes < prefix + 4) return undefined;
    const at = this.#start + prefix;
    const length = new DataView(this.#buffer.buffer, at, 4).getInt32(0);
    if (length < 4) throw new ProtocolError(`message length ${length} is below 4`);
    if (length > this.#max_message_bytes) {
      throw new ProtocolError(`message of ${length} bytes exceeds the limit of ${this.#max_message_bytes}`);
    }
    if (this.buffered_bytes < prefix + length) return undefined;
    const body = this.#buffer.slice(at + 4, at + length);
    this.#start = at + length;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return body;
  }
}

function parsePairs(bytes: Uint8Array): Record<string, string> {
  const params: Record<string, string> = {};
  let at = 0;
  for (let pairs = 0; pairs < 64; pairs++) {
    const [key, after_key] = readCString(bytes, at);
    if (key === "") return params;
    const [value, after_value] = readCString(bytes, after_key);
    params[key] = value;
    at = after_value;
  }
  throw new ProtocolError("too many startup parameters");
}

/** A NUL-terminated UTF-8 string at `at`, and the offset after its NUL. */
export function readCString(bytes: Uint8Array, at: number): [string, number] {
  const end = bytes.indexOf(0, at);
  if (end < 0) throw new ProtocolError("string without its terminating NUL");
  try {
    return [decoder.decode(bytes.subarray(at, end)), end + 1];
  } catch {
    throw new ProtocolError("string is not valid UTF-8");
  }
}

/** A backend message: type letter, length, body. */
export function backendMessage(type: string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}

/** NUL-terminated strings, concatenated. */
export function cStrings(...parts: string[]): Uint8Array {
  return encoder.encode(parts.map((part) => part + "\0").join(""));
}

/** AuthenticationOk. */
export function authenticationOk(): Uint8Array {
  return backendMessage("R", new Uint8Array(4));
}

/** ParameterStatus. */
export function parameterStatus(name: string, value: string): Uint8Array {
  return backendMessage("S", cStrings(name, value));
}

/** BackendKeyData, for CancelRequest. */
export function backendKeyData(pid: number, secret: number): Uint8Array {
  const body = new Uint8Array(8);
  const view = new DataView(body.buffer);
  view.setInt32(0, pid);
  view.setInt32(4, secret);
  return backendMessage("K", body);
}

/** ReadyForQuery with a transaction status (`I`, `T` or `E`). */
export function readyForQuery(status: string): Uint8Array {
  return backendMessage("Z", encoder.encode(status));
}

/** ErrorResponse (or NoticeResponse with `type` "N"): severity, SQLSTATE, message, optional hint. */
export function errorResponse(
  severity: string,
  sqlstate: string,
  message: string,
  hint?: string,
  type = "E",
): Uint8Array {
  const fields = ["S" + severity, "V" + severity, "C" + sqlstate, "M" + message, ...hint ? ["H" + hint] : []];
  return backendMessage(type, encoder.encode(fields.map((f) => f + "\0").join("") + "\0"));
}

/** Concatenates byte arrays. */
export function concatBytes(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Calls `visit` for each whole backend message in `bytes` (type letter, body); stops when it returns false. */
export function eachBackendMessage(bytes: Uint8Array, visit: (type: string, body: Uint8Array, at: number) => boolean) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at + 5 <= bytes.length;) {
    const length = view.getInt32(at + 1);
    const body = bytes.subarray(at + 5, at + 1 + length);
    if (!visit(String.fromCharCode(bytes[at]), body, at)) return;
    at += 1 + length;
  }
}

/** The DataRows of a reply, each column as text (undefined for NULL): for the server's own small queries. */
export function textRows(reply: Uint8Array): (string | undefined)[][] {
  const rows: (string | undefined)[][] = [];
  eachBackendMessage(reply, (type, body) => {
    if (type !== "D") return true;
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const columns: (string | undefined)[] = [];
    for (let i = 0, at = 2; i < view.getInt16(0) && at + 4 <= body.length; i++) {
      const length = view.getInt32(at);
      columns.push(length < 0 ? undefined : decoder.decode(body.subarray(at + 4, at + 4 + length)));
      at += 4 + Math.max(0, length);
    }
    rows.push(columns);
    return true;
  });
  return rows;
}
