/**
 * Branch operations on one database's catalog and timelines, with their rules: names, protection, children, the
 * branch point. Shared by the embedded `Tarn` and the pageserver's tenants; what runs on a branch (a compute to stop
 * before a delete, a head that a running compute knows better than storage) comes in through {@linkcode BranchHooks}.
 *
 * @module
 */
import { BranchExistsError, BranchNotFoundError, BranchRuleError } from "./errors.ts";
import { formatLsn, type Lsn } from "./lsn.ts";
import { type BranchAt, resolveBranchPoint } from "./replication/branch_point.ts";
import type { Branch, BranchCatalog } from "./storage/branch_catalog.ts";
import { newTimelineId } from "./tenant_file.ts";
import type { Timelines } from "./timelines.ts";

/** The root branch. */
export const MAIN = "main";
const BRANCH_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** A branch as listings show it. */
export type BranchInfo = {
  name: string;
  timeline_id: string;
  /** The parent branch's name; undefined for `main`. */
  parent?: string;
  /** Where it starts on its parent, printed as PostgreSQL does (`0/17CC6C8`). */
  branch_lsn: string;
  created_at: Date;
  protected: boolean;
};

/** Where a branch starts: an LSN (bigint or `0/17CC6C8`) or a time; default the parent's head. */
export type BranchStart = { from?: string; at?: BranchAt };

/** What the owner of the branches does around branch operations. */
export type BranchHooks = {
  /** The newest WAL end of a branch, when something running knows it better than storage does. */
  head?: (branch: Branch) => Promise<Lsn | undefined>;
  /** Stops whatever runs on a branch before its storage goes. */
  stop?: (name: string) => Promise<void>;
};

/** The branches of one database. */
export class BranchManager {
  readonly #catalog: BranchCatalog;
  readonly #timelines: Timelines;
  readonly #hooks: BranchHooks;

  /**
   * @param catalog the branch catalog
   * @param timelines the timelines' storage
   * @param hooks what runs on branches
   */
  constructor(catalog: BranchCatalog, timelines: Timelines, hooks: BranchHooks = {}) {
    this.#catalog = catalog;
    this.#timelines = timelines;
    this.#hooks = hooks;
  }

  /** The branch called `name`; `BranchNotFoundError` naming the branches there are. */
  get(name: string): Branch {
    const branch = this.#catalog.get(name);
    if (branch === undefined) throw new BranchNotFoundError(name, this.#catalog.list().map((b) => b.name));
    return branch;
  }

  /** The branch whose timeline is `timeline_id`, if any. */
  byTimeline(timeline_id: string): Branch | undefined {
    return this.#catalog.byTimeline(timeline_id);
  }

  /** Every branch. */
  list(): BranchInfo[] {
    return this.#catalog.list().map((b) => this.info(b));
  }

  /** Makes branch `name` of `from` (default `main`) at `at` (default its head). Writes metadata only. */
  async create(name: string, start: BranchStart = {}): Promise<Branch> {
    if (!BRANCH_NAME.test(name)) {
      throw new BranchRuleError(`"${name}" is not a branch name: use letters, digits, ".", "_" and "-" (1-63)`);
    }
    if (this.#catalog.get(name) !== undefined) throw new BranchExistsError(name);
    const parent = this.get(start.from ?? MAIN);
    const branch: Branch = {
      name,
      timeline_id: newTimelineId(),
      parent_timeline_id: parent.timeline_id,
      branch_lsn: await this.branchPoint(parent, start.at),
      created_at: new Date(),
      protected: false,
    };
    await this.#catalog.put(branch);
    return branch;
  }

  /**
   * Deletes a branch and frees its storage. Refuses `main`, a protected branch, and a branch with children unless
   * `recursive` (then its descendants go too).
   */
  async delete(name: string, options: { recursive?: boolean } = {}): Promise<void> {
    const branch = this.get(name);
    if (name === MAIN) throw new BranchRuleError(`"main" is the root branch and cannot be deleted`);
    const doomed = this.#descendants(branch);
    if (doomed.length > 1 && !options.recursive) {
      const names = doomed.slice(1).map((b) => b.name).join(", ");
      throw new BranchRuleError(`branch "${name}" has children (${names}): delete them first, or pass recursive`);
    }
    const guarded = doomed.find((b) => b.protected);
    if (guarded !== undefined) {
      throw new BranchRuleError(`branch "${guarded.name}" is protected: protectBranch("${guarded.name}", false) first`);
    }
    for (const victim of doomed.reverse()) {
      await this.#hooks.stop?.(victim.name);
      await this.#catalog.remove(victim.name);
      await this.#timelines.remove(victim.timeline_id);
    }
  }

  /** Points a branch at its parent's head again: its own changes are discarded and its storage freed. */
  async reset(name: string): Promise<Branch> {
    const branch = this.get(name);
    if (branch.parent_timeline_id === undefined) throw new BranchRuleError(`"main" has no parent to reset to`);
    if (branch.protected) throw new BranchRuleError(`branch "${name}" is protected: unprotect it first`);
    if (this.#catalog.children(branch.timeline_id).length > 0) {
      throw new BranchRuleError(`branch "${name}" has children that read its history: delete them first`);
    }
    const parent = this.#catalog.byTimeline(branch.parent_timeline_id)!;
    await this.#hooks.stop?.(name);
    const branch_lsn = await this.branchPoint(parent, undefined);
    const reset: Branch = { ...branch, timeline_id: newTimelineId(), branch_lsn, created_at: new Date() };
    await this.#catalog.put(reset);
    await this.#timelines.remove(branch.timeline_id);
    return reset;
  }

  /** Protects a branch from deletion and reset (or lifts the protection). */
  async protect(name: string, on: boolean): Promise<void> {
    await this.#catalog.put({ ...this.get(name), protected: on });
  }

  /** Resolves `at` on `branch` to an exact record boundary; no `at` means its head. */
  async branchPoint(branch: Branch, at: BranchAt | undefined): Promise<Lsn> {
    const storage = await this.#timelines.open(branch.timeline_id);
    const head = await this.#hooks.head?.(branch) ?? storage.wal.flush_lsn;
    const lsn = resolveBranchPoint(branch.name, storage.wal, head, at);
    storage.pages.checkReadable(lsn); // before GC's cutoff: LsnOutOfRangeError naming the oldest point kept
    return lsn;
  }

  /** The listing form of a branch. */
  info(branch: Branch): BranchInfo {
    const parent = branch.parent_timeline_id === undefined
      ? undefined
      : this.#catalog.byTimeline(branch.parent_timeline_id)?.name;
    return {
      name: branch.name,
      timeline_id: branch.timeline_id,
      parent,
      branch_lsn: formatLsn(branch.branch_lsn),
      created_at: branch.created_at,
      protected: branch.protected,
    };
  }

  #descendants(branch: Branch): Branch[] {
    const out = [branch];
    for (let i = 0; i < out.length; i++) out.push(...this.#catalog.children(out[i].timeline_id));
    return out;
  }
}
