import assert from "node:assert/strict";
import { type Outgoing, Proposer, ProposerAppendError, ProposerStateError } from "../src/replication/proposer.ts";
import type { ProposerMessage } from "../src/replication/safekeeper/messages.ts";
import { Prng } from "../src/replication/safekeeper/prng.ts";
import { Safekeeper } from "../src/replication/safekeeper/safekeeper.ts";
import { SimDisk } from "../src/replication/safekeeper/sim_storage.ts";

const START_LSN = 0x100_0000n;
const IDS = [1, 2, 3];

/** Three safekeepers on simulated disks, and a way to run a proposer against them with a message filter. */
class Cluster {
  readonly safekeepers = new Map<number, Safekeeper>();

  static async create(): Promise<Cluster> {
    const cluster = new Cluster();
    for (const id of IDS) cluster.safekeepers.set(id, await Safekeeper.open(new SimDisk(new Prng(id)).open()));
    return cluster;
  }

  proposer(id: number, opts: { max_message_bytes?: number; recover_from_lsn?: bigint } = {}): Proposer {
    return new Proposer({ proposer_id: BigInt(id), safekeepers: IDS, timeline_start_lsn: START_LSN, ...opts });
  }

  /** Delivers `out` and every answer and follow-up that `allow` lets through, until nothing is left. */
  async run(proposer: Proposer, out: Outgoing[], allow: (to: number, msg: ProposerMessage) => boolean): Promise<void> {
    const queue = [...out];
    for (let i = 0; i < 10_000 && queue.length > 0; i++) {
      const { to, msg } = queue.shift()!;
      if (!allow(to, msg)) continue;
      const answer = await this.safekeepers.get(to)!.handle(msg);
      queue.push(...proposer.onMessage(to, answer));
    }
    assert.equal(queue.length, 0, "the exchange did not settle");
  }
}

const to = (...ids: number[]) => (id: number) => ids.includes(id);

Deno.test("a proposer elected by all streams to all and commits what a majority flushed", async () => {
  const cluster = await Cluster.create();
  const p = cluster.proposer(1);
  await cluster.run(p, p.start(), () => true);
  assert.equal(p.state, "streaming");
  assert.equal(p.term, 1n);
  await cluster.run(p, p.append(START_LSN, new Uint8Array(100).fill(7)), to(1, 2));
  assert.equal(p.commit_lsn, START_LSN + 100n);
  assert.throws(() => p.append(START_LSN, new Uint8Array(1)), ProposerAppendError);
});

Deno.test("a commit LSN never comes from acknowledgements below the term start (Raft figure 8)", async () => {
  const cluster = await Cluster.create();
  const a = new Uint8Array(64).fill(0xaa);
  // Term 1 writes A to safekeeper 1 only: not committed.
  const p1 = cluster.proposer(1);
  await cluster.run(p1, p1.start(), () => true);
  await cluster.run(p1, p1.append(START_LSN, a), to(1));
  assert.equal(p1.commit_lsn, START_LSN);
  // Term 2 is elected by 2 and 3, but only 3 takes its elected message and its WAL B.
  const p2 = cluster.proposer(2);
  await cluster.run(p2, p2.start(), (id, msg) => id === 3 || (id === 2 && msg.type !== "elected"));
  assert.equal(p2.state, "streaming");
  await cluster.run(p2, p2.append(START_LSN, new Uint8Array(32).fill(0xbb)), to(3));
  // Term 3 is elected by 1 and 2, takes A from 1 (its log is the most advanced of the vote) and gets 2 part way.
  const p3 = cluster.proposer(3, { max_message_bytes: 16 });
  await cluster.run(p3, p3.start(), (id, msg) =>
    id === 1 || (id === 2 && !(msg.type === "append_request" &&
      msg.begin_lsn >= START_LSN + 16n)));
  assert.equal(p3.state, "streaming");
  assert.equal(p3.term_start_lsn, START_LSN + 64n);
  assert.equal(cluster.safekeepers.get(2)!.flush_lsn, START_LSN + 16n);
  // A majority (1 and 2) holds the first 16 bytes of A, yet they are not committed: a term 4 elected by 2 and 3
  // rightly takes B, whose last term (2) is higher than what 2 holds of term 3's log.
  assert.equal(p3.commit_lsn, 0n);
  const p4 = cluster.proposer(4, { recover_from_lsn: START_LSN });
  await cluster.run(p4, p4.start(), to(2, 3));
  assert.equal(p4.state, "streaming");
  assert.deepEqual(p4.recoveredWal(), new Uint8Array(32).fill(0xbb));
});

Deno.test("a proposer that meets a higher term is deposed and takes no more WAL", async () => {
  const cluster = await Cluster.create();
  const p1 = cluster.proposer(1);
  await cluster.run(p1, p1.start(), () => true);
  const p2 = cluster.proposer(2);
  await cluster.run(p2, p2.start(), () => true);
  assert.equal(p2.term, 2n);
  await cluster.run(p1, p1.append(START_LSN, new Uint8Array(10)), () => true);
  assert.equal(p1.state, "deposed");
  assert.match(p1.deposed_reason, /term 2/);
  assert.equal(p1.commit_lsn, START_LSN, "none of its own WAL is committed");
  assert.throws(() => p1.append(p1.end_lsn, new Uint8Array(1)), ProposerStateError);
});

Deno.test("a new proposer fetches the WAL it lacks from the donor and hands it to the compute", async () => {
  const cluster = await Cluster.create();
  const wal = new Prng(9).bytes(1000);
  const p1 = cluster.proposer(1);
  await cluster.run(p1, p1.start(), () => true);
  await cluster.run(p1, p1.append(START_LSN, wal), () => true);
  assert.equal(p1.commit_lsn, START_LSN + 1000n);
  const p2 = cluster.proposer(2, { max_message_bytes: 100, recover_from_lsn: START_LSN + 10n });
  await cluster.run(p2, p2.start(), () => true);
  assert.equal(p2.term_start_lsn, START_LSN + 1000n);
  assert.deepEqual(p2.recoveredWal(), wal.subarray(10));
  assert.deepEqual(p2.recoveredWal(START_LSN + 999n), wal.subarray(999));
});
