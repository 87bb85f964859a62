/**
 * The branch catalog: branch names to timelines, with each timeline's parent and branch point. Kept in
 * `branches.json` (versioned, CRC32C), rewritten atomically on every change; in memory for a memory-only database.
 * Format in `docs/data_directory.md`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { readCheckedJson, writeCheckedJson } from "../checked_json.ts";
import { formatLsn, type Lsn, parseLsn } from "../lsn.ts";

/** The catalog format version this code writes and reads. */
export const CATALOG_FORMAT_VERSION = 1;

/** One branch. */
export type Branch = {
  /** Unique in the database; `main` is the root. */
  name: string;
  /** The timeline holding the branch's history (32 hex digits). */
  timeline_id: string;
  /** The parent branch's timeline; undefined for `main`. */
  parent_timeline_id?: string;
  /** Where the branch starts on its parent's timeline (0 for `main`). */
  branch_lsn: Lsn;
  /** When the branch was made. */
  created_at: Date;
  /** A protected branch cannot be deleted or reset. */
  protected: boolean;
};

type StoredBranch = Omit<Branch, "branch_lsn" | "created_at"> & { branch_lsn: string; created_at: string };

/** The branches of one database. */
export class BranchCatalog {
  readonly #path: string | undefined;
  readonly #branches = new Map<string, Branch>();

  private constructor(path: string | undefined, branches: Branch[]) {
    this.#path = path;
    for (const branch of branches) this.#branches.set(branch.name, branch);
  }

  /** Loads `${dir}/branches.json`, or starts a catalog with just `main` when it does not exist yet. */
  static async open(dir: string | undefined, main_timeline_id: string, created_at: Date): Promise<BranchCatalog> {
    const path = dir === undefined ? undefined : `${dir}/branches.json`;
    const stored = path === undefined ? undefined : await readCatalog(path);
    const main: Branch = {
      name: "main",
      timeline_id: main_timeline_id,
      branch_lsn: 0n,
      created_at,
      protected: false,
    };
    return new BranchCatalog(path, stored ?? [main]);
  }

  /** The branch called `name`, if any. */
  get(name: string): Branch | undefined {
    return this.#branches.get(name);
  }

  /** Every branch, `main` first, then by creation. */
  list(): Branch[] {
    return [...this.#branches.values()].sort((a, b) =>
      a.name === "main" ? -1 : b.name === "main" ? 1 : a.created_at.getTime() - b.created_at.getTime()
    );
  }

  /** Branches whose parent is `timeline_id`. */
  children(timeline_id: string): Branch[] {
    return this.list().filter((b) => b.parent_timeline_id === timeline_id);
  }

  /** The branch owning `timeline_id`. */
  byTimeline(timeline_id: string): Branch | undefined {
    return this.list().find((b) => b.timeline_id === timeline_id);
  }

  /** Adds or replaces branches, then persists the catalog durably. */
  async put(...branches: Branch[]): Promise<void> {
    for (const branch of branches) this.#branches.set(branch.name, { ...branch });
    await this.#save();
  }

  /** Removes branches by name, then persists the catalog durably. */
  async remove(...names: string[]): Promise<void> {
    for (const name of names) assert(this.#branches.delete(name), `no branch ${name} to remove`);
    await this.#save();
  }

  async #save(): Promise<void> {
    if (this.#path === undefined) return;
    const branches: StoredBranch[] = this.list().map((b) => ({
      ...b,
      branch_lsn: formatLsn(b.branch_lsn),
      created_at: b.created_at.toISOString(),
    }));
    const catalog: StoredCatalog = { format_version: CATALOG_FORMAT_VERSION, branches };
    await writeCheckedJson(this.#path, "catalog", catalog);
  }
}

type StoredCatalog = { format_version: number; branches: StoredBranch[] };

async function readCatalog(path: string): Promise<Branch[] | undefined> {
  const catalog = await readCheckedJson<StoredCatalog>(path, "catalog", CATALOG_FORMAT_VERSION);
  return catalog?.branches.map((b) => ({
    ...b,
    branch_lsn: parseLsn(b.branch_lsn),
    created_at: new Date(b.created_at),
  }));
}
