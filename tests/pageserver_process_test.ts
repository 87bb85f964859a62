// `tarn pageserver` and `tarn compute` as real processes on loopback, with three `tarn safekeeper`: fencing of an
// older compute, a pageserver SIGKILLed and restarted under a read-after-write loop, two tenants kept apart, and a
// branch made through the HTTP API served by a compute started with `--branch`.
import { deepEqual, equal, match, ok } from "node:assert/strict";
import pg from "pg";
import postgres from "postgres";
import { spawnCompute, spawnPageserver, type TarnProcess, withCluster } from "./fixtures/tarn_process.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const urlOf = (compute: TarnProcess, database = "postgres") =>
  `postgresql://postgres@127.0.0.1:${compute.port}/${database}`;
const connect = (compute: TarnProcess, database?: string) =>
  postgres(urlOf(compute, database), { max: 1, onnotice: () => {}, connect_timeout: 30 });

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Runs the `tarn` CLI; resolves with its output (stdout, then stderr) once it exits with `code`. */
async function tarnCli(args: string[], code = 0): Promise<string> {
  const output = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, ...args] }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  equal(output.code, code, text);
  return text;
}

const processTest = (name: string, fn: (dir: string) => Promise<void>, ignore = false) =>
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn: () => withTempDir(fn) });

/** One statement on a fresh node-postgres connection: its rows, or the error it met (a FATAL ends the connection). */
async function once(compute: TarnProcess, text: string): Promise<{ rows?: unknown[]; error?: Error }> {
  const client = new pg.Client({ connectionString: urlOf(compute) });
  client.on("error", () => {});
  try {
    await client.connect();
    return { rows: (await client.query(text)).rows };
  } catch (error) {
    return { error: error as Error };
  } finally {
    await client.end().catch(() => {});
  }
}

processTest(
  "fencing: a second compute on a branch wins; the first's writes fail clearly; the data is the second's",
  (dir) =>
    withCluster(dir, async ({ sks, ps, started }) => {
      const first = await spawnCompute(ps, sks, "acme");
      started.push(first);
      equal((await once(first, "create table t (v text); insert into t values ('first')")).error, undefined);
      const second = await spawnCompute(ps, sks, "acme");
      started.push(second);
      equal((await once(second, "insert into t values ('second')")).error, undefined);
      // The write that finds out: its commit cannot reach a majority any more, or the pageserver refused its pages.
      const refused = await once(first, "insert into t values ('first again')");
      match(String(refused.error?.message), /no longer accept this compute's WAL: safekeeper \d is in term|taken over/);
      // It stays fenced: it does not take the branch back by itself.
      const still = await once(first, "insert into t values ('first once more')");
      match(
        String(still.error?.message),
        /ComputeFencedError: branch main was taken over|no longer accept this compute/,
      );
      equal((await once(second, "insert into t values ('second again')")).error, undefined);
      const { rows } = await once(second, "select v from t order by v");
      deepEqual(rows, [{ v: "first" }, { v: "second" }, { v: "second again" }]);
    }),
);

processTest(
  "pageserver: SIGKILLed under a read-after-write loop and restarted, the compute resumes, nothing is lost or stale",
  (dir) =>
    withCluster(dir, async ({ sks, ps, started }) => {
      const compute = await spawnCompute(ps, sks, "acme");
      started.push(compute);
      const setup = connect(compute);
      await setup`create table counter (id int primary key, v int not null)`;
      await setup`insert into counter values (1, 0)`;
      await setup.end();
      let acknowledged = 0;
      let attempted = 0;
      let failures = 0;
      let pageserver = ps;
      const loop = async (until_ms: number) => {
        while (performance.now() < until_ms) {
          const client = new pg.Client({ connectionString: urlOf(compute) });
          client.on("error", () => {});
          try {
            await client.connect();
            while (performance.now() < until_ms) {
              attempted++;
              const { rows: [row] } = await client.query("update counter set v = v + 1 where id = 1 returning v");
              acknowledged++;
              const { rows: [read] } = await client.query("select v from counter where id = 1");
              ok(read.v >= row.v, `read ${read.v} after writing ${row.v}`);
              ok(row.v >= acknowledged, `counter ${row.v} after ${acknowledged} acknowledged updates`);
            }
          } catch (error) {
            if ((error as Error).name === "AssertionError") throw error;
            failures++;
            await sleep(100);
          } finally {
            await client.end().catch(() => {});
          }
        }
      };
      const running = loop(performance.now() + 9000);
      await sleep(2000);
      await pageserver.kill();
      await sleep(500);
      pageserver = await spawnPageserver(`${dir}/ps`, ps.port);
      started.push(pageserver);
      await running;
      const sql = connect(compute);
      const [{ v }] = await sql`select v from counter where id = 1`;
      await sql.end();
      ok(v >= acknowledged && v <= attempted, `counter ${v}: ${acknowledged} acknowledged, ${attempted} attempted`);
      ok(acknowledged > 20, `only ${acknowledged} updates went through (${failures} failures)`);
    }),
);

processTest(
  "tenants are isolated, and a branch made through the HTTP API is served by a compute with --branch",
  (dir) =>
    withCluster(dir, async ({ sks, ps, started }) => {
      const acme = await spawnCompute(ps, sks, "acme");
      const umbrella = await spawnCompute(ps, sks, "umbrella");
      started.push(acme, umbrella);
      const a = connect(acme);
      const u = connect(umbrella);
      await a`create table items (name text)`;
      await a`insert into items values ('anvil')`;
      await u`create table items (name text)`;
      await u`insert into items values ('umbrella')`;
      deepEqual((await a`select name from items`).map((r) => r.name), ["anvil"]);
      deepEqual((await u`select name from items`).map((r) => r.name), ["umbrella"]);

      const api = `http://127.0.0.1:${ps.port}/v1/tenants`;
      const tenants = await (await fetch(api)).json() as { name: string }[];
      deepEqual(tenants.map((t) => t.name).sort(), ["acme", "umbrella"]);
      const created = await fetch(`${api}/acme/branches`, { method: "POST", body: JSON.stringify({ name: "dev" }) });
      equal(created.status, 201, await created.clone().text());
      await created.body?.cancel();
      await a`insert into items values ('after the branch')`;
      const listed = JSON.parse(
        await tarnCli(["branch", "list", "--pageserver", `127.0.0.1:${ps.port}`, "--tenant", "acme", "--json"]),
      );
      deepEqual(listed.map((b: { name: string }) => b.name).sort(), ["dev", "main"]);
      const refused = await tarnCli(["branch", "list", "--pageserver", `127.0.0.1:${ps.port}`, "--tenant", "nope"], 1);
      match(refused, /no tenant "nope"/);

      const dev = await spawnCompute(ps, sks, "acme", ["--branch", "dev"]);
      started.push(dev);
      const d = connect(dev);
      await d`insert into items values ('dev only')`;
      deepEqual((await d`select name from items order by name`).map((r) => r.name), ["anvil", "dev only"]);
      deepEqual((await a`select name from items order by name`).map((r) => r.name), ["after the branch", "anvil"]);
      const unknown = await fetch(`${api}/nope/branches`);
      equal(unknown.status, 404);
      match((await unknown.json()).error.message, /nope/);
      await Promise.all([a.end(), u.end(), d.end()]);

      // The compute's own port answers /status and /metrics with what it sees of the pageserver.
      const status = await (await fetch(`http://127.0.0.1:${acme.port}/status`)).json();
      equal(status.branches[0].branch, "main");
      ok(status.branches[0].getpage.requests > 0 && status.branches[0].wal.flushes > 0, JSON.stringify(status));
      const metrics = await (await fetch(`http://127.0.0.1:${acme.port}/metrics`)).text();
      match(metrics, /^tarn_compute_getpage_requests_total\{branch="main",timeline="[0-9a-f]{32}"\} [1-9]/m);
      match(metrics, /^tarn_statement_seconds_count [1-9]/m);
    }),
);

/** The resident memory of a process (MB), from /proc. */
async function rssMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? "0") / 1024;
}

/** Waits until `count` events named `name` were logged (at most `timeout_ms`). */
async function events(process: TarnProcess, name: string, count: number, timeout_ms = 20_000): Promise<void> {
  const deadline_ms = performance.now() + timeout_ms;
  while (process.events.filter((e) => e.event === name).length < count) {
    if (performance.now() > deadline_ms) throw new Error(`no ${count} "${name}" events in ${timeout_ms} ms`);
    await sleep(50);
  }
}

processTest(
  "scale to zero: an idle compute suspends (its Postgres stops), and the next connection is served",
  (dir) =>
    withCluster(dir, async ({ sks, ps, started }) => {
      const compute = await spawnCompute(ps, sks, "acme", ["--suspend-after", "1s"]);
      started.push(compute);
      equal((await once(compute, "create table t (v text); insert into t values ('kept')")).error, undefined);
      const busy_mb = await rssMb(compute.child.pid);
      await events(compute, "compute_suspended", 1);
      const status = await (await fetch(`http://127.0.0.1:${compute.port}/status`)).json();
      deepEqual(status.branches, [], "no branch runs while suspended");
      const idle_mb = await rssMb(compute.child.pid);
      const started_ms = performance.now();
      const { rows } = await once(compute, "select v from t");
      const resume_ms = Math.round(performance.now() - started_ms);
      deepEqual(rows, [{ v: "kept" }]);
      equal(compute.events.filter((e) => e.event === "timeline_attached").length, 2, "it started again");
      console.log(
        `RSS ${busy_mb.toFixed(0)} MB running, ${idle_mb.toFixed(0)} MB suspended; first query ${resume_ms} ms`,
      );
    }),
);
