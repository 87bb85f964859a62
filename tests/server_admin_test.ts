import { deepStrictEqual, equal, ok } from "node:assert/strict";
import postgres from "postgres";
import { spawnTarn } from "./fixtures/tarn_process.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function tarn(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", MAIN, ...args] }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

Deno.test({
  name: "tarn branch and tarn status work on a directory a running server holds, through that server",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () =>
    withTempDir(async (dir) => {
      const data = `${dir}/data`;
      const server = await spawnTarn(["start", "--data", data, "--port", "0"]);
      try {
        const created = await tarn(["branch", "create", "dev", "--data", data]);
        equal(created.code, 0, created.stderr);
        ok(/^dev\s+from main at \d+\/[0-9A-F]+/.test(created.stdout), created.stdout);

        const sql = postgres({ host: "127.0.0.1", port: server.port, database: "dev", user: "postgres", max: 1 });
        deepStrictEqual([...await sql`select 1 as one`], [{ one: 1 }]);
        await sql.end();

        const listed = await tarn(["branch", "list", "--json", "--data", data]);
        const names = (JSON.parse(listed.stdout) as { name: string }[]).map((b) => b.name).sort();
        deepStrictEqual(names, ["dev", "main"]);

        const duplicate = await tarn(["branch", "create", "dev", "--data", data]);
        equal(duplicate.code, 1);
        ok(/exists already/.test(duplicate.stderr), duplicate.stderr);

        const status = await tarn(["status", "--json", "--data", data]);
        const rows = JSON.parse(status.stdout).branches as { name: string; disk_bytes: number }[];
        ok(rows.find((r) => r.name === "main")!.disk_bytes > 0, status.stdout);

        equal((await tarn(["branch", "delete", "dev", "--data", data])).code, 0);
        const bad = await fetch(`http://127.0.0.1:${server.port}/admin`, { method: "POST", body: '{"op":"drop"}' });
        equal(bad.status, 400);
        equal((await bad.json()).error.name, "AdminRequestError");
        // PostgreSQL clients on the same port are unaffected.
        const main = postgres({ host: "127.0.0.1", port: server.port, user: "postgres", max: 1 });
        deepStrictEqual([...await main`select 2 as two`], [{ two: 2 }]);
        await main.end();
      } finally {
        equal(await server.stop(), 0);
      }
      await Deno.stat(`${data}/server.json`).then(() => ok(false, "server.json outlived its server"), () => {});
    }),
});
