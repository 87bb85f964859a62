import assert from "node:assert/strict";
import { crc32c as crc32cOf } from "../src/crc32c.ts";
import { decodeFrame, encodeMessage, ProtocolFormatError } from "../src/replication/safekeeper/codec.ts";
import { FrameReader } from "../src/replication/safekeeper/frame_reader.ts";
import type { Message } from "../src/replication/safekeeper/messages.ts";
import { Prng } from "../src/replication/safekeeper/prng.ts";

const HISTORY = [{ term: 1n, start_lsn: 0x100_0000n }, { term: 4n, start_lsn: 0x100_2000n }];

const SAMPLES: Message[] = [
  { type: "status_request" },
  {
    type: "status_response",
    term: 4n,
    flush_lsn: 0x100_3000n,
    commit_lsn: 0x100_2800n,
    last_log_term: 4n,
    wal_start_lsn: 0x100_0000n,
  },
  { type: "vote_request", term: 5n, proposer_id: 0xdead_beef_cafe_f00dn },
  {
    type: "vote_response",
    term: 5n,
    granted: true,
    flush_lsn: 0x100_3000n,
    commit_lsn: 0x100_2000n,
    last_log_term: 4n,
    term_history: HISTORY,
  },
  { type: "elected", term: 4n, term_start_lsn: 0x100_2000n, term_history: HISTORY },
  { type: "append_request", term: 4n, begin_lsn: 0x100_2000n, commit_lsn: 0x100_1000n, bytes: new Uint8Array([1, 2]) },
  { type: "append_request", term: 4n, begin_lsn: 0x100_2000n, commit_lsn: 0n, bytes: new Uint8Array(0) },
  { type: "append_response", term: 4n, status: "gap", flush_lsn: 0x100_2000n, commit_lsn: 0x100_1000n },
  { type: "read_request", term: 0n, lsn_start: 0x100_0000n, lsn_end: 0x100_0100n },
  {
    type: "read_response",
    term: 4n,
    status: "ok",
    lsn_start: 0x100_0000n,
    lsn_end: 0x100_0003n,
    bytes: new Uint8Array([9, 8, 7]),
  },
  {
    type: "read_response",
    term: 4n,
    status: "term_mismatch",
    lsn_start: 0x100_0000n,
    lsn_end: 0x100_0000n,
    bytes: new Uint8Array(0),
  },
  { type: "hello", tenant_id: "t", timeline_id: "0123456789abcdef0123456789abcdef", segment_size: 16 * 1024 * 1024 },
  { type: "hello", tenant_id: "A-z_9".repeat(12) + "abcd", timeline_id: "main", segment_size: 1024 * 1024 * 1024 },
  { type: "hello_response", node_id: 0xffff_ffff, term: 4n, flush_lsn: 0x100_3000n, commit_lsn: 0x100_4000n },
];

Deno.test("every message survives encoding and decoding", () => {
  for (const msg of SAMPLES) assert.deepEqual(decodeFrame(encodeMessage(msg)), msg);
});

Deno.test("messages that break a rule cannot be encoded", () => {
  const bad: Message[] = [
    { type: "vote_request", term: 0n, proposer_id: 1n },
    { type: "elected", term: 5n, term_start_lsn: 0x100_2000n, term_history: HISTORY },
    { type: "read_request", term: 1n, lsn_start: 10n, lsn_end: 9n },
    {
      type: "vote_response",
      term: 5n,
      granted: true,
      flush_lsn: 0x100_1000n,
      commit_lsn: 0n,
      last_log_term: 4n,
      term_history: HISTORY,
    },
    {
      type: "elected",
      term: 4n,
      term_start_lsn: 0x100_2000n,
      term_history: [{ term: 4n, start_lsn: 1n }, { term: 4n, start_lsn: 0x100_2000n }],
    },
    { type: "hello", tenant_id: "", timeline_id: "main", segment_size: 1024 * 1024 },
    { type: "hello", tenant_id: "x".repeat(65), timeline_id: "main", segment_size: 1024 * 1024 },
    { type: "hello", tenant_id: "../etc", timeline_id: "main", segment_size: 1024 * 1024 },
    { type: "hello", tenant_id: "t", timeline_id: "tl\u00e9", segment_size: 1024 * 1024 },
    { type: "hello", tenant_id: "t", timeline_id: "main", segment_size: 512 * 1024 },
    { type: "hello", tenant_id: "t", timeline_id: "main", segment_size: 3 * 1024 * 1024 },
    { type: "hello", tenant_id: "t", timeline_id: "main", segment_size: 2 ** 32 + 2 ** 20 },
    { type: "hello_response", node_id: -1, term: 1n, flush_lsn: 0n, commit_lsn: 0n },
    { type: "hello_response", node_id: 2 ** 32, term: 1n, flush_lsn: 0n, commit_lsn: 0n },
  ];
  for (const msg of bad) assert.throws(() => encodeMessage(msg), ProtocolFormatError, msg.type);
});

Deno.test("a frame reader reassembles frames split anywhere and several per chunk", () => {
  const frames = SAMPLES.map(encodeMessage);
  const stream = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const frame of frames) {
    stream.set(frame, at);
    at += frame.length;
  }
  const prng = new Prng(1);
  for (let round = 0; round < 200; round++) {
    const reader = new FrameReader();
    const got: Message[] = [];
    for (let i = 0; i < stream.length;) {
      const size = 1 + prng.int(round % 2 === 0 ? 8 : 200);
      got.push(...reader.push(stream.subarray(i, i + size)));
      i += size;
    }
    assert.deepEqual(got, SAMPLES);
    assert.equal(reader.pending_bytes, 0);
  }
});

Deno.test("a frame reader refuses a frame over its limit as soon as the header arrives", () => {
  const frame = encodeMessage(SAMPLES[5]);
  const reader = new FrameReader(8);
  assert.throws(() => reader.push(frame.subarray(0, 12)), /over the limit of 8/);
});

Deno.test("random and mutated bytes give ProtocolFormatError, never another error", () => {
  const prng = new Prng(42);
  const frames = SAMPLES.map(encodeMessage);
  for (let i = 0; i < 20_000; i++) {
    let bytes: Uint8Array;
    if (i % 4 === 0) bytes = prng.bytes(prng.int(64));
    else {
      bytes = prng.pick(frames).slice();
      const flips = 1 + prng.int(3);
      for (let f = 0; f < flips; f++) bytes[prng.int(bytes.length)] ^= 1 + prng.int(255);
      if (i % 4 === 3) bytes = bytes.subarray(0, prng.int(bytes.length));
    }
    try {
      decodeFrame(bytes);
    } catch (error) {
      assert.ok(error instanceof ProtocolFormatError, `${error}`);
    }
    const reader = new FrameReader(1024);
    try {
      reader.push(bytes);
      reader.push(prng.bytes(prng.int(32)));
    } catch (error) {
      assert.ok(error instanceof ProtocolFormatError, `${error}`);
    }
  }
});

Deno.test("mutations with a recomputed checksum reach the field checks", () => {
  // Fixing the CRC lets corrupted fields through the checksum, so the per-field validation is what is tested.
  const prng = new Prng(7);
  const frames = SAMPLES.map(encodeMessage);
  let refused = 0;
  for (let i = 0; i < 20_000; i++) {
    const bytes = prng.pick(frames).slice();
    bytes[prng.int(bytes.length - 4)] ^= 1 + prng.int(255);
    const view = new DataView(bytes.buffer);
    view.setUint32(bytes.length - 4, crc32cOf(bytes.subarray(0, bytes.length - 4)), true);
    try {
      decodeFrame(bytes);
    } catch (error) {
      assert.ok(error instanceof ProtocolFormatError, `${error}`);
      refused++;
    }
  }
  assert.ok(refused > 1000, `only ${refused} refused`);
});
