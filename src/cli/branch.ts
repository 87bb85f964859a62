/**
 * `tarn branch create|list|delete|reset|protect` and `tarn status`, on a data directory that no server holds.
 *
 * @module
 */
import { DatabaseLockedError } from "../errors.ts";
import type { BranchAt } from "../replication/branch_point.ts";
import { type BranchInfo, Tarn } from "../tarn.ts";
import { safekeeperStatus } from "./safekeeper_status.ts";
import { flagValue, parseFlags, UsageError } from "./flags.ts";

/** Help text. */
export const BRANCH_HELP = `tarn branch: manage the branches of a data directory (stop its server first)

  tarn branch list [--data DIR] [--json]
  tarn branch create NAME [--from BRANCH] [--at LSN|TIME] [--data DIR]
  tarn branch delete NAME [--recursive] [--data DIR]
  tarn branch reset NAME [--data DIR]
  tarn branch protect NAME [--off] [--data DIR]

--at takes an LSN as PostgreSQL prints it (0/17CC6C8) or a time (2026-11-26T10:00:00Z).`;

/** Help text. */
export const STATUS_HELP = `tarn status [--data DIR] [--json]: the branches of a data directory and their disk use
tarn status --safekeepers HOST:PORT,... [--json]: each safekeeper's term, flush LSN, commit LSN and lag per timeline`;

const DATA = { "--data": (v: string) => v.length > 0 };

/** Runs a branch subcommand. */
export async function branch(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || rest.includes("--help")) return console.log(BRANCH_HELP);
  const spec = {
    list: { ...DATA, "--json": "boolean" as const },
    create: { ...DATA, "--from": (v: string) => v.length > 0, "--at": (v: string) => parseAt(v) !== undefined },
    delete: { ...DATA, "--recursive": "boolean" as const },
    reset: DATA,
    protect: { ...DATA, "--off": "boolean" as const },
  }[sub];
  if (spec === undefined) throw new UsageError(`tarn branch: unknown subcommand "${sub}"; see tarn branch --help`);
  const { flags, words } = parseFlags(`branch ${sub}`, rest, spec, sub === "list" ? 0 : 1);
  if (sub !== "list" && words.length !== 1) throw new UsageError(`tarn branch ${sub}: name the branch`);
  const [name] = words;
  await withTarn(flagValue(flags, "--data", "./tarn-data"), async (tarn) => {
    if (sub === "list") return printBranches(tarn.branches(), flags["--json"] === true);
    if (sub === "create") {
      const at = typeof flags["--at"] === "string" ? parseAt(flags["--at"]) : undefined;
      const from = typeof flags["--from"] === "string" ? flags["--from"] : undefined;
      printBranches([await tarn.createBranch(name, { from, at })], false);
    } else if (sub === "delete") {
      await tarn.deleteBranch(name, { recursive: flags["--recursive"] === true });
      console.log(`deleted ${name}`);
    } else if (sub === "reset") {
      printBranches([await tarn.resetBranch(name)], false);
    } else {
      await tarn.protectBranch(name, flags["--off"] !== true);
      console.log(`${name} is ${flags["--off"] === true ? "no longer " : ""}protected`);
    }
  });
}

/** Prints the branches of a directory and the disk bytes each one's own storage takes. */
export async function status(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(STATUS_HELP);
  const { flags } = parseFlags("status", args, {
    ...DATA,
    "--json": "boolean",
    "--safekeepers": (v) => v.split(",").every((address) => /^.+:\d{1,5}$/.test(address)),
  });
  const safekeepers = flags["--safekeepers"];
  if (typeof safekeepers === "string") return await safekeeperStatus(safekeepers, flags["--json"] === true);
  const dir = flagValue(flags, "--data", "./tarn-data");
  await withTarn(dir, async (tarn) => {
    const rows = [];
    for (const info of tarn.branches()) rows.push({ ...info, disk_bytes: await tarn.branchDiskBytes(info.name) });
    if (flags["--json"] === true) return console.log(JSON.stringify({ data: dir, branches: rows }));
    console.log(`data directory ${dir}: ${rows.length} branch(es)`);
    for (const row of rows) {
      console.log(`  ${row.name.padEnd(20)} ${(row.disk_bytes / 1024 / 1024).toFixed(1).padStart(8)} MB on disk`);
    }
  });
}

async function withTarn(dir: string, fn: (tarn: Tarn) => Promise<void>): Promise<void> {
  try {
    await Deno.stat(`${dir}/tarn.json`);
  } catch {
    throw new UsageError(`${dir} holds no Tarn database: give its directory with --data`);
  }
  let tarn: Tarn;
  try {
    tarn = await Tarn.open(dir);
  } catch (error) {
    if (error instanceof DatabaseLockedError) {
      throw new UsageError(`${error.message} (a running tarn start holds it: stop it to change branches from here)`);
    }
    throw error;
  }
  try {
    await fn(tarn);
  } finally {
    await tarn.close();
  }
}

function parseAt(text: string): BranchAt | undefined {
  if (/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(text)) return text;
  const time = new Date(text);
  return Number.isNaN(time.getTime()) ? undefined : time;
}

function printBranches(branches: BranchInfo[], json: boolean): void {
  if (json) return console.log(JSON.stringify(branches));
  for (const b of branches) {
    const origin = b.parent === undefined ? "root" : `from ${b.parent} at ${b.branch_lsn}`;
    console.log(`${b.name.padEnd(20)} ${origin}${b.protected ? " (protected)" : ""}  ${b.timeline_id}`);
  }
}
