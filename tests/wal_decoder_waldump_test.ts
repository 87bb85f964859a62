// Cross-checks the WAL decoder's record boundaries with PostgreSQL's own pg_waldump, when a pg_waldump that reads
// PostgreSQL 18 WAL is installed (Debian's postgresql-client of version 18 or later); skipped otherwise.
import { deepStrictEqual, ok } from "node:assert/strict";
import { Tarn } from "../mod.ts";
import { formatLsn, parseLsn, segmentFileName } from "../src/lsn.ts";
import { firstRecordInPage, WalDecoder } from "../src/replication/wal_decoder.ts";
import { WalLog } from "../src/replication/wal_log.ts";

function findWaldump(): string | undefined {
  const candidates: string[] = [];
  try {
    for (const entry of Deno.readDirSync("/usr/lib/postgresql")) {
      if (Number(entry.name) >= 18) candidates.push(`/usr/lib/postgresql/${entry.name}/bin/pg_waldump`);
    }
  } catch {
    return undefined;
  }
  return candidates.find((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
}

const WALDUMP = findWaldump();

Deno.test({
  name: "wal decoder: record boundaries agree with pg_waldump",
  ignore: WALDUMP === undefined,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tarn-waldump-" });
    try {
      {
        await using tarn = await Tarn.open(dir, { checkpoint_idle_ms: 60_000 });
        const db = await tarn.connect();
        await db.exec("create table t (id int primary key, pad text)");
        for (let i = 0; i < 50; i++) await db.query("insert into t values ($1, repeat('x', $2))", [i, i * 300]);
      }
      const tenant = JSON.parse(await Deno.readTextFile(`${dir}/tarn.json`)).tenant;
      const wal = await WalLog.open({
        dir: `${dir}/timelines/${tenant.timeline_id}`,
        segment_size: tenant.segment_size,
      });
      const segno = wal.start_lsn / BigInt(tenant.segment_size);
      const segment_start = segno * BigInt(tenant.segment_size);
      const pg_wal = `${dir}/pg_wal`;
      await Deno.mkdir(pg_wal);
      const bytes = wal.read(segment_start, segment_start + BigInt(tenant.segment_size));
      await Deno.writeFile(`${pg_wal}/${segmentFileName(1, segno, tenant.segment_size)}`, bytes);
      const decoder = new WalDecoder(wal, firstRecordInPage(wal, segment_start));
      const ours: string[] = [];
      for (let next = decoder.next(); "lsn" in next; next = decoder.next()) ours.push(formatLsn(next.lsn));
      await wal.close();
      const output = await new Deno.Command(WALDUMP!, {
        args: ["-p", pg_wal, "-s", ours[0], "-e", formatLsn(parseLsn(ours.at(-1)!) + 1n)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const theirs = [...new TextDecoder().decode(output.stdout).matchAll(/lsn: ([0-9A-F]+\/[0-9A-F]+)/g)]
        .map((m) => formatLsn(parseLsn(m[1])));
      ok(theirs.length > 50, `pg_waldump listed ${theirs.length} records`);
      deepStrictEqual(ours.slice(0, theirs.length), theirs);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
