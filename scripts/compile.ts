/**
 * Builds the single `tarn` binary with `deno compile`, for this machine or for every target.
 *
 *   deno run -A scripts/compile.ts [--target TRIPLE | --all] [--out DIR]
 *
 * `deno compile` needs Deno's runtime (`denort`) for each target. It downloads it unless `DENORT_BIN` names a local
 * copy (the `denort-<target>.zip` of the same Deno version, unpacked). Where that download is impossible, this
 * script says so and what to do, and exits with code 1.
 *
 * @module
 */
import denoConfig from "../deno.json" with { type: "json" };

/** The targets `deno compile` supports that Tarn is built for. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

const ROOT = new URL("../", import.meta.url).pathname;

function usage(message: string): never {
  console.error(`compile: ${message}\nusage: deno run -A scripts/compile.ts [--target TRIPLE | --all] [--out DIR]`);
  Deno.exit(2);
}

function hostTarget(): string {
  const { arch, os } = Deno.build;
  const triple =
    { linux: `${arch}-unknown-linux-gnu`, darwin: `${arch}-apple-darwin`, windows: `${arch}-pc-windows-msvc` }[
      os as "linux" | "darwin" | "windows"
    ];
  if (triple === undefined) usage(`no target for ${os}; pass --target`);
  return triple;
}

/** Compiles `main.ts` for one target; resolves with a readable reason when it failed. */
async function compile(target: string, out_dir: string): Promise<string | undefined> {
  const output = `${out_dir}/tarn-${denoConfig.version}-${target}${target.includes("windows") ? ".exe" : ""}`;
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined) {
    try {
      if (!(await Deno.stat(denort)).isFile) return `DENORT_BIN=${denort} is not a file`;
    } catch {
      return `DENORT_BIN=${denort} does not exist: point it at the unpacked denort of Deno ${Deno.version.deno}`;
    }
  }
  const result = await new Deno.Command(Deno.execPath(), {
    // The Workers are loaded by URL at run time: they must be named to be in the binary.
    args: [
      "compile",
      "-A",
      "--target",
      target,
      "--include",
      `${ROOT}src/server/engine_worker.ts`,
      "--include",
      `${ROOT}src/compute/remote/page_io_worker.ts`,
      "--output",
      output,
      `${ROOT}main.ts`,
    ],
    cwd: ROOT,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (result.success) {
    console.log(`built ${output}`);
    return undefined;
  }
  const stderr = new TextDecoder().decode(result.stderr);
  if (/denort|dl\.deno\.land|download/i.test(stderr) && denort === undefined) {
    return `Deno's runtime for ${target} (denort ${Deno.version.deno}) could not be downloaded from here. ` +
      `Fetch denort-${target}.zip of Deno ${Deno.version.deno} on a machine that can, unpack it, and run again ` +
      `with DENORT_BIN=/path/to/denort.`;
  }
  return stderr.trim().split("\n").slice(-3).join("\n");
}

if (import.meta.main) {
  let targets: string[] = [hostTarget()];
  let out_dir = `${ROOT}dist`;
  for (let i = 0; i < Deno.args.length; i++) {
    const flag = Deno.args[i];
    if (flag === "--all") targets = [...TARGETS];
    else if (flag === "--target") {
      const target = Deno.args[++i];
      if (!TARGETS.includes(target as (typeof TARGETS)[number])) usage(`--target must be one of ${TARGETS.join(", ")}`);
      targets = [target];
    } else if (flag === "--out" && Deno.args[i + 1] !== undefined) out_dir = Deno.args[++i];
    else usage(`unknown flag or missing value: ${flag}`);
  }
  await Deno.mkdir(out_dir, { recursive: true });
  let failed = 0;
  for (const target of targets) {
    const reason = await compile(target, out_dir);
    if (reason !== undefined) {
      failed++;
      console.error(`compile ${target}: ${reason}`);
    }
  }
  Deno.exit(failed === 0 ? 0 : 1);
}
