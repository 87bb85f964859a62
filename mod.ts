/**
 * Tarn embedded: PostgreSQL with compute separated from storage, in-process, as simply as SQLite.
 *
 * ```ts
 * import { Tarn } from "./mod.ts";
 * const tarn = await Tarn.open("./data"); // or Tarn.open() for memory only
 * const db = await tarn.connect();
 * await db.exec("create table t(id int primary key)");
 * await db.sql`insert into t values (${1})`;
 * console.log((await db.query("select count(*) from t")).rows);
 * await tarn.close();
 * ```
 *
 * @module
 */
export { type BranchInfo, type BranchStart, type ConnectOptions, Tarn, type TarnOptions } from "./src/tarn.ts";
export type { BranchAt } from "./src/replication/branch_point.ts";
export type { Fork } from "./src/fork_pool.ts";
export { type Field, type Queryable, type QueryResult, TarnClient } from "./src/client.ts";
export {
  BranchExistsError,
  BranchNotFoundError,
  BranchRuleError,
  ClosedError,
  ConfigurationError,
  CorruptDataError,
  DatabaseLockedError,
  LsnOutOfRangeError,
  ReadOnlyError,
} from "./src/errors.ts";
export { EngineCrashedError } from "./src/compute/engine_guard.ts";
export { formatLsn, type Lsn, LsnFormatError, parseLsn } from "./src/lsn.ts";
export { QuorumLostError, QuorumUnavailableError } from "./src/replication/quorum_wal.ts";
export { SafekeeperAddressError } from "./src/replication/safekeeper_client.ts";
