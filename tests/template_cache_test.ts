import { deepStrictEqual, equal } from "node:assert/strict";
import { readTemplate, writeTemplate } from "../src/compute/template_cache.ts";
import type { ClusterTemplate } from "../src/compute/cluster_template.ts";

const TEMPLATE: ClusterTemplate = {
  dirs: ["base", "base/1", "global"],
  files: new Map([["global/pg_control", new Uint8Array([1, 2, 3])], ["base/1/1259", new Uint8Array(8192).fill(7)]]),
  wal_start_lsn: 0x2000000n,
  wal: new Uint8Array([9, 8, 7, 6]),
  segment_size: 16 * 1024 * 1024,
};

Deno.test("template cache: a written template reads back; a damaged file, another PGlite or none reads as nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tarn-template-cache-" });
  try {
    const path = `${dir}/nested/cluster-template-0.5.16.bin`;
    equal(await readTemplate(path, "0.5.16"), undefined, "no file yet");
    await writeTemplate(path, "0.5.16", TEMPLATE);
    deepStrictEqual(await readTemplate(path, "0.5.16"), TEMPLATE);
    equal(await readTemplate(path, "0.5.17"), undefined, "another PGlite's template is not used");
    const bytes = await Deno.readFile(path);
    for (const at of [0, 9, 14, 30, bytes.length - 1]) {
      const damaged = bytes.slice();
      damaged[at] ^= 0x40;
      await Deno.writeFile(path, damaged);
      equal(await readTemplate(path, "0.5.16"), undefined, `a flipped byte at ${at} is caught`);
    }
    await Deno.writeFile(path, bytes.subarray(0, bytes.length - 3));
    equal(await readTemplate(path, "0.5.16"), undefined, "a truncated file is caught");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
