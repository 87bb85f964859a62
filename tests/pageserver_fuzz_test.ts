// Hundreds of connections of random bytes, damaged frames and valid frames of random requests against a real
// pageserver: each gets error replies or a clean close, never a hang and never a malformed or misaddressed reply;
// afterwards a compute-like client still works and the tenant's files, pages and WAL are unchanged. Seeded: a
// failure prints its seed, and TARN_FUZZ_SEED replays it.
import assert from "node:assert/strict";
import { crc32c } from "../src/crc32c.ts";
import { LSN_MAX } from "../src/lsn.ts";
import { encodeFrame, FRAME_HEADER_BYTES } from "../src/pageserver/frames.ts";
import {
  type BranchInfo,
  encodeMessage,
  type FileEntry,
  MAX_PAGES_PER_REQUEST,
  type PutRecord,
  type Reply,
  type Request,
  type RequestBody,
} from "../src/pageserver/messages.ts";
import { PageserverServer } from "../src/pageserver/server.ts";
import { BLOCK_SIZE, type PageValue } from "../src/storage/page_api.ts";
import { httpJson, PageWire } from "./fixtures/page_wire.ts";
import { prng } from "./fixtures/prng.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const SEED = Number(Deno.env.get("TARN_FUZZ_SEED") ?? Date.now() % 1_000_000);
const CONNECTIONS = 200;
const PARALLEL = 16;
/** How long a connection the client has half-closed may take to be answered and closed. */
const TIMEOUT_MS = 5000;
/** The term the test's own compute attaches with: the fuzz never sends a write of this term, nor a higher attach. */
const TERM = 7n;

/** The reply type of a request when it is not refused (`put` and `wal` get none), where it is not `<type>_ok`. */
const REPLY_TO: Partial<Record<Request["type"], string>> = {
  get_pages: "pages",
  list_files: "files",
  persist: "persisted",
  read_wal: "wal_bytes",
  put: "nothing",
  wal: "nothing",
};

/** What the tenant holds: its branch, its files, a checksum of every page of them, and its WAL. */
type Snapshot = { info: BranchInfo; files: FileEntry[]; page_sums: string[]; wal_sum: number };

async function snapshot(wire: PageWire): Promise<Snapshot> {
  const main = await wire.request({ type: "branch_info", branch: "main" });
  assert.ok(main.type === "branch_info_ok");
  const { info, info: { timeline_id } } = main;
  const files: FileEntry[] = [];
  for (let after = "", more = true; more;) {
    const reply = await wire.request({ type: "list_files", timeline_id, lsn: LSN_MAX, after });
    assert.ok(reply.type === "files");
    files.push(...reply.entries);
    [after, more] = [reply.entries.at(-1)?.path ?? after, reply.more];
  }
  const keys = files.flatMap(({ path, meta }) => {
    const blocks = meta.kind === "file" ? Math.ceil(meta.size_bytes / BLOCK_SIZE) : 0;
    return Array.from({ length: blocks }, (_, blkno) => ({ path, blkno, not_modified_since: 0n }));
  });
  const page_sums: string[] = [];
  for (let i = 0; i < keys.length; i += MAX_PAGES_PER_REQUEST) {
    const batch = keys.slice(i, i + MAX_PAGES_PER_REQUEST);
    const reply = await wire.request({ type: "get_pages", timeline_id, lsn: LSN_MAX, keys: batch });
    assert.ok(reply.type === "pages");
    reply.pages.forEach((p, j) =>
      page_sums.push(`${batch[j].path}#${batch[j].blkno}:${typeof p === "string" ? p : crc32c(p)}`)
    );
  }
  const range = { lsn_start: info.wal_start_lsn, lsn_end: info.wal_end_lsn };
  const wal = await wire.request({ type: "read_wal", timeline_id, ...range });
  assert.ok(wal.type === "wal_bytes");
  return { info, files, page_sums, wal_sum: crc32c(wal.bytes) };
}

/** Random choices over what the tenant really holds. */
class Fuzzer {
  readonly random: () => number;
  readonly #before: Snapshot;
  /** The real timeline. */
  readonly real: string;

  constructor(seed: number, before: Snapshot) {
    this.random = prng(seed);
    this.#before = before;
    this.real = before.info.timeline_id;
  }

  int(below: number): number {
    return Math.floor(this.random() * below);
  }

  pick<T>(choices: readonly T[]): T {
    return choices[this.int(choices.length)];
  }

  bytes(max: number): Uint8Array {
    return Uint8Array.from({ length: 1 + this.int(max) }, () => this.int(256));
  }

  u64(): bigint {
    return (BigInt(this.int(2 ** 32)) << 32n) | BigInt(this.int(2 ** 32));
  }

  text(): string {
    const real = this.#before.files.map((f) => f.path);
    return this.pick([
      () => this.pick(real),
      () => "",
      () => "no/such/file",
      () => "../../etc/passwd",
      () => "ü✓日本\u0000",
      () => "x".repeat(1 + this.int(4000)),
      () => String.fromCharCode(...this.bytes(40)),
    ])();
  }

  timeline(): string {
    const random_id = Array.from({ length: 16 }, () => this.int(256).toString(16).padStart(2, "0")).join("");
    return this.random() < 0.6 ? this.real : random_id;
  }

  lsn(): bigint {
    const { wal_start_lsn: start, wal_end_lsn: end } = this.#before.info;
    return this.pick([0n, 1n, start, end, end + 1n, (start + end) / 2n, LSN_MAX, LSN_MAX - 1n, 1n << 63n, this.u64()]);
  }

  /** A term that the real timeline refuses for a write. */
  staleTerm(): bigint {
    return this.pick([0n, 1n, TERM - 1n, TERM + 1n, 1000n, LSN_MAX, this.u64() | (1n << 40n)]);
  }

  record(): PutRecord {
    const [path, lsn, blkno, roll] = [this.text().slice(0, 200), this.lsn(), this.int(100), this.random()];
    const ranges = Array.from(
      { length: this.int(4) },
      () => ({ offset: this.int(BLOCK_SIZE - 64), bytes: this.bytes(64) }),
    );
    const value: PageValue = roll < 0.3
      ? { kind: "image", bytes: new Uint8Array(BLOCK_SIZE) }
      : { kind: "delta", ranges };
    if (roll < 0.6) return { kind: "page", path, blkno, lsn, value };
    const kind = this.pick(["create", "unlink", "mkdir", "rmdir", "resize"] as const);
    return { kind: "event", path, lsn, event: kind === "resize" ? { kind, size_bytes: this.int(2 ** 31) } : { kind } };
  }

  /** A valid request with random fields; never one that may change the real timeline. */
  request(): RequestBody {
    const timeline_id = this.timeline();
    const real = timeline_id === this.real;
    const [lsn, lsn_end, text, term] = [this.lsn(), this.lsn(), this.text(), real ? this.staleTerm() : this.u64()];
    const key = () => ({
      path: this.text().slice(0, 300),
      blkno: this.pick([0, 1, this.int(1000), 0xffff_ffff]),
      not_modified_since: this.random() < 0.98 ? 0n : this.lsn(),
    });
    const key_count = this.random() < 0.05 ? MAX_PAGES_PER_REQUEST + 1 + this.int(100) : this.int(40);
    return this.pick<() => RequestBody>([
      () => ({ type: "branch_info", branch: this.pick(["main", "nope", "", "../main", text.slice(0, 100)]) }),
      () => ({ type: "attach", timeline_id, term: real ? BigInt(this.int(Number(TERM) + 1)) : term, wal_end_lsn: lsn }),
      () => ({ type: "get_pages", timeline_id, lsn, keys: Array.from({ length: key_count }, key) }),
      () => ({ type: "stat", timeline_id, lsn, path: text }),
      () => ({ type: "readdir", timeline_id, lsn, path: text }),
      () => ({ type: "list_files", timeline_id, lsn, after: text }),
      () => ({ type: "put", timeline_id, term, records: Array.from({ length: this.int(6) }, () => this.record()) }),
      () => ({ type: "wal", timeline_id, term, lsn_start: lsn, commit_lsn: lsn_end, bytes: this.bytes(2000) }),
      () => ({ type: "persist", timeline_id, term }),
      () => ({ type: "read_wal", timeline_id, lsn_start: lsn, lsn_end }),
      () => ({ type: "hello", tenant: this.pick(["fuzz", "nope", "", "bad name!"]), create: false }),
    ])();
  }
}

/** One connection's plan: the bytes it sends, the requests among them by id, and how it ends. */
type Plan = { what: string[]; bytes: Uint8Array[]; sent: Map<number, Request>; damaged: Set<number>; end: End };
/** Half-close and read to the end; close at once; read to the end without closing (the server must answer). */
type End = "half_close" | "close" | "wait";

function plan(f: Fuzzer): Plan {
  const p: Plan = { what: [], bytes: [], sent: new Map(), damaged: new Set(), end: "half_close" };
  let id = 1;
  const request = (body: RequestBody, what: string = body.type) => {
    const message = { ...body, id: id++ } as Request;
    p.sent.set(message.id, message);
    p.what.push(what);
    p.bytes.push(encodeMessage(message));
  };
  const roll = f.random();
  if (roll < 0.08) {
    p.what.push("random bytes");
    p.bytes.push(f.bytes(300));
    return p;
  }
  if (roll < 0.14) {
    request(f.request(), "request before hello");
    return p;
  }
  if (roll > 0.95) {
    // An oversize body announced: answered at once, without the client closing its side.
    if (f.random() < 0.5) request({ type: "hello", tenant: "fuzz", create: false });
    const header = encodeFrame(f.int(32), new Uint8Array(0)).subarray(0, FRAME_HEADER_BYTES);
    new DataView(header.buffer, header.byteOffset).setUint32(8, 16 * 1024 * 1024 + 1 + f.int(2 ** 31), true);
    p.what.push("oversize header");
    p.bytes.push(header);
    p.end = "wait";
    return p;
  }
  request({ type: "hello", tenant: "fuzz", create: false });
  // Some connections are mostly valid requests (answered one by one), some die early of damage.
  const damage = f.pick([0, 0.03, 0.1, 0.4]);
  const items = 1 + f.int(40);
  for (let i = 0; i < items; i++) {
    if (f.random() >= damage) {
      request(f.request());
      continue;
    }
    const kind = f.random();
    if (kind < 0.7) {
      // A damaged frame: bytes overwritten, and (for requests that cannot write to the real timeline) the CRC fixed
      // so that the body's fields, not the checksum, are what the server rejects.
      const body = f.request();
      const message = { ...body, id: id++ } as Request;
      const original = encodeMessage(message);
      const frame = original.slice();
      const may_write = ["attach", "put", "wal", "persist"].includes(body.type) &&
        (body as { timeline_id: string }).timeline_id === f.real;
      const fix = kind >= 0.25 && !may_write;
      const from = fix ? FRAME_HEADER_BYTES + 4 : 0;
      const to = frame.length - (fix ? 4 : 0);
      for (let n = 1 + f.int(3); n > 0 && to > from; n--) frame[from + f.int(to - from)] = f.int(256);
      if (fix) {
        new DataView(frame.buffer).setUint32(frame.length - 4, crc32c(frame.subarray(0, frame.length - 4)), true);
      }
      // A damaged frame may be answered as the request it now is (or, unchanged by chance, as the original).
      if (fix || frame.every((b, i) => b === original[i])) p.sent.set(message.id, message);
      p.damaged.add(message.id);
      p.what.push(`${fix ? "crc-fixed " : ""}damaged ${body.type}`);
      p.bytes.push(frame);
    } else if (kind < 0.8) {
      p.what.push("random bytes");
      p.bytes.push(f.bytes(100));
    } else if (kind < 0.9) {
      p.what.push("a reply frame");
      p.bytes.push(encodeMessage({ type: "attach_ok", id: id++, term: TERM }));
    } else {
      p.what.push("a frame of an unknown type");
      p.bytes.push(encodeFrame(f.pick([0, 14, 16, 23, 40, 255]), new Uint8Array(8)));
    }
  }
  if (f.random() < 0.3) {
    const frame = encodeMessage({ ...f.request(), id: id++ } as Request);
    p.what.push("partial frame");
    p.bytes.push(frame.subarray(0, f.int(frame.length)));
    if (f.random() < 0.5) p.end = "close";
  }
  return p;
}

/** Checks what the server answered one connection: replies to requests it sent, in order, each of the right type. */
function check(p: Plan, replies: Reply[]): string[] {
  const internal: string[] = [];
  let last_id = 0;
  replies.forEach((reply, i) => {
    const where = `reply ${i} (${reply.type} to ${reply.id})`;
    if (reply.type === "error" && reply.id === 0) {
      assert.equal(reply.code, "bad_request", `${where}: ${reply.message}`);
      assert.equal(i, replies.length - 1, `${where}: a reply after the protocol error that ends the connection`);
      return;
    }
    const request = p.sent.get(reply.id);
    assert.ok(request !== undefined, `${where}: no request of that id was sent`);
    assert.ok(reply.id > last_id, `${where}: out of order or twice (after ${last_id})`);
    last_id = reply.id;
    if (reply.type === "error") {
      if (reply.code === "internal") internal.push(`${request.type}: ${reply.message}`);
      return;
    }
    assert.equal(
      reply.type,
      REPLY_TO[request.type] ?? `${request.type}_ok`,
      `${where}: the answer to a ${request.type}`,
    );
    if (reply.type === "pages" && request.type === "get_pages" && !p.damaged.has(reply.id)) {
      assert.equal(reply.pages.length, request.keys.length, `${where}: pages for ${request.keys.length} keys`);
    }
  });
  return internal;
}

/** Runs one connection's plan; the replies it got (none when the client closed first). */
async function run(port: number, p: Plan, f: Fuzzer): Promise<Reply[]> {
  const wire = await PageWire.connect(port);
  try {
    const reading = p.end === "close" ? Promise.resolve([]) : wire.drain(TIMEOUT_MS);
    reading.catch(() => {}); // awaited below; the writes may fail first
    const stream = new Uint8Array(p.bytes.reduce((n, b) => n + b.length, 0));
    p.bytes.reduce((at, b) => (stream.set(b, at), at + b.length), 0);
    try {
      // Cut anyhow, so that frames straddle reads on the server.
      for (let at = 0; at < stream.length;) {
        const size = Math.min(stream.length - at, 1 + f.int(f.random() < 0.3 ? 16 : 70_000));
        await wire.send(stream.subarray(at, at + size));
        at += size;
      }
      if (p.end === "half_close") await wire.conn.closeWrite();
    } catch (error) {
      // The server closes a connection as soon as it sees a malformed frame.
      if (!(error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset)) throw error;
    }
    return await reading;
  } finally {
    wire.close();
  }
}

/** Sends junk to the HTTP side and reads until the server closes, or fails after `TIMEOUT_MS`. */
async function httpJunk(port: number, bytes: Uint8Array): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let timed_out = false;
  const timer = setTimeout(() => (timed_out = true, conn.close()), TIMEOUT_MS); // the read below then throws
  try {
    await conn.write(bytes);
    await conn.closeWrite();
    for (const buffer = new Uint8Array(4096); (await conn.read(buffer)) !== null;);
  } catch (error) {
    throw timed_out ? new Error(`the pageserver did not close within ${TIMEOUT_MS} ms`) : error;
  } finally {
    clearTimeout(timer);
    if (!timed_out) conn.close();
  }
}

Deno.test(`pageserver fuzz: ${CONNECTIONS} connections of random and damaged frames (seed ${SEED})`, () =>
  withTempDir(async (dir) => {
    const events: { event: string; fields: Record<string, unknown> }[] = [];
    const log = (event: string, fields: Record<string, unknown>) => void events.push({ event, fields });
    const server = await PageserverServer.start({ dir, hostname: "127.0.0.1", port: 0, log });
    const good = await PageWire.connect(server.port);
    try {
      // Creating the tenant imports an initdb template: seconds on a loaded machine.
      assert.equal((await good.request({ type: "hello", tenant: "fuzz", create: true }, 60_000)).type, "hello_ok");
      const main = await good.request({ type: "branch_info", branch: "main" });
      assert.ok(main.type === "branch_info_ok");
      const { timeline_id, wal_end_lsn } = main.info;
      const attached = await good.request({ type: "attach", timeline_id, term: TERM, wal_end_lsn });
      assert.equal(attached.type, "attach_ok");
      const before = await snapshot(good);
      assert.ok(before.files.length > 100 && before.page_sums.length > 100, "the tenant holds initdb's files");

      const f = new Fuzzer(SEED, before);
      const internal: string[] = [];
      const answered = new Map<string, number>();
      const count = (replies: Reply[]) => {
        for (const r of replies) {
          const key = r.type === "error" ? `error ${r.code}` : r.type;
          answered.set(key, (answered.get(key) ?? 0) + 1);
        }
        return replies;
      };
      for (let c = 0; c < CONNECTIONS; c += PARALLEL) {
        const batch = Array.from({ length: Math.min(PARALLEL, CONNECTIONS - c) }, (_, i) => {
          const n = c + i;
          if (f.random() < 0.03) {
            const head = f.pick(["GET /status HTTP/1.1\r\n", "GET /nope HTTP/1.1\r\n\r\n", "DELE", "PUT /v1"]);
            return httpJunk(server.port, new Uint8Array([...new TextEncoder().encode(head), ...f.bytes(50)]))
              .catch((error) => {
                throw new Error(`connection ${n} (seed ${SEED}), HTTP junk: ${error}`, { cause: error });
              });
          }
          const p = plan(f);
          return run(server.port, p, f).then((replies) => internal.push(...check(p, count(replies)))).catch(
            (error) => {
              throw new Error(`connection ${n} (seed ${SEED}), sent ${p.what.join(", ")}: ${error}`, { cause: error });
            },
          );
        });
        // Every connection of the batch ends before a failure is thrown: nothing is left running.
        const failed = (await Promise.allSettled(batch)).find((r) => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
      }

      // The server still serves: a new connection's hello, the same files, pages and WAL, and HTTP.
      const after_wire = await PageWire.connect(server.port);
      try {
        assert.equal((await after_wire.request({ type: "hello", tenant: "fuzz", create: false })).type, "hello_ok");
        const after = await snapshot(after_wire);
        assert.deepEqual(after.info, before.info, `branch info changed (seed ${SEED})`);
        assert.deepEqual(after.files, before.files, `files changed (seed ${SEED})`);
        assert.deepEqual(after.page_sums, before.page_sums, `pages changed (seed ${SEED})`);
        assert.equal(after.wal_sum, before.wal_sum, `WAL changed (seed ${SEED})`);
      } finally {
        after_wire.close();
      }
      const status = await httpJson(server.port, "GET", "/status");
      assert.equal(status.status, 200);
      const tenants = (status.body as { tenants: { name: string }[] }).tenants.map((t) => t.name);
      assert.deepEqual(tenants, ["fuzz"]);
      assert.deepEqual(internal, [], `untyped (internal) error replies (seed ${SEED})`);
      const crashes = events.filter((e) => e.event === "connection_error");
      assert.deepEqual(crashes, [], `connections ended by unexpected exceptions (seed ${SEED})`);
      console.log(`seed ${SEED}, replies: ${[...answered].sort().map(([k, n]) => `${k} ${n}`).join(", ")}`);
    } finally {
      good.close();
      await server.close();
    }
  }));
