/**
 * GetPage cost as history grows: one page store (a real directory, layers flushed and merged as the pageserver does)
 * holds the same 2,000 pages of data while they are updated again and again with small deltas. GetPage at the head
 * is timed for random pages (a 1 MiB block cache, so most reads decompress a block) after 1x and after 10x the
 * updates, and after a GC that keeps only the newest history. The goal: p99 after 10x <= 1.2x p99 after 1x.
 *
 * Run: `deno run -A bench/getpage_history.ts`
 *
 * @module
 */
import { type Lsn, LSN_MAX } from "../src/lsn.ts";
import { BLOCK_SIZE } from "../src/storage/page_api.ts";
import { PageStore } from "../src/storage/page_store.ts";

const TIMELINE = "0123456789abcdef0123456789abcdef";
const FILE = "base/5/16384";
const PAGES = 2000;
/** Updates per page in the first phase; the second adds 9x as many. */
const UPDATES_PER_PAGE = 6;
/** Versions per flushed layer, about what a pageserver flushes each second under load. */
const VERSIONS_PER_FLUSH = 2000;
const READS = 20_000;

let state = 42;
const rand = (n: number) => (state = (state * 1103515245 + 12345) & 0x7fffffff) % n;

async function fill(store: PageStore): Promise<Lsn> {
  store.putEvent("base", 1n, { kind: "mkdir" });
  store.putEvent("base/5", 1n, { kind: "mkdir" });
  store.putEvent(FILE, 2n, { kind: "create" });
  store.putEvent(FILE, 2n, { kind: "resize", size_bytes: PAGES * BLOCK_SIZE });
  for (let b = 0; b < PAGES; b++) {
    const page = new Uint8Array(BLOCK_SIZE).map((_, i) => (i * 7 + b) & 0xff);
    store.putPage(FILE, b, 3n, { kind: "image", bytes: page });
  }
  await store.flush(3n);
  return 3n;
}

/** `count` small updates of random pages, from `lsn` on; flushed as a pageserver would. */
async function update(store: PageStore, lsn: Lsn, count: number): Promise<Lsn> {
  for (let i = 0; i < count; i++) {
    lsn += 100n;
    const bytes = new Uint8Array(24).fill(rand(256));
    store.putPage(FILE, rand(PAGES), lsn, { kind: "delta", ranges: [{ offset: 64 + rand(8000), bytes }] });
    if (i % VERSIONS_PER_FLUSH === VERSIONS_PER_FLUSH - 1) await store.flush(lsn);
  }
  await store.flush(lsn);
  return lsn;
}

/** Rounds of {@linkcode READS} reads; each figure is the median over the rounds (a GC pause hits one round). */
const ROUNDS = 5;

/** p50 and p99 of GetPage at the head over random pages, in microseconds. */
function measure(store: PageStore): { p50_us: number; p99_us: number } {
  const rounds: { p50_us: number; p99_us: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const times: number[] = [];
    for (let i = 0; i < READS; i++) {
      const started = performance.now();
      store.getPage(FILE, rand(PAGES), LSN_MAX);
      times.push((performance.now() - started) * 1000);
    }
    times.sort((a, b) => a - b);
    rounds.push({ p50_us: times[Math.floor(READS / 2)], p99_us: times[Math.floor(READS * 0.99)] });
  }
  const median = (pick: (r: { p50_us: number; p99_us: number }) => number) =>
    rounds.map(pick).sort((a, b) => a - b)[Math.floor(ROUNDS / 2)];
  return { p50_us: median((r) => r.p50_us), p99_us: median((r) => r.p99_us) };
}

const dir = await Deno.makeTempDir({ prefix: "tarn-bench-history-" });
try {
  const open = () => PageStore.open({ dir, timeline_id: TIMELINE, memory_limit_bytes: 1024 * 1024 });
  let store = await open();
  let lsn = await fill(store);
  lsn = await update(store, lsn, PAGES * UPDATES_PER_PAGE);
  await store.close();
  store = await open(); // a cold block cache, as after a restart
  measure(store); // warm the JIT
  const one = { ...measure(store), layers: store.layer_count, mb: store.disk_bytes / 1e6 };
  lsn = await update(store, lsn, PAGES * UPDATES_PER_PAGE * 9);
  await store.close();
  store = await open();
  const ten = { ...measure(store), layers: store.layer_count, mb: store.disk_bytes / 1e6 };
  await store.gc(lsn - BigInt(PAGES * UPDATES_PER_PAGE) * 100n, []);
  const collected = { ...measure(store), layers: store.layer_count, mb: store.disk_bytes / 1e6 };
  await store.close();
  const row = (name: string, r: typeof one) =>
    console.log(
      `${name.padEnd(26)} p50 ${r.p50_us.toFixed(1).padStart(6)} us  p99 ${r.p99_us.toFixed(1).padStart(7)} us  ` +
        `${String(r.layers).padStart(3)} layers  ${r.mb.toFixed(1).padStart(6)} MB`,
    );
  console.log(`GetPage at the head, ${PAGES} pages, ${READS} random reads x ${ROUNDS} (medians), 1 MiB block cache`);
  row(`${UPDATES_PER_PAGE} updates a page`, one);
  row(`${UPDATES_PER_PAGE * 10} updates a page (10x)`, ten);
  row("10x, then GC (1x kept)", collected);
  console.log(`p99 ratio 10x / 1x: ${(ten.p99_us / one.p99_us).toFixed(2)} (goal <= 1.2)`);
  console.log(`p99 ratio 10x after GC / 1x: ${(collected.p99_us / one.p99_us).toFixed(2)}`);
} finally {
  await Deno.remove(dir, { recursive: true });
}
