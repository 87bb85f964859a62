import { deepStrictEqual, ok } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { parseLsn } from "../src/lsn.ts";
import { firstRecordInPage, WalDecoder, type WalRecord } from "../src/replication/wal_decoder.ts";
import { WalLog } from "../src/replication/wal_log.ts";

/** Decodes every record the directory's WAL log holds. */
async function decodeAll(dir: string): Promise<{ records: WalRecord[]; end_reason: string }> {
  const tenant = JSON.parse(await Deno.readTextFile(`${dir}/tarn.json`)).tenant;
  const wal = await WalLog.open({ dir: `${dir}/timelines/${tenant.timeline_id}`, segment_size: tenant.segment_size });
  try {
    const decoder = new WalDecoder(wal, firstRecordInPage(wal, wal.start_lsn - wal.start_lsn % 8192n));
    const records: WalRecord[] = [];
    for (let i = 0; i < 1_000_000; i++) {
      const next = decoder.next();
      if (!("lsn" in next)) return { records, end_reason: next.reason };
      records.push(next);
    }
    throw new Error("more than a million records");
  } finally {
    await wal.close();
  }
}

Deno.test("wal decoder: commit records at the LSNs and times Postgres reports", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tarn-decoder-" });
  try {
    const commits: { lsn: bigint; before_ms: number; after_ms: number }[] = [];
    {
      await using tarn = await Tarn.open(dir, { checkpoint_idle_ms: 60_000 });
      const db = await tarn.connect();
      await db.exec("create table t (id int primary key, pad text)");
      for (let i = 0; i < 40; i++) {
        const before_ms = Date.now();
        // Rows of growing size make some records span WAL pages.
        await db.query("insert into t values ($1, repeat('x', $2))", [i, i * 700]);
        const after_ms = Date.now();
        const { rows } = await db.query<{ lsn: string }>("select pg_current_wal_insert_lsn()::text as lsn");
        commits.push({ lsn: parseLsn(rows[0].lsn), before_ms, after_ms });
      }
    }
    const { records, end_reason } = await decodeAll(dir);
    ok(end_reason.length > 0);
    const by_next = new Map(records.filter((r) => r.commit_time).map((r) => [r.next_lsn, r]));
    let matched = 0;
    for (const commit of commits) {
      const record = by_next.get(commit.lsn);
      if (record === undefined) continue; // the insert position sat on a page boundary not yet written
      matched++;
      const time_ms = record.commit_time!.getTime();
      ok(time_ms >= commit.before_ms - 1 && time_ms <= commit.after_ms + 1, `commit time ${time_ms} out of range`);
    }
    ok(matched >= commits.length - 2, `only ${matched} of ${commits.length} commits found at their LSNs`);
    for (let i = 1; i < records.length; i++) ok(records[i].lsn >= records[i - 1].next_lsn, "records overlap");
    deepStrictEqual(records.filter((r) => r.lsn % 8n !== 0n), [], "records start 8-byte aligned");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
