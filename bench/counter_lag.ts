/**
 * Replica lag as a reader sees it: a counter updated on the primary every 20 ms, read on the replica in a loop; for
 * each value, the time from its acknowledgement to the first replica read that saw it. Shared by the replica
 * benchmarks.
 *
 * @module
 */
import type postgres from "postgres";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The lag of each value seen (ms) and the number of replica reads, over `seconds`. */
export async function counterLag(
  primary: postgres.Sql,
  replica: postgres.Sql,
  seconds: number,
): Promise<{ lags_ms: number[]; reads: number }> {
  await primary`create table counter (n int)`;
  await primary`insert into counter values (0)`;
  // The replica shows the new table once its next compute starts (within the lag bound).
  for (let tries = 0; await replica`select n from counter`.then(() => false, () => tries++ < 200);) await sleep(50);
  const acked = new Map<number, number>();
  let writing = true;
  const writes = (async () => {
    for (let n = 1; writing; n++) {
      await primary`update counter set n = ${n}`;
      acked.set(n, performance.now());
      await sleep(20);
    }
  })();
  const lags_ms: number[] = [];
  let last = 0;
  let reads = 0;
  const until_ms = performance.now() + seconds * 1000;
  while (performance.now() < until_ms) {
    const [{ n }] = await replica`select n from counter`;
    reads++;
    const now_ms = performance.now();
    for (let v = last + 1; v <= n; v++) if (acked.has(v)) lags_ms.push(now_ms - acked.get(v)!);
    last = Math.max(last, n);
    await sleep(5);
  }
  writing = false;
  await writes;
  return { lags_ms, reads };
}

/** The `p` quantile (0..1) of `xs`. */
export const percentile = (xs: number[], p: number): number =>
  [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)];
