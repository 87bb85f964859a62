/**
 * `deno task bench`: every benchmark in one run, figures printed as ratios against baselines run here too.
 * `deno task bench --quick` runs smaller sizes.
 *
 * @module
 */
import { benchCreateBranch, benchFork, benchSuite } from "./branches.ts";
import { benchCopy } from "./copy.ts";
import { benchOpen } from "./open_time.ts";
import { benchPageserver, printPageserver } from "./pageserver.ts";
import { benchSafekeepers } from "./safekeepers.ts";
import { benchServer } from "./server.ts";
import { benchTpcb } from "./tpcb.ts";

const quick = Deno.args.includes("--quick");
const f = (n: number, digits = 0) => n.toFixed(digits);

console.log(`# Tarn benchmarks (${quick ? "quick" : "full"})\n`);
const tpcb = await benchTpcb(quick ? 300 : 2000);
console.log("## TPC-B-like, 100k accounts, through connect()");
console.log(
  `plain PGlite NodeFS, full_page_writes=on: ${f(tpcb.baseline.tps)} tps, ` +
    `${f(tpcb.baseline.wal_bytes_per_txn)} WAL bytes/txn (no fsync)`,
);
console.log(
  `Tarn (WAL fsynced per commit):            ${f(tpcb.tarn.tps)} tps, ` +
    `${f(tpcb.tarn.wal_bytes_per_txn)} WAL bytes/txn`,
);
console.log(
  `WAL bytes/txn ratio Tarn/baseline: ${f(tpcb.tarn.wal_bytes_per_txn / tpcb.baseline.wal_bytes_per_txn, 3)} ` +
    `(target <= 0.15)`,
);
console.log(`TPS ratio Tarn/baseline: ${f(tpcb.tarn.tps / tpcb.baseline.tps, 2)} (target >= 1.0)\n`);

const open = await benchOpen(quick ? [10, 30] : [10, 100]);
console.log("## Tarn.open of an existing database to first query result (fresh process, median of 5)");
for (const r of open) {
  console.log(
    `${r.size_mb} MB: ${f(r.open_ms_median)} ms (target <= 300); RSS after full scan ${f(r.rss_mb)} MB ` +
      `(target <= 120)`,
  );
}
console.log(
  `open time ratio ${open[1].size_mb} MB / ${open[0].size_mb} MB: ` +
    `${f(open[1].open_ms_median / open[0].open_ms_median, 2)} (target <= 1.3)`,
);

console.log("\n## Branches");
const creates = await benchCreateBranch(quick ? [10, 30] : [10, 200]);
for (const c of creates) console.log(`createBranch at ${c.size_mb} MB: ${f(c.create_ms, 2)} ms (target < 10)`);
console.log(
  `createBranch ratio ${creates[1].size_mb} MB / ${creates[0].size_mb} MB: ` +
    `${f(creates[1].create_ms / creates[0].create_ms, 2)} (target <= 1.5)`,
);
const fork = await benchFork(quick ? 5 : 10);
console.log(
  `fork() to first result, cold: ${f(fork.cold_fork_ms)} ms (target < 50); pooled: ` +
    `${f(fork.pooled_fork_ms, 1)} ms; rewind(): ${f(fork.rewind_ms, 1)} ms (target < 15)`,
);
console.log(
  `PGlite clone() to first result: ${f(fork.clone_ms)} ms; clone/cold fork ` +
    `${f(fork.clone_ms / fork.cold_fork_ms, 1)}x, clone/pooled fork ${f(fork.clone_ms / fork.pooled_fork_ms, 0)}x, ` +
    `clone/rewind ${f(fork.clone_ms / fork.rewind_ms, 0)}x (target >= 25x)`,
);
console.log(`RSS per open fork: ${f(fork.rss_per_fork_mb)} MB (target <= 40)`);
const suite = await benchSuite(quick ? 50 : 200);
console.log(
  `suite of ${quick ? 50 : 200} tests: fork per test ${f(suite.fork_suite_ms)} ms, shared database with ` +
    `rollback ${f(suite.rollback_suite_ms)} ms, ratio ${f(suite.fork_suite_ms / suite.rollback_suite_ms, 2)} ` +
    `(target <= 1.5)`,
);

console.log("\n## Server: pgbench TPC-B, 4 clients (-j 4), data generated server-side");
const served = await benchServer(quick ? 1 : 10, quick ? 5 : 20);
const tps = (name: string) => {
  const found = served.results.find((r) => r.name === name);
  return found !== undefined && "tps" in found ? found.tps : undefined;
};
for (const r of served.results) {
  console.log(`${r.name}: ${"tps" in r ? f(r.tps) + " tps" : "skipped (" + r.skipped + ")"}`);
}
const tarn_tps = tps("tarn start");
const socket_tps = tps("pglite-socket");
const native_tps = tps("native PostgreSQL");
if (tarn_tps !== undefined && socket_tps !== undefined) {
  console.log(`tarn start / pglite-socket: ${f(tarn_tps / socket_tps, 2)} (target >= 1.0; pglite-socket never fsyncs)`);
}
const same_thread_tps = tps("tarn, engine on the server thread");
if (tarn_tps !== undefined && same_thread_tps !== undefined) {
  console.log(`engine in a Worker / on the server thread: ${f(tarn_tps / same_thread_tps, 2)}`);
}
if (tarn_tps !== undefined && native_tps !== undefined) {
  console.log(`tarn start / native: ${f(tarn_tps / native_tps, 2)}`);
}
console.log(
  `connection setup (connect + first query): p50 ${f(served.connection.p50_ms, 1)} ms, ` +
    `p99 ${f(served.connection.p99_ms, 1)} ms`,
);

const copy = await benchCopy(quick ? 50_000 : 500_000);
console.log(`\n## COPY FROM STDIN of ${copy.rows} rows, streamed through the server vs plain PGlite in one call`);
console.log(
  `tarn start (postgres.js): ${f(copy.server_ms)} ms; plain PGlite, one call, no socket: ${f(copy.pglite_ms)} ms; ` +
    `ratio ${f(copy.pglite_ms / copy.server_ms, 2)}`,
);
console.log(`engine failure to the next answered query (new connection): ${f(copy.recovery_ms)} ms`);

console.log("\n## Safekeepers: 3 local `tarn safekeeper` processes vs the embedded WAL log (tarn start, 4 clients)");
const quorum = await benchSafekeepers(quick ? 1 : 10, quick ? 5 : 20);
for (const r of quorum) {
  console.log(
    `${r.name}: ${f(r.tps)} tps; commit latency p50 ${f(r.commit_p50_ms, 2)} ms, p99 ${f(r.commit_p99_ms, 2)} ms`,
  );
}
const [embedded, three, one_down] = quorum;
console.log(`3 safekeepers / embedded TPS: ${f(three.tps / embedded.tps, 2)} (target >= 0.7)`);
console.log(`one safekeeper down / embedded TPS: ${f(one_down.tps / embedded.tps, 2)}`);

console.log(
  "\n## Pageserver: `tarn pageserver` GetPage@LSN; a remote `tarn compute` vs `tarn start` (3 safekeepers each)",
);
printPageserver(await benchPageserver(quick));
