/**
 * Which component owns each file Postgres writes under PGDATA. One table, tested in `tests/file_class_test.ts`:
 * - `wal`: WAL segment files in `pg_wal/`, shipped to the WAL log as LSN ranges;
 * - `durable`: relations, `global/`, SLRUs, control and config files: versioned in the page store;
 * - `ephemeral`: files Postgres rebuilds or throws away at start: kept in the compute's memory only.
 *
 * Directories are always durable: Postgres expects its directory tree to exist when it starts. The relcache init
 * files (`pg_internal.init`) are durable too: rebuilding them costs a start ~200 ms, and Postgres itself removes
 * them after crash recovery and whenever the catalog changes, so a stale one is never used.
 *
 * @module
 */

/** The class of a file under PGDATA. */
export type FileClass = "wal" | "durable" | "ephemeral";

/** A rule: the first matching pattern decides; the reason is why, for the table's readers. */
type Rule = { pattern: RegExp; file_class: FileClass; reason: string };

const RULES: readonly Rule[] = [
  { pattern: /^pg_wal\/[0-9A-F]{24}$/, file_class: "wal", reason: "WAL segment: its bytes go to the WAL log" },
  { pattern: /^pg_wal\/[0-9A-F]{8}\.history$/, file_class: "durable", reason: "timeline history" },
  { pattern: /^pg_wal\//, file_class: "ephemeral", reason: "xlogtemp, archive_status, summaries" },
  { pattern: /^postmaster\.(pid|opts)$/, file_class: "ephemeral", reason: "per-process" },
  { pattern: /(^|\/)pgsql_tmp/, file_class: "ephemeral", reason: "temporary files of sorts and hashes" },
  { pattern: /^base\/\d+\/t\d+_\d+(_\w+)?(\.\d+)?$/, file_class: "ephemeral", reason: "temporary relation" },
  {
    pattern: /^(pg_subtrans|pg_stat_tmp|pg_stat|pg_notify|pg_snapshots|pg_dynshmem|pg_serial|pg_replslot)\//,
    file_class: "ephemeral",
    reason: "rebuilt or reset at start",
  },
  { pattern: /^(current_logfiles|log\/)/, file_class: "ephemeral", reason: "server logs" },
];

/** Normalises a PGlite path (`/base/5/1259`) to the store's form (`base/5/1259`). */
export function normalizePath(path: string): string {
  const parts = path.split("/").filter((part) => part !== "" && part !== ".");
  return parts.join("/");
}

/** Classifies a file path (normalised, relative to PGDATA). Anything not listed is durable: nothing is lost. */
export function classifyFile(path: string): FileClass {
  for (const rule of RULES) {
    if (rule.pattern.test(path)) return rule.file_class;
  }
  return "durable";
}
