// psql and pgbench against `tarn start` (the real binary entry point, over TCP). Skipped when Debian's
// postgresql-client is not installed; .ci/run installs it.
import { deepStrictEqual, ok } from "node:assert/strict";
import { withTempDir } from "./fixtures/temp_dir.ts";

function installed(command: string): boolean {
  try {
    return new Deno.Command(command, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

const CLIENTS = installed("psql") && installed("pgbench");
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Runs `tarn start` on a free port in a child process until `fn` ends. */
async function withTarnStart(fn: (url: string) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "start", "--data", dir, "--port", "0", "--log-format", "json"],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let port = 0;
      for (let text = ""; port === 0;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("tarn start exited before listening");
        text += value;
        const match = /"event":"listening"[^\n]*"port":(\d+)/.exec(text);
        if (match) port = Number(match[1]);
      }
      // Keep reading its log, so that a full pipe never blocks the server.
      const drained = (async () => {
        while (!(await reader.read()).done);
      })();
      try {
        await fn(`postgresql://postgres@127.0.0.1:${port}/postgres`);
      } finally {
        child.kill("SIGTERM");
        await drained;
      }
    } finally {
      await child.status;
    }
  });
}

async function run(command: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`${command} failed: ${text}`);
  return text;
}

Deno.test({
  name: "tarn start: a psql script with \\copy, a transaction and an error inside one",
  ignore: !CLIENTS,
  fn: () =>
    withTarnStart(async (url) => {
      const script = `
create table people (id int primary key, name text);
\\copy people from stdin
1	ada
2	grace
\\.
begin;
insert into people values (3, 'edsger');
select 1/0;
rollback;
select count(*) as n from people;
\\copy (select name from people order by id) to stdout
`;
      const out = await run("psql", [url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"], script);
      ok(out.includes("division by zero"), out);
      ok(/^2$/m.test(out), out);
      ok(out.includes("ada\ngrace"), out);
    }),
});

Deno.test({
  name: "tarn start: pgbench -i and 4 clients, then pgbench's tables are consistent",
  ignore: !CLIENTS,
  fn: () =>
    withTarnStart(async (url) => {
      await run("pgbench", ["-i", "-s", "1", url]);
      const out = await run("pgbench", ["-c", "4", "-T", "3", url]);
      const processed = Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1]);
      ok(processed > 0, out);
      const check = await run("psql", [
        url,
        "-X",
        "-A",
        "-t",
        "-c",
        `
        select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history),
               (select sum(bbalance) from pgbench_branches) = (select sum(delta) from pgbench_history),
               (select count(*) from pgbench_history)`,
      ]);
      deepStrictEqual(check.trim().split("|"), ["t", "t", String(processed)]);
    }),
});
