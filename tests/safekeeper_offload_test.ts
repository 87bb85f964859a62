// Safekeeper WAL offload: three `tarn safekeeper --remote file://...` under `tarn start --safekeepers`; once a WAL
// segment is sealed and committed, it is in the lake as one checked object holding that segment's real WAL.
import { equal, ok, throws } from "node:assert/strict";
import postgres from "postgres";
import { CorruptDataError } from "../src/errors.ts";
import { decodeSegmentObject, encodeSegmentObject } from "../src/replication/safekeeper/wal_offload.ts";
import { spawnSafekeeper, spawnTarn } from "./fixtures/tarn_process.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const SEGMENT_BYTES = 16 * 1024 * 1024;

Deno.test("wal offload: a segment object round-trips, and a damaged one is refused naming it", () => {
  const body = new Uint8Array(8192).map((_, i) => i & 0xff);
  const object = encodeSegmentObject(0x2000000n, SEGMENT_BYTES, body);
  const { lsn_start, bytes } = decodeSegmentObject("wal/t/l/2", object);
  equal(lsn_start, 0x2000000n);
  equal(bytes.length, body.length);
  object[100] ^= 1;
  throws(
    () => decodeSegmentObject("wal/t/l/2", object),
    (e: Error) => e instanceof CorruptDataError && /wal\/t\/l\/2/.test(e.message),
  );
  throws(() => decodeSegmentObject("k", object.subarray(0, 20)), CorruptDataError);
});

Deno.test({
  name: "wal offload: sealed, committed segments reach the lake from the safekeepers, whole and in place",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir(async (dir) => {
      const lake = `${dir}/lake`;
      const sks = await Promise.all(
        [1, 2, 3].map((id) => spawnSafekeeper(`${dir}/sk${id}`, id, 0, ["--remote", `file://${lake}`])),
      );
      const list = sks.map((sk) => `127.0.0.1:${sk.port}`).join(",");
      const server = await spawnTarn(["start", "--data", `${dir}/data`, "--port", "0", "--safekeepers", list]);
      try {
        const sql = postgres(`postgresql://postgres@127.0.0.1:${server.port}/postgres`, { max: 1, onnotice: () => {} });
        await sql`create table t as select g, repeat('x', 1000) as pad from generate_series(1, 25000) g`;
        await sql.end();
        const status = await (await fetch(`http://127.0.0.1:${sks[0].port}/status`)).json();
        const { tenant_id, timeline_id } = status.timelines[0];
        const prefix = `${lake}/wal/${tenant_id}/${timeline_id}`;
        const names = await waitForObjects(prefix, 30_000);
        ok(names.length >= 1, "no segment was offloaded");
        for (const name of names) {
          const segno = BigInt(`0x${name}`);
          const { lsn_start, bytes } = decodeSegmentObject(name, await Deno.readFile(`${prefix}/${name}`));
          equal(lsn_start, segno * BigInt(SEGMENT_BYTES));
          equal(bytes.length, SEGMENT_BYTES);
          // The segment's first page header says where it is: real WAL, in its place.
          equal(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(8, true), lsn_start);
        }
        const after = await (await fetch(`http://127.0.0.1:${sks[0].port}/status`)).json();
        ok(after.timelines[0].offloaded_lsn !== undefined, JSON.stringify(after.timelines[0]));
      } finally {
        await server.kill();
        await Promise.all(sks.map((sk) => sk.kill()));
      }
    }),
});

/** The segment object names under `prefix` once there is at least one (waits up to `timeout_ms`). */
async function waitForObjects(prefix: string, timeout_ms: number): Promise<string[]> {
  const deadline_ms = performance.now() + timeout_ms;
  for (;;) {
    const names: string[] = [];
    try {
      for await (const entry of Deno.readDir(prefix)) {
        if (entry.isFile && !entry.name.endsWith(".partial")) names.push(entry.name);
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    if (names.length > 0 || performance.now() > deadline_ms) return names.sort();
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
