/**
 * `tarn branch create|list|delete|reset|protect` and `tarn status`, on a data directory, or through the running
 * `tarn start` that holds it.
 *
 * @module
 */
import type { BranchAt } from "../replication/branch_point.ts";
import type { BranchRow } from "../compute/server/admin.ts";
import { runOnDirectory } from "./admin_client.ts";
import { safekeeperStatus } from "./safekeeper_status.ts";
import { flagValue, parseFlags, UsageError } from "./flags.ts";

/** Help text. */
export const BRANCH_HELP = `tarn branch: manage the branches of a data directory (through its server when one runs)

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
  const dir = flagValue(flags, "--data", "./tarn-data");
  if (sub === "list") return printBranches(await runOnDirectory(dir, { op: "list" }), flags["--json"] === true);
  if (sub === "create") {
    const at = typeof flags["--at"] === "string" ? flags["--at"] : undefined;
    const from = typeof flags["--from"] === "string" ? flags["--from"] : undefined;
    printBranches(await runOnDirectory(dir, { op: "create", name, from, at }), false);
  } else if (sub === "delete") {
    await runOnDirectory(dir, { op: "delete", name, recursive: flags["--recursive"] === true });
    console.log(`deleted ${name}`);
  } else if (sub === "reset") {
    printBranches(await runOnDirectory(dir, { op: "reset", name }), false);
  } else {
    await runOnDirectory(dir, { op: "protect", name, on: flags["--off"] !== true });
    console.log(`${name} is ${flags["--off"] === true ? "no longer " : ""}protected`);
  }
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
  const rows = await runOnDirectory(dir, { op: "status" });
  if (flags["--json"] === true) return console.log(JSON.stringify({ data: dir, branches: rows }));
  console.log(`data directory ${dir}: ${rows.length} branch(es)`);
  for (const row of rows) {
    const mb = ((row.disk_bytes ?? 0) / 1024 / 1024).toFixed(1);
    console.log(`  ${row.name.padEnd(20)} ${mb.padStart(8)} MB on disk`);
  }
}

function parseAt(text: string): BranchAt | undefined {
  if (/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(text)) return text;
  const time = new Date(text);
  return Number.isNaN(time.getTime()) ? undefined : time;
}

function printBranches(branches: BranchRow[], json: boolean): void {
  if (json) return console.log(JSON.stringify(branches));
  for (const b of branches) {
    const origin = b.parent === undefined ? "root" : `from ${b.parent} at ${b.branch_lsn}`;
    console.log(`${b.name.padEnd(20)} ${origin}${b.protected ? " (protected)" : ""}  ${b.timeline_id}`);
  }
}
