// The pageserver protocol's frames and messages: every message survives a round trip through a stream cut anyhow;
// any damage (a flipped bit, a short body, a count that does not fit, an unknown type, an oversize length) is a
// PageProtocolError, never a different message.
import assert from "node:assert/strict";
import { LSN_MAX } from "../src/lsn.ts";
import { FieldWriter, MAX_STRING_BYTES } from "../src/pageserver/fields.ts";
import {
  encodeFrame,
  type Frame,
  FRAME_HEADER_BYTES,
  FrameSplitter,
  MAX_FRAME_BODY_BYTES,
  PageProtocolError,
} from "../src/pageserver/frames.ts";
import {
  decodeMessage,
  encodeMessage,
  ERROR_CODES,
  type ErrorCode,
  MAX_FILES_PER_REPLY,
  MAX_PAGES_PER_REQUEST,
  type Message,
} from "../src/pageserver/messages.ts";
import { BLOCK_SIZE } from "../src/storage/page_api.ts";
import { prng } from "./fixtures/prng.ts";

const T1 = "0123456789abcdef0123456789abcdef";
const T2 = "ffffffffffffffff0000000000000001";
const page = (seed: number) => Uint8Array.from({ length: BLOCK_SIZE }, (_, i) => (i * 31 + seed) & 0xff);

/** At least one of every message type, with edge values (empty lists, u32/u64 maxima, non-ASCII text). */
const SAMPLES: Message[] = [
  { type: "hello", id: 1, tenant: "acme", create: true },
  { type: "hello", id: 0xffff_ffff, tenant: "", create: false },
  { type: "hello_ok", id: 1, tenant_id: T1, segment_size: 16 * 1024 * 1024 },
  { type: "branch_info", id: 2, branch: "feature/ünïcode-✓" },
  {
    type: "branch_info_ok",
    id: 2,
    info: {
      timeline_id: T2,
      branch_lsn: 0x100_0000n,
      wal_start_lsn: 0x100_0028n,
      wal_end_lsn: LSN_MAX,
      disk_consistent_lsn: 0n,
      term: 0xffff_ffff_ffff_fffen,
    },
  },
  { type: "attach", id: 3, timeline_id: T1, term: 7n, wal_end_lsn: 0x1_6b3_7a8n },
  { type: "attach_ok", id: 3, term: 7n },
  {
    type: "get_pages",
    id: 4,
    timeline_id: T1,
    lsn: LSN_MAX,
    keys: [
      { path: "base/5/1259", blkno: 0, not_modified_since: 0n },
      { path: "global/pg_control", blkno: 0xffff_ffff, not_modified_since: 0x1_0000n },
    ],
  },
  { type: "get_pages", id: 5, timeline_id: T1, lsn: 1n, keys: [] },
  {
    type: "get_pages",
    id: 6,
    timeline_id: T2,
    lsn: 9n,
    keys: Array.from(
      { length: MAX_PAGES_PER_REQUEST },
      (_, i) => ({ path: `f${i}`, blkno: i, not_modified_since: 0n }),
    ),
  },
  { type: "pages", id: 4, pages: [page(1), "zero", "absent", page(2)] },
  { type: "pages", id: 5, pages: [] },
  { type: "stat", id: 7, timeline_id: T1, lsn: 0x200n, path: "base/5" },
  { type: "stat_ok", id: 7, meta: undefined },
  { type: "stat_ok", id: 7, meta: { kind: "file", size_bytes: Number.MAX_SAFE_INTEGER } },
  { type: "stat_ok", id: 7, meta: { kind: "dir" } },
  { type: "readdir", id: 8, timeline_id: T1, lsn: LSN_MAX, path: "" },
  { type: "readdir_ok", id: 8, names: ["1259", "1259_fsm", "PG_VERSION", "日本"] },
  { type: "readdir_ok", id: 8, names: [] },
  { type: "list_files", id: 9, timeline_id: T2, lsn: LSN_MAX, after: "base/5/1259" },
  {
    type: "files",
    id: 9,
    more: true,
    entries: [{ path: "base", meta: { kind: "dir" } }, {
      path: "base/5/1259",
      meta: { kind: "file", size_bytes: 8192 },
    }],
  },
  { type: "files", id: 9, more: false, entries: [] },
  {
    type: "put",
    id: 10,
    timeline_id: T1,
    term: 7n,
    records: [
      { kind: "page", path: "base/5/16384", blkno: 3, lsn: 0x300n, value: { kind: "image", bytes: page(3) } },
      {
        kind: "page",
        path: "base/5/16384",
        blkno: 3,
        lsn: 0x310n,
        value: {
          kind: "delta",
          ranges: [{ offset: 0, bytes: new Uint8Array([1, 2, 3]) }, {
            offset: BLOCK_SIZE - 2,
            bytes: new Uint8Array([9, 9]),
          }, { offset: 100, bytes: new Uint8Array(0) }],
        },
      },
      { kind: "page", path: "x", blkno: 0, lsn: 1n, value: { kind: "delta", ranges: [] } },
      { kind: "event", path: "base/5/16384", lsn: 0x320n, event: { kind: "create" } },
      { kind: "event", path: "base/5/16384", lsn: 0x321n, event: { kind: "resize", size_bytes: 2 ** 40 } },
      { kind: "event", path: "base/5/16384", lsn: 0x322n, event: { kind: "unlink" } },
      { kind: "event", path: "base/6", lsn: 0x323n, event: { kind: "mkdir" } },
      { kind: "event", path: "base/6", lsn: 0x324n, event: { kind: "rmdir" } },
    ],
  },
  { type: "put", id: 11, timeline_id: T1, term: 1n, records: [] },
  {
    type: "wal",
    id: 12,
    timeline_id: T1,
    term: 7n,
    lsn_start: 0x400n,
    commit_lsn: 0x3ffn,
    bytes: Uint8Array.from({ length: 3000 }, (_, i) => i & 0xff),
  },
  { type: "wal", id: 13, timeline_id: T1, term: 7n, lsn_start: 0n, commit_lsn: 0n, bytes: new Uint8Array(0) },
  { type: "persist", id: 14, timeline_id: T1, term: 7n },
  { type: "persisted", id: 14, disk_consistent_lsn: 0x3ffn, wal_end_lsn: 0x400n },
  { type: "read_wal", id: 15, timeline_id: T2, lsn_start: 0x100n, lsn_end: 0x200n },
  { type: "wal_bytes", id: 15, bytes: Uint8Array.from({ length: 256 }, (_, i) => 255 - i) },
  { type: "wal_bytes", id: 15, bytes: new Uint8Array(0) },
  ...Object.keys(ERROR_CODES).map((code, i): Message => ({
    type: "error",
    id: 16 + i,
    code: code as ErrorCode,
    message: `${code}: something named "x" went wrong ✗`,
  })),
];

/** The one frame in `bytes`, as the splitter returns it. */
function frameOf(bytes: Uint8Array): Frame {
  const frames = new FrameSplitter().push(bytes);
  assert.equal(frames.length, 1);
  return frames[0];
}

/** Runs `fn` and checks that it throws a PageProtocolError (and nothing else, and does not return). */
function rejects(fn: () => unknown, what: string): void {
  let result: unknown;
  try {
    result = fn();
  } catch (error) {
    assert.ok(error instanceof PageProtocolError, `${what}: threw ${error} instead of a PageProtocolError`);
    return;
  }
  assert.fail(`${what}: accepted, giving ${JSON.stringify(result, (_, v) => typeof v === "bigint" ? `${v}n` : v)}`);
}

/** A frame of `type` whose body `write` fills. */
function handmade(type: number, write: (w: FieldWriter) => void): Frame {
  const w = new FieldWriter();
  write(w);
  return { type, body: w.finish().slice() };
}

Deno.test("codec: the samples cover every message type", () => {
  const types = new Set(SAMPLES.map((m) => m.type));
  assert.equal(types.size, 21);
  for (let code = 0; code < 256; code++) {
    let known = true;
    try {
      decodeMessage({ type: code, body: new Uint8Array(0) });
    } catch (error) {
      known = !(error as Error).message.includes("unknown message type");
    }
    assert.equal(known, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 17, 18, 19, 20, 21, 22, 31].includes(code));
  }
});

Deno.test("codec: every message survives encodeMessage, a FrameSplitter fed byte by byte, and decodeMessage", () => {
  const splitter = new FrameSplitter();
  const decoded: Message[] = [];
  for (const message of SAMPLES) {
    const bytes = encodeMessage(message);
    for (let i = 0; i < bytes.length; i++) {
      const frames = splitter.push(bytes.subarray(i, i + 1));
      assert.equal(frames.length, i === bytes.length - 1 ? 1 : 0, `${message.type}: a frame after byte ${i}`);
      decoded.push(...frames.map(decodeMessage));
    }
  }
  assert.deepEqual(decoded, SAMPLES);
});

Deno.test("codec: a stream of every message cut in random chunks decodes to the same messages (20 seeds)", () => {
  const frames = SAMPLES.map(encodeMessage);
  const stream = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  frames.reduce((at, f) => (stream.set(f, at), at + f.length), 0);
  for (let seed = 1; seed <= 20; seed++) {
    const random = prng(seed);
    const splitter = new FrameSplitter();
    const decoded: Message[] = [];
    for (let at = 0; at < stream.length;) {
      const size = Math.min(stream.length - at, 1 + Math.floor(random() ** 3 * 20_000));
      decoded.push(...splitter.push(stream.subarray(at, at + size)).map(decodeMessage));
      at += size;
    }
    assert.deepEqual(decoded, SAMPLES, `seed ${seed}`);
  }
});

Deno.test("codec: a flipped bit anywhere in a frame is rejected, never decoded as a message", () => {
  const random = prng(7);
  for (const message of SAMPLES) {
    const bytes = encodeMessage(message);
    // Every bit of small frames; of big ones, the header and trailer, and 400 random bits of the body.
    const bits = bytes.length <= 600 ? Array.from({ length: bytes.length * 8 }, (_, i) => i) : [
      ...Array.from({ length: FRAME_HEADER_BYTES * 8 }, (_, i) => i),
      ...Array.from({ length: 32 }, (_, i) => (bytes.length - 4) * 8 + i),
      ...Array.from({ length: 400 }, () => Math.floor(random() * bytes.length * 8)),
    ];
    for (const bit of bits) {
      const flipped = bytes.slice();
      flipped[bit >> 3] ^= 1 << (bit & 7);
      const what = `${message.type} (id ${message.id}) with bit ${bit} flipped`;
      rejects(() => {
        const splitter = new FrameSplitter();
        const frames = splitter.push(flipped);
        if (frames.length > 0) return frames.map(decodeMessage);
        // A length made larger waits for more bytes: whatever comes next completes the frame, and its CRC fails.
        const announced = new DataView(flipped.buffer).getUint32(8, true);
        const more = splitter.push(new Uint8Array(FRAME_HEADER_BYTES + announced + 4 - flipped.length));
        return more.map(decodeMessage);
      }, what);
    }
  }
});

Deno.test("codec: every truncated or extended body is rejected", () => {
  for (const message of SAMPLES) {
    const { type, body } = frameOf(encodeMessage(message));
    const lengths = body.length <= 2000
      ? Array.from({ length: body.length }, (_, i) => i)
      : [...Array.from({ length: 300 }, (_, i) => i), ...Array.from({ length: 300 }, (_, i) => body.length - 300 + i)];
    for (const length of lengths) {
      rejects(
        () => decodeMessage(frameOf(encodeFrame(type, body.subarray(0, length)))),
        `${message.type} cut to ${length}`,
      );
    }
    const longer = new Uint8Array(body.length + 1);
    longer.set(body);
    rejects(() => decodeMessage({ type, body: longer }), `${message.type} with a byte more`);
  }
});

Deno.test("codec: unknown type codes, and header damage, are rejected", () => {
  const body = new FieldWriter().u32(1).str("acme").u8(0).finish();
  for (const type of [0, 14, 16, 23, 30, 32, 99, 255]) {
    rejects(() => decodeMessage(frameOf(encodeFrame(type, body))), `type code ${type}`);
  }
  const good = encodeFrame(1, body);
  const damaged = (at: number, value: number) => {
    const bytes = good.slice();
    bytes[at] = value;
    return bytes;
  };
  rejects(() => new FrameSplitter().push(damaged(0, 0x55)), "another magic");
  rejects(() => new FrameSplitter().push(damaged(4, 2)), "version 2");
  rejects(() => new FrameSplitter().push(damaged(4, 0)), "version 0");
  rejects(() => new FrameSplitter().push(damaged(6, 1)), "flags 1");
  rejects(() => new FrameSplitter().push(damaged(7, 0x80)), "flags 0x8000");
  rejects(() => new FrameSplitter().push(damaged(good.length - 1, good[good.length - 1] ^ 0xff)), "a wrong CRC");
});

Deno.test("codec: counts larger than the body, over-limit counts and bad field values are rejected", () => {
  const key = (w: FieldWriter) => w.str("base/1/1").u32(0).u64(0n);
  const cases: [string, Frame][] = [
    ["get_pages: 5 keys announced, 1 sent", handmade(7, (w) => key(w.u32(1).timeline(T1).u64(1n).u16(5)))],
    ["get_pages: 65535 keys announced, none sent", handmade(7, (w) => w.u32(1).timeline(T1).u64(1n).u16(0xffff))],
    ["pages: 3 announced, 1 sent", handmade(8, (w) => w.u32(1).u16(3).u8(1))],
    ["pages: a page of 100 bytes", handmade(8, (w) => w.u32(1).u16(1).u8(0).raw(new Uint8Array(100)))],
    ["pages: page status 3", handmade(8, (w) => w.u32(1).u16(1).u8(3))],
    ["readdir_ok: 2^32-1 names announced", handmade(12, (w) => w.u32(1).u32(0xffff_ffff).str("a"))],
    ["readdir_ok: 3 names announced, 2 sent", handmade(12, (w) => w.u32(1).u32(3).str("a").str("b").u8(0))],
    ["files: 10 entries announced, none sent", handmade(22, (w) => w.u32(1).u8(0).u32(10))],
    ["files: an absent entry", handmade(22, (w) => w.u32(1).u8(0).u32(1).str("x").u8(0).u64(0n))],
    ["files: more = 2", handmade(22, (w) => w.u32(1).u8(2).u32(0))],
    ["put: 2^32-1 records announced", handmade(13, (w) => w.u32(1).timeline(T1).u64(1n).u32(0xffff_ffff))],
    [
      "put: 2 records announced, 1 sent",
      handmade(
        13,
        (w) => w.u32(1).timeline(T1).u64(1n).u32(2).u8(2).str("p").u64(1n).u8(0).u64(0n).raw(new Uint8Array(8)),
      ),
    ],
    [
      "put: record kind 3",
      handmade(13, (w) => w.u32(1).timeline(T1).u64(1n).u32(1).u8(3).str("p").u64(1n).u32(0).raw(new Uint8Array(12))),
    ],
    [
      "put: event kind 5",
      handmade(13, (w) => w.u32(1).timeline(T1).u64(1n).u32(1).u8(2).str("p").u64(1n).u8(5).u64(0n)),
    ],
    [
      "put: a resize past 2^53",
      handmade(13, (w) => w.u32(1).timeline(T1).u64(1n).u32(1).u8(2).str("p").u64(1n).u8(1).u64(2n ** 60n)),
    ],
    [
      "put: a delta range past the page",
      handmade(
        13,
        (w) =>
          w.u32(1).timeline(T1).u64(1n).u32(1).u8(1).str("p").u64(1n).u32(0).u16(1).u16(BLOCK_SIZE - 1).u16(2).raw(
            new Uint8Array(2),
          ),
      ),
    ],
    [
      "put: a delta announcing 9 ranges, sending 1",
      handmade(
        13,
        (w) => w.u32(1).timeline(T1).u64(1n).u32(1).u8(1).str("p").u64(1n).u32(0).u16(9).u16(0).u16(1).u8(7),
      ),
    ],
    [
      "put: an image of 8191 bytes",
      handmade(
        13,
        (w) => w.u32(1).timeline(T1).u64(1n).u32(1).u8(0).str("p").u64(1n).u32(0).raw(new Uint8Array(BLOCK_SIZE - 1)),
      ),
    ],
    [
      "wal: 1000 bytes announced, 10 sent",
      handmade(15, (w) => w.u32(1).timeline(T1).u64(1n).u64(0n).u64(0n).u32(1000).raw(new Uint8Array(10))),
    ],
    ["wal_bytes: 2^32-1 bytes announced", handmade(20, (w) => w.u32(1).u32(0xffff_ffff))],
    [
      "hello: a tenant name longer than the limit",
      handmade(1, (w) => w.u32(1).u16(MAX_STRING_BYTES + 1).raw(new Uint8Array(MAX_STRING_BYTES + 1).fill(97)).u8(0)),
    ],
    ["hello: a 10-byte name announced, 3 sent", handmade(1, (w) => w.u32(1).u16(10).raw(new Uint8Array([97, 98, 99])))],
    ["hello: a name that is not UTF-8", handmade(1, (w) => w.u32(1).u16(2).raw(new Uint8Array([0xc3, 0x28])).u8(0))],
    ["hello: create = 2", handmade(1, (w) => w.u32(1).str("acme").u8(2))],
    ["stat_ok: path kind 3", handmade(10, (w) => w.u32(1).u8(3).u64(0n))],
    ["stat_ok: a size past 2^53", handmade(10, (w) => w.u32(1).u8(1).u64(2n ** 63n))],
    ["error: unknown error code 99", handmade(31, (w) => w.u32(1).u16(99).str("x"))],
    ["error: error code 0", handmade(31, (w) => w.u32(1).u16(0).str("x"))],
    ["any: a body shorter than the request id", { type: 1, body: new Uint8Array(3) }],
  ];
  for (const [what, frame] of cases) rejects(() => decodeMessage(frame), what);
});

Deno.test("codec: more keys than MAX_PAGES_PER_REQUEST, or files than MAX_FILES_PER_REPLY, are rejected", () => {
  const keys = (n: number) => Array.from({ length: n }, (_, i) => ({ path: "p", blkno: i, not_modified_since: 0n }));
  const at_limit = encodeMessage({
    type: "get_pages",
    id: 1,
    timeline_id: T1,
    lsn: 1n,
    keys: keys(MAX_PAGES_PER_REQUEST),
  });
  assert.equal((decodeMessage(frameOf(at_limit)) as { keys: unknown[] }).keys.length, MAX_PAGES_PER_REQUEST);
  for (const n of [MAX_PAGES_PER_REQUEST + 1, 1000, 0xffff]) {
    const frame = frameOf(encodeMessage({ type: "get_pages", id: 1, timeline_id: T1, lsn: 1n, keys: keys(n) }));
    rejects(() => decodeMessage(frame), `get_pages with ${n} keys`);
  }
  const entries = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ path: `f${i}`, meta: { kind: "dir" as const } }));
  const full = frameOf(encodeMessage({ type: "files", id: 1, more: true, entries: entries(MAX_FILES_PER_REPLY) }));
  assert.equal((decodeMessage(full) as { entries: unknown[] }).entries.length, MAX_FILES_PER_REPLY);
  const over = frameOf(encodeMessage({ type: "files", id: 1, more: true, entries: entries(MAX_FILES_PER_REPLY + 1) }));
  rejects(() => decodeMessage(over), `files with ${MAX_FILES_PER_REPLY + 1} entries`);
});

Deno.test("codec: a frame announcing an oversize body is rejected from its header, before the body is buffered", () => {
  const header = (body_bytes: number) => {
    const bytes = new Uint8Array(FRAME_HEADER_BYTES);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, 0x53475054, true);
    view.setUint8(4, 1);
    view.setUint8(5, 7);
    view.setUint32(8, body_bytes, true);
    return bytes;
  };
  // At the limit, the header alone is held waiting for the body.
  assert.deepEqual(new FrameSplitter().push(header(MAX_FRAME_BODY_BYTES)), []);
  for (const size of [MAX_FRAME_BODY_BYTES + 1, 0x8000_0000, 0xffff_ffff]) {
    rejects(() => new FrameSplitter().push(header(size)), `a header announcing ${size} bytes`);
  }
  // A smaller limit is honoured too, and a valid frame ahead of the oversize header in the same chunk is not returned
  // as if the stream were fine: the push throws.
  const small = new FrameSplitter(100);
  assert.equal(small.push(encodeFrame(1, new Uint8Array(100))).length, 1);
  rejects(() => small.push(header(101)), "a header announcing 101 bytes to a splitter of 100");
  const splitter = new FrameSplitter(100);
  const chunk = new Uint8Array([...encodeFrame(1, new Uint8Array(4)), ...header(101)]);
  rejects(() => splitter.push(chunk), "a good frame followed by an oversize header");
});
