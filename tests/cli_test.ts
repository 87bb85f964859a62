import { deepStrictEqual, ok } from "node:assert/strict";
import { withTempDir } from "./fixtures/temp_dir.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function tarn(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, out: decode(output.stdout), err: decode(output.stderr) };
}

Deno.test("cli: --help everywhere, and a bad command, flag or value is exit code 2 naming it", async () => {
  for (const command of [[], ["start"], ["branch"], ["status"], ["demo"]]) {
    const { code, out } = await tarn(...command, "--help");
    deepStrictEqual(code, 0);
    ok(out.includes("tarn"), out);
  }
  const bad = [
    [["frobnicate"], "unknown command"],
    [["start", "--bogus", "1"], "--bogus"],
    [["start", "--port", "99999"], "--port"],
    [["start", "--host", "0.0.0.0"], "beyond loopback"],
    [["branch", "create", "x", "--at", "banana"], "--at"],
    [["branch", "explode"], "unknown subcommand"],
    [["start", "--suspend-after", "5 minutes"], "--suspend-after"],
    [["compute", "--suspend-after", "12"], "--suspend-after"],
  ] as const;
  for (const [args, says] of bad) {
    const { code, err } = await tarn(...args);
    deepStrictEqual(code, 2, `${args.join(" ")}: ${err}`);
    ok(err.includes(says), `${args.join(" ")}: ${err}`);
  }
});

Deno.test("cli: branch create, list, protect, delete and status on a data directory", async () => {
  await withTempDir(async (dir) => {
    deepStrictEqual((await tarn("demo", "--data", dir)).code, 0);
    const created = await tarn("branch", "create", "dev", "--data", dir);
    deepStrictEqual(created.code, 0, created.err);
    ok(created.out.startsWith("dev"), created.out);
    const listed = JSON.parse((await tarn("branch", "list", "--json", "--data", dir)).out);
    deepStrictEqual(listed.map((b: { name: string }) => b.name), ["main", "dev"]);
    await tarn("branch", "protect", "dev", "--data", dir);
    const refused = await tarn("branch", "delete", "dev", "--data", dir);
    deepStrictEqual(refused.code, 1);
    ok(refused.err.includes("protected"), refused.err);
    await tarn("branch", "protect", "dev", "--off", "--data", dir);
    deepStrictEqual((await tarn("branch", "delete", "dev", "--data", dir)).code, 0);
    const status = JSON.parse((await tarn("status", "--json", "--data", dir)).out);
    deepStrictEqual(status.branches.map((b: { name: string }) => b.name), ["main"]);
    ok(status.branches[0].disk_bytes > 0);
  });
});
