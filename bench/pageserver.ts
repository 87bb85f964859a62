/**
 * Pageserver benchmarks on real processes (3 `tarn safekeeper`, 1 `tarn pageserver`, `tarn compute` and `tarn start`
 * children, all on 127.0.0.1): GetPage@LSN latency (`pageserver_getpage.ts`), then a remote compute against
 * `tarn start` (`pageserver_compare.ts`). Part of `deno task bench`; alone: `deno run -A bench/pageserver.ts [--quick]`.
 *
 * @module
 */
import { spawnPageserver, spawnSafekeeper, type TarnProcess } from "../tests/fixtures/tarn_process.ts";
import { benchGetPage, type GetPageFigures } from "./pageserver_getpage.ts";
import { measureSetup, remoteSetup, type SetupFigures, type StartFigures, startSetup } from "./pageserver_compare.ts";

/** Everything {@linkcode benchPageserver} measured. */
export type PageserverFigures = { getpage: GetPageFigures; setups: SetupFigures[]; scale: number; seconds: number };

/** Runs every pageserver benchmark on a cluster started (and stopped) here; `quick` runs smaller sizes. */
export async function benchPageserver(quick: boolean): Promise<PageserverFigures> {
  const sizes = quick
    ? { scale: 1, seconds: 5, big_rows: 20_000, starts: 3 }
    : { scale: 10, seconds: 10, big_rows: 100_000, starts: 5 };
  const dir = await Deno.makeTempDir({ prefix: "tarn-bench-pageserver-" });
  const processes: TarnProcess[] = [];
  try {
    const safekeepers: TarnProcess[] = [];
    for (const id of [1, 2, 3]) processes.push(await spawnSafekeeper(`${dir}/sk${id}`, id));
    safekeepers.push(...processes);
    const pageserver = await spawnPageserver(`${dir}/ps`);
    processes.push(pageserver);
    const getpage = await benchGetPage(pageserver, safekeepers, quick ? 2_000 : 10_000);
    const setups = [
      await measureSetup(remoteSetup(pageserver, safekeepers, "tpcb"), sizes, true),
      await measureSetup(startSetup("tarn start, 3 safekeepers", `${dir}/start_sk`, safekeepers), sizes, true),
      await measureSetup(startSetup("tarn start, local WAL", `${dir}/start`, []), sizes, false),
    ];
    return { getpage, setups, scale: sizes.scale, seconds: sizes.seconds };
  } finally {
    for (const child of processes) await child.kill();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Prints the figures with their goals. */
export function printPageserver(figures: PageserverFigures): void {
  const f = (n: number, digits = 0) => n.toFixed(digits);
  const { getpage: g, setups } = figures;
  console.log(`GetPage@LSN, single-page requests over ${f(g.relation_mb, 1)} MB of relation files, loopback TCP:`);
  console.log(
    `1 connection: p50 ${f(g.serial.p50_ms, 3)} ms, p99 ${f(g.serial.p99_ms, 3)} ms (target < 0.5; Neon pagebench ` +
      `p99 0.747), ${f(g.serial.pages_per_s)} requests/s`,
  );
  console.log(
    `${g.connections} connections: p50 ${f(g.parallel.p50_ms, 3)} ms, p99 ${f(g.parallel.p99_ms, 3)} ms ` +
      `(target < 0.5), ${f(g.parallel.pages_per_s)} pages/s in all`,
  );
  console.log(`pgbench TPC-B, scale ${figures.scale}, 4 clients, ${figures.seconds} s:`);
  for (const s of setups) console.log(`${s.name}: ${f(s.tps)} tps`);
  const [remote, start] = setups;
  console.log(`remote / tarn start (both on 3 safekeepers) TPS: ${f(remote.tps / start.tps, 2)} (target >= 0.8)`);
  if (remote.scan === undefined || start.scan === undefined || remote.start === undefined) return;
  console.log(`sequential scan of a ${f(remote.scan.table_mb)} MB table after a restart (cold) and again (warm):`);
  for (const s of [remote, start]) {
    console.log(`${s.name}: cold ${f(s.scan!.cold_ms)} ms, warm ${f(s.scan!.warm_ms)} ms`);
  }
  console.log(
    `remote / tarn start speed, cold: ${f(start.scan.cold_ms / remote.scan.cold_ms, 2)} (target >= 0.8); ` +
      `warm: ${f(start.scan.warm_ms / remote.scan.warm_ms, 2)}`,
  );
  console.log(`spawn of a fresh process to its first answered query (${remote.start.runs} runs):`);
  const starts = (s: StartFigures) =>
    `p50 ${f(s.p50_ms)} ms, max ${f(s.max_ms)} ms (spawn to listening p50 ${f(s.listening_p50_ms)} ms)`;
  console.log(`tarn compute: ${starts(remote.start)} (target < 500)`);
  if (start.start !== undefined) console.log(`tarn start on an existing directory: ${starts(start.start)}`);
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  console.log(`# Pageserver benchmarks (${quick ? "quick" : "full"})\n`);
  printPageserver(await benchPageserver(quick));
}
