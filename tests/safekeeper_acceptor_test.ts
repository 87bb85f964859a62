import assert from "node:assert/strict";
import type { AppendResponse, ProposerMessage, VoteResponse } from "../src/replication/safekeeper/messages.ts";
import { Prng } from "../src/replication/safekeeper/prng.ts";
import { Safekeeper, SafekeeperFailedError } from "../src/replication/safekeeper/safekeeper.ts";
import { SimDisk, StorageFault } from "../src/replication/safekeeper/sim_storage.ts";

const START = 0x100_0000n;
const T1 = [{ term: 1n, start_lsn: START }];

async function open(disk = new SimDisk(new Prng(1))): Promise<{ sk: Safekeeper; disk: SimDisk }> {
  return { sk: await Safekeeper.open(disk.open()), disk };
}

async function append(
  sk: Safekeeper,
  term: bigint,
  begin_lsn: bigint,
  size: number,
  fill = 1,
): Promise<AppendResponse> {
  const msg: ProposerMessage = {
    type: "append_request",
    term,
    begin_lsn,
    commit_lsn: 0n,
    bytes: new Uint8Array(size).fill(fill),
  };
  return await sk.handle(msg) as AppendResponse;
}

async function vote(sk: Safekeeper, term: bigint, proposer_id: bigint): Promise<VoteResponse> {
  return await sk.handle({ type: "vote_request", term, proposer_id }) as VoteResponse;
}

/** A safekeeper elected in term 1 holding `size` bytes. */
async function elected(size: number): Promise<{ sk: Safekeeper; disk: SimDisk }> {
  const opened = await open();
  assert.equal((await vote(opened.sk, 1n, 7n)).granted, true);
  await opened.sk.handle({ type: "elected", term: 1n, term_start_lsn: START, term_history: T1 });
  assert.equal((await append(opened.sk, 1n, START, size)).status, "ok");
  return opened;
}

Deno.test("votes go only to a higher term, persisted before the answer; the same proposer is answered again", async () => {
  const { sk, disk } = await open();
  assert.equal((await vote(sk, 3n, 7n)).granted, true);
  assert.equal(disk.state.term, 3n);
  assert.equal((await vote(sk, 3n, 7n)).granted, true, "a lost answer is asked for again");
  const other = await vote(sk, 3n, 8n);
  assert.equal(other.granted, false, "one vote per term");
  assert.equal(other.term, 3n);
  assert.equal((await vote(sk, 2n, 9n)).granted, false);
  const restarted = await Safekeeper.open(disk.open());
  assert.equal(restarted.term, 3n);
  assert.equal((await vote(restarted, 3n, 8n)).granted, false, "the vote survives a restart");
});

Deno.test("an append of a lower term is rejected with the safekeeper's term", async () => {
  const { sk } = await elected(10);
  await vote(sk, 2n, 8n);
  const answer = await append(sk, 1n, START + 10n, 5);
  assert.equal(answer.status, "term_rejected");
  assert.equal(answer.term, 2n);
  assert.equal(answer.flush_lsn, START + 10n);
});

Deno.test("an append before the elected message of its term is refused", async () => {
  const { sk } = await elected(10);
  await vote(sk, 2n, 8n);
  assert.equal((await append(sk, 2n, START + 10n, 5)).status, "not_elected");
});

Deno.test("an append past the flush LSN (a gap) is rejected with the flush LSN", async () => {
  const { sk } = await elected(10);
  const answer = await append(sk, 1n, START + 11n, 5);
  assert.equal(answer.status, "gap");
  assert.equal(answer.flush_lsn, START + 10n);
});

Deno.test("a resent append of the same term does not cut what followed it", async () => {
  const { sk } = await elected(10);
  assert.equal((await append(sk, 1n, START + 10n, 10, 2)).flush_lsn, START + 20n);
  assert.equal((await append(sk, 1n, START + 5n, 10, 1)).flush_lsn, START + 20n);
  const read = await sk.handle({ type: "read_request", term: 1n, lsn_start: START, lsn_end: START + 20n });
  assert.deepEqual(
    read.type === "read_response" && read.bytes,
    new Uint8Array([...Array(10).fill(1), ...Array(10).fill(2)]),
  );
});

Deno.test("an elected message cuts the tail that diverges from the new proposer's history", async () => {
  const { sk, disk } = await elected(100);
  await vote(sk, 3n, 9n);
  // Term 2 continued the log from START + 40 (never reaching this safekeeper); term 3 keeps that history.
  const history = [...T1, { term: 2n, start_lsn: START + 40n }, { term: 3n, start_lsn: START + 60n }];
  const answer = await sk.handle({ type: "elected", term: 3n, term_start_lsn: START + 60n, term_history: history });
  assert.deepEqual(answer, { type: "append_response", term: 3n, status: "ok", flush_lsn: START + 40n, commit_lsn: 0n });
  assert.equal(disk.wal_end_lsn, START + 40n, "the cut is durable");
  assert.deepEqual(disk.state.term_history, history);
  assert.deepEqual(sk.term_history, [...T1, { term: 2n, start_lsn: START + 40n }]);
});

Deno.test("reads are served in the reader's term up to the flush LSN, or committed WAL only with term 0", async () => {
  const { sk } = await elected(100);
  await sk.handle({
    type: "append_request",
    term: 1n,
    begin_lsn: START + 100n,
    commit_lsn: START + 30n,
    bytes: new Uint8Array(0),
  });
  const read = (term: bigint) => sk.handle({ type: "read_request", term, lsn_start: START, lsn_end: START + 200n });
  assert.deepEqual(await read(1n).then((r) => r.type === "read_response" && [r.status, r.lsn_end]), [
    "ok",
    START + 100n,
  ]);
  assert.deepEqual(await read(0n).then((r) => r.type === "read_response" && [r.status, r.lsn_end]), [
    "ok",
    START + 30n,
  ]);
  assert.deepEqual(await read(2n).then((r) => r.type === "read_response" && r.status), "term_mismatch");
});

Deno.test("a failed fsync fails the append: no acknowledgement, nothing more until a restart", async () => {
  const { sk, disk } = await elected(10);
  disk.fault_countdown = 1; // the write succeeds, the sync fails
  await assert.rejects(append(sk, 1n, START + 10n, 5), (error) => {
    return error instanceof SafekeeperFailedError && error.cause instanceof StorageFault;
  });
  await assert.rejects(vote(sk, 5n, 1n), SafekeeperFailedError);
  disk.crash();
  disk.fault_countdown = -1;
  const restarted = await Safekeeper.open(disk.open());
  assert.ok(restarted.flush_lsn >= START + 10n && restarted.flush_lsn <= START + 15n, "acknowledged bytes survive");
});
