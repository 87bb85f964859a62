import assert from "node:assert/strict";
import { segmentFileName } from "../src/lsn.ts";
import { CorruptWalError, WalLog, WalRangeError } from "../src/replication/wal_log.ts";
import { withTempDir as withDir } from "./fixtures/temp_dir.ts";

const SEGMENT_SIZE = 65536;
const START_LSN = 0x1000000n + 1000n;

/** A small seeded PRNG (mulberry32) so failures replay. */
function prng(seed: number): (limit: number) => number {
  return (limit) => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (((t ^ (t >>> 14)) >>> 0) % limit);
  };
}

/** The byte at `lsn` in a generation of test WAL: truncation tests write a different generation over a tail. */
function patternByte(lsn: number, generation: number): number {
  return ((lsn * 31) ^ Math.floor(lsn / 256) ^ (generation * 101)) & 0xff;
}

function pattern(lsn_start: bigint, size_bytes: number, generation = 0): Uint8Array {
  const bytes = new Uint8Array(size_bytes);
  for (let i = 0; i < size_bytes; i++) bytes[i] = patternByte(Number(lsn_start) + i, generation);
  return bytes;
}

/** The log content a test expects, from START_LSN on. */
class Reference {
  bytes = new Uint8Array(0);
  constructor(readonly start_lsn: bigint) {}
  get end_lsn(): bigint {
    return this.start_lsn + BigInt(this.bytes.length);
  }
  append(lsn: bigint, payload: Uint8Array): void {
    const at = Number(lsn - this.start_lsn);
    const next = new Uint8Array(at + payload.length);
    next.set(this.bytes.subarray(0, at));
    next.set(payload, at);
    this.bytes = next;
  }
  read(lsn_start: bigint, lsn_end: bigint): Uint8Array {
    const out = new Uint8Array(Number(lsn_end - lsn_start));
    const from = Number(lsn_start - this.start_lsn);
    out.set(this.bytes.subarray(from, Math.min(this.bytes.length, from + out.length)));
    return out;
  }
}

function concat(bytes: Uint8Array, zeros_bytes: bigint): Uint8Array {
  const out = new Uint8Array(bytes.length + Number(zeros_bytes));
  out.set(bytes);
  return out;
}

function segmentPath(dir: string, lsn: bigint): string {
  const segno = lsn / BigInt(SEGMENT_SIZE);
  return `${dir}/wal/${segmentFileName(1, segno, SEGMENT_SIZE)}.tarnwal`;
}

/** Appends `count` random-sized records with pattern bytes, flushing now and then. */
async function appendRandom(log: WalLog, ref: Reference, random: (n: number) => number, count: number, gen = 0) {
  for (let i = 0; i < count; i++) {
    const payload = pattern(ref.end_lsn, 1 + random(9000), gen);
    log.append(ref.end_lsn, payload);
    ref.append(ref.end_lsn, payload);
    if (random(4) === 0) assert.equal(await log.flush(), ref.end_lsn);
  }
  assert.equal(await log.flush(), ref.end_lsn);
}

function assertReadsMatch(log: WalLog, ref: Reference, random: (n: number) => number, count: number): void {
  const span = Number(ref.end_lsn - ref.start_lsn) + 5000;
  for (let i = 0; i < count; i++) {
    const from = ref.start_lsn + BigInt(random(span));
    const to = from + BigInt(random(3 * SEGMENT_SIZE));
    assert.deepEqual(log.read(from, to), ref.read(from, to), `read [${from}, ${to})`);
  }
  assert.deepEqual(log.read(ref.start_lsn, ref.end_lsn), ref.bytes);
}

for (const dir_mode of ["disk", "memory"] as const) {
  Deno.test(`round trip across segment boundaries (${dir_mode})`, async () => {
    await withDir(async (dir) => {
      const random = prng(7);
      const ref = new Reference(START_LSN);
      let log = await WalLog.open({ dir: dir_mode === "disk" ? dir : undefined, segment_size: SEGMENT_SIZE });
      await appendRandom(log, ref, random, 150);
      assert.ok(ref.end_lsn - START_LSN > 8n * BigInt(SEGMENT_SIZE));
      assert.equal(log.start_lsn, START_LSN);
      assert.equal(log.end_lsn, ref.end_lsn);
      assert.equal(log.flush_lsn, ref.end_lsn);
      assertReadsMatch(log, ref, random, 200);
      await log.close();
      if (dir_mode === "memory") {
        assert.deepEqual([...Deno.readDirSync(dir)], []);
        return;
      }
      assert.ok(Deno.statSync(segmentPath(dir, START_LSN)).isFile);
      log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
      assert.deepEqual(log.warnings, []);
      assert.equal(log.start_lsn, START_LSN);
      assert.equal(log.end_lsn, ref.end_lsn);
      assertReadsMatch(log, ref, random, 200);
      await appendRandom(log, ref, random, 20);
      assertReadsMatch(log, ref, random, 50);
      await log.close();
    });
  });
}

Deno.test("reads return zeros past the end and in an empty log", async () => {
  const log = await WalLog.open({ segment_size: SEGMENT_SIZE });
  assert.deepEqual(log.read(0n, 16n), new Uint8Array(16));
  log.append(START_LSN, pattern(START_LSN, 100));
  const bytes = log.read(START_LSN + 90n, START_LSN + 200n);
  assert.deepEqual(bytes.subarray(0, 10), pattern(START_LSN + 90n, 10));
  assert.deepEqual(bytes.subarray(10), new Uint8Array(100));
  assert.deepEqual(log.read(START_LSN + 5000n, START_LSN + 5010n), new Uint8Array(10));
  await log.close();
});

Deno.test("append before the start or after a gap is refused", async () => {
  const log = await WalLog.open({ segment_size: SEGMENT_SIZE });
  log.append(START_LSN, pattern(START_LSN, 100));
  assert.throws(() => log.append(START_LSN + 101n, new Uint8Array(1)), /gap/);
  assert.throws(() => log.append(START_LSN - 1n, new Uint8Array(1)), WalRangeError);
  await log.close();
});

Deno.test("read before the start throws WalRangeError naming the range and what is held", async () => {
  const log = await WalLog.open({ segment_size: SEGMENT_SIZE });
  log.append(START_LSN, pattern(START_LSN, 100));
  assert.throws(() => log.read(START_LSN - 1n, START_LSN + 10n), (error: unknown) => {
    assert.ok(error instanceof WalRangeError);
    assert.match(error.message, /0\/10003E7, 0\/10003F2\).*0\/10003E8, 0\/100044C\)/);
    return true;
  });
  await log.close();
});

for (const dir_mode of ["disk", "memory"] as const) {
  Deno.test(`truncation by a lower lsn_start, within and across segments (${dir_mode})`, async () => {
    await withDir(async (dir) => {
      const random = prng(11);
      const ref = new Reference(START_LSN);
      const options = { dir: dir_mode === "disk" ? dir : undefined, segment_size: SEGMENT_SIZE };
      let log = await WalLog.open(options);
      await appendRandom(log, ref, random, 80);
      const cuts = [
        ref.end_lsn - 5000n, // within the newest segment
        START_LSN + 2n * BigInt(SEGMENT_SIZE) + 777n, // across segments
        (START_LSN / BigInt(SEGMENT_SIZE) + 2n) * BigInt(SEGMENT_SIZE), // exactly at a boundary
      ];
      for (const [generation, cut] of cuts.entries()) {
        const old_end = ref.end_lsn;
        const payload = pattern(cut, 3000, generation + 1);
        log.append(cut, payload);
        ref.append(cut, payload);
        assert.equal(log.end_lsn, ref.end_lsn);
        assert.ok(log.flush_lsn <= cut, "truncation lowers the flush LSN");
        assertReadsMatch(log, ref, random, 30);
        if (old_end > ref.end_lsn) {
          assert.deepEqual(log.read(ref.end_lsn, old_end), new Uint8Array(Number(old_end - ref.end_lsn)));
        }
        assert.equal(await log.flush(), ref.end_lsn);
        if (dir_mode === "disk") {
          await log.close();
          assert.throws(
            () => Deno.statSync(segmentPath(dir, ref.end_lsn + BigInt(SEGMENT_SIZE))),
            Deno.errors.NotFound,
          );
          log = await WalLog.open(options);
          assert.equal(log.end_lsn, ref.end_lsn);
          assertReadsMatch(log, ref, random, 30);
        }
        await appendRandom(log, ref, random, 30, generation + 1);
      }
      // An empty append below the end cuts the log there.
      const cut = ref.end_lsn - BigInt(SEGMENT_SIZE) - 10n;
      log.append(cut, new Uint8Array(0));
      ref.bytes = ref.bytes.subarray(0, Number(cut - START_LSN));
      assert.equal(await log.flush(), cut);
      if (dir_mode === "disk") {
        await log.close();
        log = await WalLog.open(options);
      }
      assert.equal(log.end_lsn, cut);
      assertReadsMatch(log, ref, random, 30);
      await log.close();
    });
  });
}

Deno.test("appended but not flushed is lost on reopen", async () => {
  await withDir(async (dir) => {
    const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    log.append(START_LSN, pattern(START_LSN, 5000));
    assert.equal(log.flush_lsn, START_LSN);
    assert.equal(await log.flush(), START_LSN + 5000n);
    log.append(START_LSN + 5000n, pattern(START_LSN + 5000n, 100_000));
    assert.equal(log.end_lsn, START_LSN + 105_000n);
    assert.equal(log.flush_lsn, START_LSN + 5000n);
    const second = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.equal(second.end_lsn, START_LSN + 5000n);
    assert.deepEqual(second.read(START_LSN, START_LSN + 6000n).subarray(0, 5000), pattern(START_LSN, 5000));
    await second.close();
    await log.close();
    const third = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.equal(third.end_lsn, START_LSN + 5000n);
    await third.close();
  });
});

Deno.test("concurrent flushes are serialised and each covers what was appended before it", async () => {
  await withDir(async (dir) => {
    const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    const ref = new Reference(START_LSN);
    const flushes: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      const payload = pattern(ref.end_lsn, 700);
      log.append(ref.end_lsn, payload);
      ref.append(ref.end_lsn, payload);
      const expected = ref.end_lsn;
      flushes.push(log.flush().then((lsn) => assert.ok(lsn >= expected)));
      if (i % 10 === 0) await flushes.at(-1);
    }
    await Promise.all(flushes);
    assert.equal(await log.flush(), ref.end_lsn);
    await log.close();
    const reopened = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.deepEqual(reopened.read(START_LSN, ref.end_lsn), ref.bytes);
    await reopened.close();
  });
});

/** Writes three flushes (one frame each) and returns the end after each. */
async function writeThreeFrames(dir: string): Promise<bigint[]> {
  const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
  const ends = [];
  for (const size of [1000, 2000, 3000]) {
    log.append(log.end_lsn === 0n ? START_LSN : log.end_lsn, pattern(log.end_lsn || START_LSN, size));
    ends.push(await log.flush());
  }
  await log.close();
  return ends;
}

Deno.test("a torn tail of the newest segment is dropped with a warning", async () => {
  for (const damage of ["garbage", "cut", "flip"] as const) {
    await withDir(async (dir) => {
      const ends = await writeThreeFrames(dir);
      const path = segmentPath(dir, START_LSN);
      const good_size = Deno.statSync(path).size;
      using file = Deno.openSync(path, { read: true, write: true });
      if (damage === "garbage") {
        file.seekSync(0, Deno.SeekMode.End);
        file.writeSync(new Uint8Array(37).fill(0xab));
      }
      if (damage === "cut") file.truncateSync(good_size - 5);
      if (damage === "flip") {
        file.seekSync(good_size - 10, Deno.SeekMode.Start);
        file.writeSync(new Uint8Array([0x55]));
      }
      const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
      const expected_end = damage === "garbage" ? ends[2] : ends[1];
      assert.equal(log.end_lsn, expected_end, damage);
      assert.equal(log.warnings.length, 1);
      assert.match(log.warnings[0], /torn tail/);
      assert.equal(Deno.statSync(path).size, good_size - (damage === "garbage" ? 0 : 3000 + 20));
      const held_bytes = Number(expected_end - START_LSN);
      assert.deepEqual(log.read(START_LSN, ends[2]), concat(pattern(START_LSN, held_bytes), ends[2] - expected_end));
      log.append(expected_end, pattern(expected_end, 10));
      await log.flush();
      await log.close();
      const again = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
      assert.deepEqual(again.warnings, []);
      assert.equal(again.end_lsn, expected_end + 10n);
      assert.deepEqual(again.read(START_LSN, again.end_lsn), pattern(START_LSN, Number(again.end_lsn - START_LSN)));
      await again.close();
    });
  }
});

/** Writes about four segments and returns the reference. */
async function writeSegments(dir: string): Promise<Reference> {
  const ref = new Reference(START_LSN);
  const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
  await appendRandom(log, ref, prng(3), 50);
  await log.close();
  return ref;
}

function flipByte(path: string, position: number): void {
  using file = Deno.openSync(path, { read: true, write: true });
  const byte = new Uint8Array(1);
  file.seekSync(position, Deno.SeekMode.Start);
  file.readSync(byte);
  file.seekSync(position, Deno.SeekMode.Start);
  file.writeSync(new Uint8Array([byte[0] ^ 0x40]));
}

Deno.test("a corrupt byte in an older segment throws CorruptWalError naming the file when read", async () => {
  await withDir(async (dir) => {
    const ref = await writeSegments(dir);
    const older = START_LSN + BigInt(SEGMENT_SIZE);
    const path = segmentPath(dir, older);
    flipByte(path, 30_000);
    const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.deepEqual(log.warnings, []);
    assert.equal(log.end_lsn, ref.end_lsn);
    const newest_start = (ref.end_lsn / BigInt(SEGMENT_SIZE)) * BigInt(SEGMENT_SIZE);
    assert.deepEqual(log.read(newest_start, ref.end_lsn), ref.read(newest_start, ref.end_lsn));
    assert.deepEqual(log.read(START_LSN, START_LSN + 100n), ref.read(START_LSN, START_LSN + 100n));
    for (let attempt = 0; attempt < 2; attempt++) {
      assert.throws(() => log.read(older + 10n, older + 20n), (error: unknown) => {
        assert.ok(error instanceof CorruptWalError);
        assert.equal(error.path, path);
        assert.ok(error.message.includes(path));
        return true;
      });
    }
    await log.close();
  });
});

Deno.test("a bad file header throws CorruptWalError", async () => {
  await withDir(async (dir) => {
    const ref = await writeSegments(dir);
    const older = START_LSN + BigInt(SEGMENT_SIZE);
    flipByte(segmentPath(dir, older), 9);
    const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.throws(() => log.read(older, older + 1n), CorruptWalError);
    await log.close();
    flipByte(segmentPath(dir, ref.end_lsn), 2);
    await assert.rejects(WalLog.open({ dir, segment_size: SEGMENT_SIZE }), (error: unknown) => {
      assert.ok(error instanceof CorruptWalError);
      assert.equal(error.path, segmentPath(dir, ref.end_lsn));
      return true;
    });
  });
});

Deno.test("retainFrom deletes whole segments before the retention point", async () => {
  await withDir(async (dir) => {
    const ref = await writeSegments(dir);
    let log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    const first_segment_lsn = (START_LSN / BigInt(SEGMENT_SIZE)) * BigInt(SEGMENT_SIZE);
    const retain = first_segment_lsn + 2n * BigInt(SEGMENT_SIZE) + 5n;
    log.retainFrom(retain);
    const held_lsn = first_segment_lsn + 2n * BigInt(SEGMENT_SIZE);
    assert.equal(log.start_lsn, held_lsn);
    assert.throws(() => log.read(held_lsn - 1n, held_lsn), WalRangeError);
    assert.deepEqual(log.read(held_lsn, ref.end_lsn), ref.read(held_lsn, ref.end_lsn));
    await log.flush();
    assert.throws(() => Deno.statSync(segmentPath(dir, START_LSN)), Deno.errors.NotFound);
    assert.throws(() => Deno.statSync(segmentPath(dir, held_lsn - 1n)), Deno.errors.NotFound);
    await log.close();
    log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.equal(log.start_lsn, held_lsn);
    assert.equal(log.end_lsn, ref.end_lsn);
    assert.deepEqual(log.read(held_lsn, ref.end_lsn), ref.read(held_lsn, ref.end_lsn));
    log.retainFrom(ref.end_lsn + 10n * BigInt(SEGMENT_SIZE));
    await log.close();
    log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.equal(log.end_lsn, ref.end_lsn, "the newest segment is always kept");
    await log.close();
  });
});

const CHILD_SCRIPT = `
import { WalLog } from ${JSON.stringify(new URL("../src/replication/wal_log.ts", import.meta.url).href)};
const [dir, start] = Deno.args;
const log = await WalLog.open({ dir, segment_size: ${SEGMENT_SIZE} });
let lsn = log.end_lsn === 0n ? BigInt(start) : log.end_lsn;
const encoder = new TextEncoder();
for (let i = 0; ; i++) {
  const size = 1 + ((i * 7919) % 12000);
  const bytes = new Uint8Array(size);
  for (let j = 0; j < size; j++) {
    const at = Number(lsn) + j;
    bytes[j] = ((at * 31) ^ Math.floor(at / 256)) & 0xff;
  }
  log.append(lsn, bytes);
  lsn += BigInt(size);
  const flushed = await log.flush();
  await Deno.stdout.write(encoder.encode(flushed + "\\n"));
}
`;

Deno.test("a writer killed with SIGKILL loses nothing it reported flushed", async () => {
  await withDir(async (dir) => {
    const script = `${dir}/child.ts`;
    await Deno.writeTextFile(script, CHILD_SCRIPT);
    const config = new URL("../deno.json", import.meta.url).pathname;
    const random = prng(Date.now() % 1000);
    let max_reported = 0n;
    for (let round = 0; round < 3; round++) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--config", config, script, dir, String(START_LSN)],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const output = (async () => {
        let text = "";
        for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) text += chunk;
        return text;
      })();
      await new Promise((resolve) => setTimeout(resolve, 800 + random(700)));
      child.kill("SIGKILL");
      const status = await child.status;
      assert.equal(status.signal, "SIGKILL", await new Response(child.stderr).text());
      const reported = (await output).split("\n").filter((line) => line !== "").map(BigInt);
      assert.ok(reported.length > 0, "the child flushed something before it was killed");
      for (const lsn of reported) if (lsn > max_reported) max_reported = lsn;
      const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
      assert.ok(max_reported <= log.end_lsn, `reported ${max_reported} > end ${log.end_lsn}`);
      assert.deepEqual(log.read(START_LSN, log.end_lsn), pattern(START_LSN, Number(log.end_lsn - START_LSN)));
      await log.close();
    }
  });
});

Deno.test("open refuses a missing segment in the middle and removes an unfinished segment creation", async () => {
  await withDir(async (dir) => {
    const ref = await writeSegments(dir);
    const partial = `${segmentPath(dir, ref.end_lsn + BigInt(SEGMENT_SIZE))}.partial`;
    await Deno.writeFile(partial, new Uint8Array(100));
    const log = await WalLog.open({ dir, segment_size: SEGMENT_SIZE });
    assert.equal(log.end_lsn, ref.end_lsn);
    assert.equal(log.warnings.length, 1);
    assert.throws(() => Deno.statSync(partial), Deno.errors.NotFound);
    await log.close();
    const missing = segmentPath(dir, START_LSN + 2n * BigInt(SEGMENT_SIZE));
    await Deno.remove(missing);
    await assert.rejects(WalLog.open({ dir, segment_size: SEGMENT_SIZE }), (error: unknown) => {
      assert.ok(error instanceof CorruptWalError);
      assert.equal(error.path, missing);
      return true;
    });
  });
});
