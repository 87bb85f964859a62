/**
 * GetPage@LSN against a real `tarn pageserver` process over loopback TCP, from a raw protocol client: single-page
 * get_pages requests for existing pages of a tenant a `tarn compute` filled, one connection with one request in
 * flight, then 8 such connections in parallel.
 *
 * @module
 */
import postgres from "postgres";
import { type Lsn, LSN_MAX } from "../src/lsn.ts";
import { type Frame, FrameSplitter } from "../src/pageserver/frames.ts";
import {
  decodeMessage,
  encodeMessage,
  type PageKey,
  type Reply,
  type Request,
  type RequestBody,
} from "../src/pageserver/messages.ts";
import { BLOCK_SIZE } from "../src/storage/page_api.ts";
import { prng } from "../tests/fixtures/prng.ts";
import { spawnCompute, type TarnProcess } from "../tests/fixtures/tarn_process.ts";

/** Latency percentiles and throughput of one run. */
export type GetPageRun = { p50_ms: number; p99_ms: number; pages_per_s: number };
/** What {@linkcode benchGetPage} measured. */
export type GetPageFigures = { relation_mb: number; serial: GetPageRun; parallel: GetPageRun; connections: number };

type Answer<T extends Reply["type"]> = Extract<Reply, { type: T }>;

/** One protocol connection, one request in flight at a time. */
class PageClient {
  readonly #conn: Deno.TcpConn;
  readonly #splitter = new FrameSplitter();
  readonly #buffer = new Uint8Array(256 * 1024);
  #frames: Frame[] = [];
  #next_id = 1;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** Connects to the pageserver on `port` and binds the connection to `tenant` (which must exist). */
  static async open(port: number, tenant: string): Promise<PageClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    const client = new PageClient(conn);
    await client.request({ type: "hello", tenant, create: false }, "hello_ok");
    return client;
  }

  /** Sends `body` and resolves with its reply, which must be of type `expect`. */
  async request<T extends Reply["type"]>(body: RequestBody, expect: T): Promise<Answer<T>> {
    const id = this.#next_id++;
    const bytes = encodeMessage({ ...body, id } as Request);
    for (let done = 0; done < bytes.length;) done += await this.#conn.write(bytes.subarray(done));
    while (this.#frames.length === 0) {
      const n = await this.#conn.read(this.#buffer);
      if (n === null) throw new Error("the pageserver closed the connection");
      this.#frames = this.#splitter.push(this.#buffer.subarray(0, n));
    }
    const reply = decodeMessage(this.#frames.shift()!) as Reply;
    if (reply.type === "error") throw new Error(`pageserver: ${reply.code}: ${reply.message}`);
    if (reply.type !== expect || reply.id !== id) throw new Error(`expected ${expect} #${id}, got ${reply.type}`);
    return reply as Answer<T>;
  }

  close(): void {
    this.#conn.close();
  }
}

/** Fills tenant `tenant` with a ~10 MB table through a compute, then stops it cleanly so the pageserver has it. */
async function fillTenant(pageserver: TarnProcess, safekeepers: TarnProcess[], tenant: string): Promise<void> {
  const compute = await spawnCompute(pageserver, safekeepers, tenant);
  try {
    const sql = postgres({ host: "127.0.0.1", port: compute.port, user: "postgres", max: 1, onnotice: () => {} });
    await sql`create table t as select g, repeat('x', 500) as pad from generate_series(1, 20000) g`;
    await sql`checkpoint`;
    await sql.end();
  } finally {
    await compute.stop();
  }
}

/** Every block of every relation file of the timeline at `lsn`, with the relation bytes listed. */
async function existingPages(client: PageClient, timeline_id: string, lsn: Lsn) {
  const keys: PageKey[] = [];
  let bytes = 0;
  let largest = 0;
  for (let after = "", more = true; more;) {
    const files = await client.request({ type: "list_files", timeline_id, lsn, after }, "files");
    for (const { path, meta } of files.entries) {
      if (!path.startsWith("base/") || meta.kind !== "file") continue;
      bytes += meta.size_bytes;
      largest = Math.max(largest, meta.size_bytes);
      for (let blkno = 0; blkno < meta.size_bytes / BLOCK_SIZE; blkno++) {
        keys.push({ path, blkno, not_modified_since: 0n });
      }
    }
    more = files.more;
    after = files.entries.at(-1)?.path ?? "";
  }
  return { keys, relation_mb: bytes / 1024 / 1024, largest_mb: largest / 1024 / 1024 };
}

/** `count` single-page requests in turn on `client`, random keys; resolves with each one's latency (ms). */
async function getPages(client: PageClient, timeline_id: string, keys: PageKey[], count: number, seed: number) {
  const random = prng(seed);
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const key = keys[Math.floor(random() * keys.length)];
    const started = performance.now();
    const { pages } = await client.request({ type: "get_pages", timeline_id, lsn: LSN_MAX, keys: [key] }, "pages");
    times.push(performance.now() - started);
    if (pages.length !== 1 || pages[0] === "absent") throw new Error(`${key.path} block ${key.blkno}: no page`);
  }
  return times;
}

/** Runs `count` requests on each client at once; percentiles over all requests, pages/s over the wall time. */
async function measure(clients: PageClient[], timeline_id: string, keys: PageKey[], count: number) {
  const started = performance.now();
  const runs = await Promise.all(clients.map((client, i) => getPages(client, timeline_id, keys, count, i + 1)));
  const elapsed_ms = performance.now() - started;
  const times = runs.flat().sort((a, b) => a - b);
  return {
    p50_ms: times[Math.floor(times.length * 0.5)],
    p99_ms: times[Math.floor(times.length * 0.99)],
    pages_per_s: times.length / (elapsed_ms / 1000),
  };
}

/** GetPage@LSN latency and throughput on tenant "bench" (created and filled here): 1 and `connections` clients. */
export async function benchGetPage(
  pageserver: TarnProcess,
  safekeepers: TarnProcess[],
  requests: number,
  connections = 8,
): Promise<GetPageFigures> {
  const tenant = "bench";
  await fillTenant(pageserver, safekeepers, tenant);
  const clients: PageClient[] = [];
  try {
    for (let i = 0; i < connections; i++) clients.push(await PageClient.open(pageserver.port, tenant));
    const { info } = await clients[0].request({ type: "branch_info", branch: "main" }, "branch_info_ok");
    const { keys, relation_mb, largest_mb } = await existingPages(clients[0], info.timeline_id, LSN_MAX);
    if (largest_mb < 8) {
      throw new Error(`the pageserver's largest relation is ${largest_mb.toFixed(1)} MB, not table t`);
    }
    await measure(clients, info.timeline_id, keys, Math.ceil(requests / 4)); // warm-up: every connection, the cache
    const serial = await measure(clients.slice(0, 1), info.timeline_id, keys, requests);
    const parallel = await measure(clients, info.timeline_id, keys, Math.ceil(requests / connections) * 2);
    return { relation_mb, serial, parallel, connections };
  } finally {
    for (const client of clients) client.close();
  }
}
