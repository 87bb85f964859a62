/**
 * Branch administration as requests: the operations `tarn branch` and `tarn status` run, as one JSON request each,
 * on a running server (`docs/wire_protocol.md`, "Administration"), on a pageserver's tenant
 * (`docs/pageserver_protocol.md`), or on a directory no server holds.
 *
 * @module
 */
import type { BranchAt } from "./replication/branch_point.ts";
import type { BranchInfo, BranchStart } from "./branch_manager.ts";

/** What administration needs from a database: `Tarn` has it. */
export type BranchAdmin = {
  branches(): BranchInfo[];
  createBranch(name: string, start?: BranchStart): Promise<BranchInfo>;
  deleteBranch(name: string, options?: { recursive?: boolean }): Promise<void>;
  resetBranch(name: string): Promise<BranchInfo>;
  protectBranch(name: string, on: boolean): Promise<void>;
  branchDiskBytes(name: string): Promise<number>;
};

/** One administration request. `at` is an LSN (`0/17CC6C8`) or an ISO time. */
export type AdminRequest =
  | { op: "list" }
  | { op: "status" }
  | { op: "create"; name: string; from?: string; at?: string }
  | { op: "delete"; name: string; recursive?: boolean }
  | { op: "reset"; name: string }
  | { op: "protect"; name: string; on: boolean };

/** A branch as an answer carries it (dates as ISO strings). */
export type BranchRow = Omit<BranchInfo, "created_at"> & { created_at: string; disk_bytes?: number };

/** Thrown for a request that is not one of {@linkcode AdminRequest}. */
export class AdminRequestError extends Error {
  /** @param what what is wrong with it */
  constructor(what: string) {
    super(`bad administration request: ${what}`);
    this.name = "AdminRequestError";
  }
}

/** Checks an untrusted request (parsed JSON) and returns it typed. */
export function parseAdminRequest(value: unknown): AdminRequest {
  if (typeof value !== "object" || value === null) throw new AdminRequestError("not a JSON object");
  const request = value as Record<string, unknown>;
  const text = (key: string, optional = false) => {
    const v = request[key];
    if (v === undefined && optional) return;
    if (typeof v !== "string" || v.length === 0 || v.length > 256) throw new AdminRequestError(`"${key}" must be text`);
  };
  switch (request.op) {
    case "list":
    case "status":
      return request as AdminRequest;
    case "create":
      text("name"), text("from", true), text("at", true);
      return request as AdminRequest;
    case "delete":
    case "reset":
      text("name");
      return request as AdminRequest;
    case "protect":
      text("name");
      if (typeof request.on !== "boolean") throw new AdminRequestError(`"on" must be true or false`);
      return request as AdminRequest;
  }
  throw new AdminRequestError(`unknown op ${JSON.stringify(request.op)}`);
}

/** Runs `request` on `db`; resolves with the branches it touched or lists (`delete` and `protect`: none). */
export async function runAdmin(db: BranchAdmin, request: AdminRequest): Promise<BranchRow[]> {
  switch (request.op) {
    case "list":
      return db.branches().map(row);
    case "status":
      return await Promise.all(
        db.branches().map(async (b) => ({ ...row(b), disk_bytes: await db.branchDiskBytes(b.name) })),
      );
    case "create":
      return [row(await db.createBranch(request.name, { from: request.from, at: parseAt(request.at) }))];
    case "delete":
      await db.deleteBranch(request.name, { recursive: request.recursive === true });
      return [];
    case "reset":
      return [row(await db.resetBranch(request.name))];
    case "protect":
      await db.protectBranch(request.name, request.on);
      return [];
  }
}

/** `--at` as the CLI takes it: an LSN as PostgreSQL prints it, or a time; undefined when neither. */
export function parseAt(text: string | undefined): BranchAt | undefined {
  if (text === undefined) return undefined;
  if (/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(text)) return text;
  const time = new Date(text);
  if (Number.isNaN(time.getTime())) throw new AdminRequestError(`--at ${text} is neither an LSN nor a time`);
  return time;
}

function row(branch: BranchInfo): BranchRow {
  return { ...branch, created_at: branch.created_at.toISOString() };
}
