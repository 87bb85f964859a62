import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { classifyFile, normalizePath } from "../src/compute/file_class.ts";

const CASES: [string, string][] = [
  ["pg_wal/000000010000000000000001", "wal"],
  ["pg_wal/00000001000000000000000A", "wal"],
  ["pg_wal/00000002.history", "durable"],
  ["pg_wal/xlogtemp.42", "ephemeral"],
  ["pg_wal/archive_status/000000010000000000000001.done", "ephemeral"],
  ["base/5/16384", "durable"],
  ["base/5/16384.1", "durable"],
  ["base/5/16384_fsm", "durable"],
  ["base/5/16384_vm", "durable"],
  ["base/5/pg_filenode.map", "durable"],
  ["global/pg_control", "durable"],
  ["global/pg_filenode.map", "durable"],
  ["global/1262", "durable"],
  ["pg_xact/0000", "durable"],
  ["pg_multixact/offsets/0000", "durable"],
  ["pg_multixact/members/0000", "durable"],
  ["pg_logical/replorigin_checkpoint", "durable"],
  ["pg_twophase/00000300", "durable"],
  ["PG_VERSION", "durable"],
  ["postgresql.conf", "durable"],
  ["postgresql.auto.conf", "durable"],
  ["pg_hba.conf", "durable"],
  ["postmaster.pid", "ephemeral"],
  ["global/pg_internal.init", "durable"],
  ["global/pg_internal.init.42", "durable"],
  ["base/5/pg_internal.init", "durable"],
  ["base/pgsql_tmp/pgsql_tmp42.0", "ephemeral"],
  ["base/5/t3_16400", "ephemeral"],
  ["base/5/t3_16400_fsm", "ephemeral"],
  ["pg_subtrans/0000", "ephemeral"],
  ["pg_stat_tmp/global.stat", "ephemeral"],
  ["pg_stat/pgstat.stat", "ephemeral"],
  ["pg_notify/0000", "ephemeral"],
];

Deno.test("classifyFile: every class of PGDATA file", () => {
  for (const [path, expected] of CASES) assertEquals(classifyFile(path), expected, path);
});

Deno.test("normalizePath: strips slashes and dots", () => {
  assertEquals(normalizePath("/base/5/16384"), "base/5/16384");
  assertEquals(normalizePath("/"), "");
  assertEquals(normalizePath("//global/./pg_control"), "global/pg_control");
});
