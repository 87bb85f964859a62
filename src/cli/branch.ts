/**
 * `tarn branch create|list|delete|reset|protect` and `tarn status`, on a data directory, or through the running
 * `tarn start` that holds it.
 *
 * @module
 */
import type { BranchAt } from "../replication/branch_point.ts";
import type { BranchRow } from "../branch_admin.ts";
import type { AdminRequest } from "../branch_admin.ts";
import { pageserverAdmin, pageserverStatus } from "../pageserver/http_client.ts";
import { runOnDirectory } from "./admin_client.ts";
import { safekeeperStatus } from "./safekeeper_status.ts";
import { flagValue, parseFlags, UsageError } from "./flags.ts";

/** Help text. */
export const BRANCH_HELP = `tarn branch: manage the branches of a data directory (through its server when one runs),
or of a tenant on a pageserver

  tarn branch list [--data DIR | --pageserver HOST:PORT --tenant NAME] [--json]
  tarn branch create NAME [--from BRANCH] [--at LSN|TIME] [--data DIR | --pageserver HOST:PORT --tenant NAME]
  tarn branch delete NAME [--recursive] [--data DIR | --pageserver HOST:PORT --tenant NAME]
  tarn branch reset NAME [--data DIR | --pageserver HOST:PORT --tenant NAME]
  tarn branch protect NAME [--off] [--data DIR | --pageserver HOST:PORT --tenant NAME]

--at takes an LSN as PostgreSQL prints it (0/17CC6C8) or a time (2026-11-26T10:00:00Z).`;

/** Help text. */
export const STATUS_HELP = `tarn status [--data DIR] [--json]: the branches of a data directory and their disk use
tarn status --safekeepers HOST:PORT,... [--json]: each safekeeper's term, flush LSN, commit LSN and lag per timeline
tarn status --pageserver HOST:PORT [--json]: a pageserver's tenants, branches, and each timeline's term and LSNs`;

const ADDRESS = (v: string) => /^.+:\d{1,5}$/.test(v);
const DATA = {
  "--data": (v: string) => v.length > 0,
  "--pageserver": ADDRESS,
  "--tenant": (v: string) => v.length > 0,
};

type Run = (request: AdminRequest) => Promise<BranchRow[]>;

/** Where branch requests go: the pageserver's tenant when `--pageserver` is given, else the data directory. */
function target(flags: Record<string, string | true>): Run {
  const pageserver = flags["--pageserver"];
  const tenant = flags["--tenant"];
  if (typeof pageserver === "string") {
    if (typeof tenant !== "string") throw new UsageError("tarn branch: --pageserver needs --tenant NAME");
    if (flags["--data"] !== undefined) throw new UsageError("tarn branch: give --data or --pageserver, not both");
    return (request) => pageserverAdmin(pageserver, tenant, request);
  }
  if (tenant !== undefined) throw new UsageError("tarn branch: --tenant goes with --pageserver HOST:PORT");
  const dir = flagValue(flags, "--data", "./tarn-data");
  return (request) => runOnDirectory(dir, request);
}

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
  const run = target(flags);
  if (sub === "list") return printBranches(await run({ op: "list" }), flags["--json"] === true);
  if (sub === "create") {
    const at = typeof flags["--at"] === "string" ? flags["--at"] : undefined;
    const from = typeof flags["--from"] === "string" ? flags["--from"] : undefined;
    printBranches(await run({ op: "create", name, from, at }), false);
  } else if (sub === "delete") {
    await run({ op: "delete", name, recursive: flags["--recursive"] === true });
    console.log(`deleted ${name}`);
  } else if (sub === "reset") {
    printBranches(await run({ op: "reset", name }), false);
  } else {
    await run({ op: "protect", name, on: flags["--off"] !== true });
    console.log(`${name} is ${flags["--off"] === true ? "no longer " : ""}protected`);
  }
}

/** Prints the branches of a directory and the disk bytes each one's own storage takes. */
export async function status(args: string[]): Promise<void> {
  if (args.includes("--help")) return console.log(STATUS_HELP);
  const { flags } = parseFlags("status", args, {
    "--data": (v) => v.length > 0,
    "--pageserver": ADDRESS,
    "--json": "boolean",
    "--safekeepers": (v) => v.split(",").every(ADDRESS),
  });
  const safekeepers = flags["--safekeepers"];
  if (typeof safekeepers === "string") return await safekeeperStatus(safekeepers, flags["--json"] === true);
  const pageserver = flags["--pageserver"];
  if (typeof pageserver === "string") return printPageserver(pageserver, await pageserverStatus(pageserver), flags);
  const dir = flagValue(flags, "--data", "./tarn-data");
  const rows = await runOnDirectory(dir, { op: "status" });
  if (flags["--json"] === true) return console.log(JSON.stringify({ data: dir, branches: rows }));
  console.log(`data directory ${dir}: ${rows.length} branch(es)`);
  for (const row of rows) {
    const mb = ((row.disk_bytes ?? 0) / 1024 / 1024).toFixed(1);
    console.log(`  ${row.name.padEnd(20)} ${mb.padStart(8)} MB on disk`);
  }
}

type StorageStatus = {
  local_bytes: number;
  layers?: number;
  remote_bytes?: number;
  remote_layers?: number;
  remote_consistent_lsn?: string;
  upload_lag_bytes?: number;
};

type PageserverStatus = {
  tenants: {
    name: string;
    branches: { name: string; timeline_id: string; parent?: string; storage?: StorageStatus }[];
    timelines: { timeline_id: string; term: number; commit_lsn: string; disk_consistent_lsn?: string }[];
  }[];
};

function printPageserver(address: string, answer: unknown, flags: Record<string, unknown>): void {
  if (flags["--json"] === true) return console.log(JSON.stringify(answer));
  const { tenants } = answer as PageserverStatus;
  console.log(`pageserver ${address}: ${tenants.length} tenant(s)`);
  for (const tenant of tenants) {
    console.log(`  tenant ${tenant.name}`);
    for (const b of tenant.branches) {
      const t = tenant.timelines.find((t) => t.timeline_id === b.timeline_id);
      const state = t === undefined
        ? "no compute since the pageserver started"
        : `term ${t.term}, commit ${t.commit_lsn}, durable ${t.disk_consistent_lsn ?? "-"}`;
      console.log(`    ${b.name.padEnd(20)} ${b.timeline_id}  ${state}`);
      if (b.storage !== undefined) console.log(`      ${storageLine(b.storage)}`);
    }
  }
}

function storageLine(s: StorageStatus): string {
  const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  const local = `local ${mb(s.local_bytes)}${s.layers === undefined ? "" : ` in ${s.layers} layers`}`;
  if (s.remote_bytes === undefined) return `${local}; not in the lake (no --remote, or nothing uploaded yet)`;
  return `${local}; lake ${mb(s.remote_bytes)} in ${s.remote_layers} layers up to ${s.remote_consistent_lsn}, ` +
    `upload lag ${s.upload_lag_bytes ?? "-"} bytes`;
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
