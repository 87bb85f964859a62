import assert from "node:assert/strict";
import { CorruptDataError } from "../src/errors.ts";
import { FileSafekeeperStorage } from "../src/replication/safekeeper/file_storage.ts";
import { Safekeeper } from "../src/replication/safekeeper/safekeeper.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const TENANT = "0123456789abcdef0123456789abcdef";
const TIMELINE = "fedcba9876543210fedcba9876543210";
const START = 0x100_0000n + 40n;
const HISTORY = [{ term: 1n, start_lsn: START }];

function open(dir: string): Promise<FileSafekeeperStorage> {
  return FileSafekeeperStorage.open({ dir, tenant_id: TENANT, timeline_id: TIMELINE, segment_size: 65536 });
}

/** A safekeeper in `dir` elected in term 1, with two separately synced appends of 100 and 50 bytes. */
async function writeTwoAppends(dir: string): Promise<void> {
  const sk = await Safekeeper.open(await open(dir));
  await sk.handle({ type: "vote_request", term: 1n, proposer_id: 5n });
  await sk.handle({ type: "elected", term: 1n, term_start_lsn: START, term_history: HISTORY });
  for (const [at, size] of [[0n, 100], [100n, 50]] as const) {
    const bytes = new Uint8Array(size).fill(size);
    await sk.handle({ type: "append_request", term: 1n, begin_lsn: START + at, commit_lsn: START + 100n, bytes });
  }
  assert.equal(sk.flush_lsn, START + 150n);
  await sk.close();
}

function segmentPath(dir: string): string {
  const wal_dir = `${dir}/tenants/${TENANT}/timelines/${TIMELINE}/wal`;
  const names = [...Deno.readDirSync(wal_dir)].map((e) => e.name).filter((n) => n.endsWith(".tarnwal"));
  assert.equal(names.length, 1);
  return `${wal_dir}/${names[0]}`;
}

Deno.test("state and WAL survive a reopen", async () => {
  await withTempDir(async (dir) => {
    await writeTwoAppends(dir);
    const sk = await Safekeeper.open(await open(dir));
    assert.equal(sk.term, 1n);
    assert.equal(sk.flush_lsn, START + 150n);
    assert.deepEqual(sk.term_history, HISTORY);
    assert.equal((await sk.handle({ type: "vote_request", term: 1n, proposer_id: 6n })).type, "vote_response");
    const read = await sk.handle({ type: "read_request", term: 1n, lsn_start: START + 95n, lsn_end: START + 105n });
    assert.deepEqual(
      read.type === "read_response" && read.bytes,
      new Uint8Array([100, 100, 100, 100, 100, 50, 50, 50, 50, 50]),
    );
    await sk.close();
  });
});

Deno.test("a corrupt WAL tail is found by its checksum: the flush LSN drops to the last good frame", async () => {
  await withTempDir(async (dir) => {
    await writeTwoAppends(dir);
    const path = segmentPath(dir);
    const bytes = await Deno.readFile(path);
    bytes[bytes.length - 10] ^= 0xff;
    await Deno.writeFile(path, bytes);
    const storage = await open(dir);
    assert.match(storage.warnings.join("\n"), /checksum mismatch/);
    const sk = await Safekeeper.open(storage);
    assert.equal(sk.flush_lsn, START + 100n, "the peers resend the rest: see the simulation");
    const status = sk.status();
    assert.equal(status.flush_lsn, START + 100n);
    assert.equal(status.last_log_term, 1n);
    await sk.close();
  });
});

Deno.test("a torn WAL tail (a write cut short) is dropped the same way", async () => {
  await withTempDir(async (dir) => {
    await writeTwoAppends(dir);
    const path = segmentPath(dir);
    await Deno.truncate(path, (await Deno.stat(path)).size - 7);
    const sk = await Safekeeper.open(await open(dir));
    assert.equal(sk.flush_lsn, START + 100n);
    await sk.close();
  });
});

Deno.test("a damaged state file is reported, not guessed at", async () => {
  await withTempDir(async (dir) => {
    await writeTwoAppends(dir);
    const path = `${dir}/tenants/${TENANT}/timelines/${TIMELINE}/safekeeper.json`;
    await Deno.writeTextFile(path, (await Deno.readTextFile(path)).replace('"term": "1"', '"term": "2"'));
    const storage = await open(dir);
    await assert.rejects(storage.loadState(), CorruptDataError);
    await storage.close();
  });
});
