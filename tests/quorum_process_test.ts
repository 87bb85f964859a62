// Three `tarn safekeeper` processes and `tarn start --safekeepers` under pgbench: safekeepers and the server are
// SIGKILLed and restarted; no acknowledged commit may be lost. Skipped without Debian's pgbench.
import { ok } from "node:assert/strict";
import postgres from "postgres";
import { historyCount, PGBENCH, pgbench } from "./fixtures/pgbench.ts";
import { spawnSafekeeper, spawnTarn, type TarnProcess } from "./fixtures/tarn_process.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

function startServer(data: string, safekeepers: TarnProcess[]): Promise<TarnProcess> {
  const list = safekeepers.map((sk) => `127.0.0.1:${sk.port}`).join(",");
  return spawnTarn(["start", "--data", data, "--port", "0", "--safekeepers", list]);
}

/** Cuts the last 100 bytes off the newest WAL segment file under a safekeeper's directory. */
async function tearNewestSegment(dir: string): Promise<void> {
  const files: string[] = [];
  const walk = async (path: string) => {
    for await (const entry of Deno.readDir(path)) {
      const child = `${path}/${entry.name}`;
      if (entry.isDirectory) await walk(child);
      else if (entry.name.endsWith(".tarnwal")) files.push(child);
    }
  };
  await walk(dir);
  const newest = files.sort().at(-1)!;
  await Deno.truncate(newest, (await Deno.stat(newest)).size - 100);
}

async function flushLsn(safekeeper: TarnProcess): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${safekeeper.port}/status`);
  const status = await response.json() as { timelines: { flush_lsn: string }[] };
  return status.timelines.map((t) => t.flush_lsn).join(" ");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test({
  name: "quorum: pgbench survives a safekeeper's SIGKILL, waits without a majority, loses nothing with the server",
  ignore: !PGBENCH,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir(async (dir) => {
      const sks = await Promise.all([1, 2, 3].map((id) => spawnSafekeeper(`${dir}/sk${id}`, id)));
      const ports = sks.map((sk) => sk.port);
      let server = await startServer(`${dir}/data`, sks);
      const url = () => `postgresql://postgres@127.0.0.1:${server.port}/postgres`;
      try {
        const init = await pgbench(url(), ["-i", "-s", "1"]);
        ok(/done in/.test(init.text), init.text);

        // One safekeeper dies under load: commits go on with the other two.
        const load = pgbench(url(), ["-c", "2", "-T", "4"]);
        await sleep(1000);
        await sks[0].kill();
        const first = await load;
        ok(first.processed > 0 && !/aborted/.test(first.text), first.text);

        // Two down: a commit waits; one back: it completes.
        await sks[1].kill();
        const sql = postgres(url(), { max: 1, onnotice: () => {} });
        let committed = false;
        const insert = sql`insert into pgbench_history (tid, bid, aid, delta) values (1, 1, 1, 0)`.then(() =>
          committed = true
        );
        await sleep(1500);
        ok(!committed, "a commit was acknowledged without a majority of safekeepers");
        sks[0] = await spawnSafekeeper(`${dir}/sk1`, 1, ports[0]);
        await insert;
        await sql.end();
        // Its newest WAL segment lost its last bytes (a torn write): it finds that by checksum and catches up.
        await tearNewestSegment(`${dir}/sk2`);
        sks[1] = await spawnSafekeeper(`${dir}/sk2`, 2, ports[1]);
        ok(sks[1].events.some((e) => e.event === "timeline_repaired"), JSON.stringify(sks[1].events));

        // The server dies under load: every transaction pgbench saw committed is there after a restart (pgbench
        // empties pgbench_history when it starts a run).
        const killed_load = pgbench(url(), ["-c", "2", "-T", "30"]);
        await sleep(2000);
        await server.kill();
        const second = await killed_load;
        ok(second.processed > 0, second.text);
        server = await startServer(`${dir}/data`, sks);
        const after = await historyCount(url());
        ok(
          after >= second.processed && after <= second.processed + 2,
          `history has ${after} rows, and pgbench saw ${second.processed} transactions committed`,
        );
        // Restarted safekeepers catch up: all three reach the same flush LSN.
        let flushed: string[] = [];
        for (let tries = 0; tries < 100; tries++) {
          flushed = await Promise.all(sks.map(flushLsn));
          if (flushed.every((lsn) => lsn === flushed[0])) break;
          await sleep(100);
        }
        ok(flushed.every((lsn) => lsn === flushed[0]), `flush LSNs differ: ${flushed.join(", ")}`);

        // `tarn status --safekeepers` shows each one's term and LSNs.
        const list = sks.map((sk) => `127.0.0.1:${sk.port}`).join(",");
        const output = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            new URL("../main.ts", import.meta.url).pathname,
            "status",
            "--safekeepers",
            list,
            "--json",
          ],
          stdout: "piped",
        }).output();
        const report = JSON.parse(new TextDecoder().decode(output.stdout)) as {
          safekeepers: { timelines: { term: number; flush_lsn: string }[] }[];
        };
        ok(
          report.safekeepers.length === 3 && report.safekeepers.every((r) => r.timelines[0].term >= 2),
          JSON.stringify(report),
        );
      } finally {
        await server.stop().catch(() => {});
        for (const sk of sks) await sk.stop().catch(() => {});
      }
    }),
});

Deno.test({
  name: "quorum: without a majority a commit waits; SIGTERM then waits too, and a second SIGTERM exits at once",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir(async (dir) => {
      const sks = await Promise.all([1, 2, 3].map((id) => spawnSafekeeper(`${dir}/sk${id}`, id)));
      const server = await startServer(`${dir}/data`, sks);
      try {
        const sql = postgres({ host: "127.0.0.1", port: server.port, user: "postgres", max: 1, onnotice: () => {} });
        await sql`create table t (id int)`;
        await sql`insert into t values (1)`;
        await sks[0].kill();
        await sks[1].kill();
        let acknowledged = false;
        sql`insert into t values (2)`.then(() => acknowledged = true, () => {});
        await sleep(500);
        server.child.kill("SIGTERM");
        await sleep(1000);
        ok(!acknowledged, "a commit was acknowledged without a majority");
        const exited = Promise.race([server.child.status.then(() => true), sleep(1000).then(() => false)]);
        ok(!(await exited), "the server stopped before its WAL was durable");
        server.child.kill("SIGTERM");
        const status = await server.child.status;
        ok(status.code === 130 && !acknowledged, `exit code ${status.code}`);
        sql.end({ timeout: 0 }).catch(() => {});
      } finally {
        await server.kill();
        for (const sk of sks) await sk.stop().catch(() => {});
      }
    }),
});
