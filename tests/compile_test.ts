import { deepStrictEqual, ok } from "node:assert/strict";

const SCRIPT = new URL("../scripts/compile.ts", import.meta.url).pathname;

async function compile(args: string[], env: Record<string, string>) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: output.code, err: new TextDecoder().decode(output.stderr) };
}

Deno.test("compile script: a missing DENORT_BIN and a bad target are clear errors", async () => {
  const missing = await compile(["--out", await Deno.makeTempDir()], { DENORT_BIN: "/nonexistent/denort" });
  deepStrictEqual(missing.code, 1);
  ok(missing.err.includes("DENORT_BIN=/nonexistent/denort does not exist"), missing.err);
  const bad = await compile(["--target", "vax-dec-vms"], {});
  deepStrictEqual(bad.code, 2);
  ok(bad.err.includes("--target must be one of"), bad.err);
});
