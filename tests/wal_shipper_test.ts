import { deepStrictEqual } from "node:assert/strict";
import { WalShipper } from "../src/compute/wal_shipper.ts";
import { WalLog } from "../src/replication/wal_log.ts";

const SEGMENT = 1 << 20;
const START = 0x100000n;

function page(fill: number[], at = 0, size = 8192): Uint8Array {
  const bytes = new Uint8Array(size);
  bytes.set(fill, at);
  return bytes;
}

Deno.test("wal shipper: only new bytes are sent, trailing zeros never, and a rewrite that differs truncates", async () => {
  const wal = await WalLog.open({ segment_size: SEGMENT });
  const shipper = new WalShipper(wal);
  shipper.write(START, page([1, 2, 3]));
  deepStrictEqual(wal.end_lsn, START + 3n, "trailing zeros are not sent");
  shipper.write(START, page([1, 2, 3, 0, 0, 4, 5]));
  deepStrictEqual(wal.end_lsn, START + 7n, "the tail page rewritten with more: only the new bytes");
  deepStrictEqual([...wal.read(START, START + 8n)], [1, 2, 3, 0, 0, 4, 5, 0]);
  shipper.write(START + 8192n, page([9], 100));
  deepStrictEqual(wal.end_lsn, START + 8192n + 101n, "a gap of unsent zeros is filled");
  deepStrictEqual([...wal.read(START + 8190n, START + 8194n)], [0, 0, 0, 0]);
  // Crash recovery stopped before an incomplete record: Postgres writes over it.
  shipper.write(START, page([1, 2, 7]));
  deepStrictEqual(wal.end_lsn, START + 3n, "a differing rewrite truncates at the first difference");
  deepStrictEqual([...wal.read(START, START + 4n)], [1, 2, 7, 0]);
  const unaligned = new Uint8Array(8195).subarray(3);
  unaligned.set([1, 2, 7, 8]);
  shipper.write(START, unaligned);
  deepStrictEqual([...wal.read(START, START + 5n)], [1, 2, 7, 8, 0], "unaligned buffers compare the same");
  await wal.close();
});
