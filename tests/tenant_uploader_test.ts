// The pageserver's side of the lake, on real directories and a real local object store: layers before the index
// that lists them, merged-away layers deleted after it, generations that keep a superseded pageserver from writing,
// a download that checks every layer, and an outage of the store that loses nothing and heals by itself.
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { CorruptDataError } from "../src/errors.ts";
import { decodeIndex, type TimelineIndex } from "../src/pageserver/remote_index.ts";
import { downloadTenant } from "../src/pageserver/tenant_download.ts";
import { TenantUploader } from "../src/pageserver/tenant_uploader.ts";
import { LsnLeases } from "../src/pageserver/lsn_leases.ts";
import { LocalStorage, RetryingStorage } from "../src/remote_storage/mod.ts";
import { BranchCatalog } from "../src/storage/branch_catalog.ts";
import { newTimelineId, writeTenantFile } from "../src/tenant_file.ts";
import { FlakyStorage } from "./fixtures/flaky_storage.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const hex = (n: number | bigint) => n.toString(16).padStart(16, "0");
const layerName = (gen: number, start: number, end: number) => `${hex(gen)}_${hex(start)}_${hex(end)}.layer`;
const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 7 + seed) & 0xff);

/** A tenant directory with `main` and a branch `dev`; resolves with its timeline ids. */
async function makeTenant(dir: string): Promise<{ main: string; dev: string }> {
  const main = newTimelineId();
  const dev = newTimelineId();
  await Deno.mkdir(dir, { recursive: true });
  const created_at = new Date();
  const catalog = await BranchCatalog.open(dir, main, created_at);
  await catalog.put({
    name: "dev",
    timeline_id: dev,
    parent_timeline_id: main,
    branch_lsn: 0x100n,
    created_at,
    protected: false,
  });
  await writeTenantFile(dir, { format_version: 1, timeline_id: main, segment_size: 16 << 20, created_at: "x" });
  return { main, dev };
}

async function writeLayer(dir: string, timeline_id: string, name: string, data: Uint8Array): Promise<void> {
  await Deno.mkdir(`${dir}/timelines/${timeline_id}`, { recursive: true });
  await Deno.writeFile(`${dir}/timelines/${timeline_id}/${name}`, data);
}

async function newestIndex(store: LocalStorage, tenant: string, timeline_id: string): Promise<TimelineIndex> {
  const keys = await store.list(`tenants/${tenant}/timelines/${timeline_id}/index-`);
  equal(keys.length, 1, `one index object: ${keys}`);
  return decodeIndex<TimelineIndex>(keys[0], (await store.get(keys[0]))!);
}

const quiet = () => {};

Deno.test("lake: layers, then an index listing exactly them; merged-away layers go after the new index", () =>
  withTempDir(async (dir) => {
    const store = new LocalStorage(`${dir}/lake`);
    const ids = await makeTenant(`${dir}/a`);
    await writeLayer(`${dir}/a`, ids.main, layerName(1, 0x10, 0x200), bytes(5000, 1));
    await writeLayer(`${dir}/a`, ids.main, layerName(2, 0x200, 0x300), bytes(3000, 2));
    const up = new TenantUploader(store, "acme", `${dir}/a`, "node-a", quiet);
    await up.sync([ids.main, ids.dev]);
    equal(up.generation, 1);
    let index = await newestIndex(store, "acme", ids.main);
    deepEqual(index.layers.map((l) => l.name), [layerName(1, 0x10, 0x200), layerName(2, 0x200, 0x300)]);
    equal(index.disk_consistent_lsn, "0/300");
    deepEqual(up.state(ids.main), { remote_consistent_lsn: 0x300n, remote_bytes: 8000, layers: 2 });
    // A merge: one new layer replaces both; the objects of the old ones go once the index no longer lists them.
    await writeLayer(`${dir}/a`, ids.main, layerName(3, 0x10, 0x300), bytes(7000, 3));
    await Deno.remove(`${dir}/a/timelines/${ids.main}/${layerName(1, 0x10, 0x200)}`);
    await Deno.remove(`${dir}/a/timelines/${ids.main}/${layerName(2, 0x200, 0x300)}`);
    await up.sync([ids.main, ids.dev]);
    index = await newestIndex(store, "acme", ids.main);
    deepEqual(index.layers.map((l) => l.name), [layerName(3, 0x10, 0x300)]);
    deepEqual(await store.list(`tenants/acme/timelines/${ids.main}/0`), [
      `tenants/acme/timelines/${ids.main}/${layerName(3, 0x10, 0x300)}-00000001`,
    ]);
    // A deleted branch's objects go with it.
    await writeLayer(`${dir}/a`, ids.dev, layerName(1, 0x100, 0x180), bytes(100, 4));
    await up.sync([ids.main, ids.dev]);
    ok((await store.list(`tenants/acme/timelines/${ids.dev}/`)).length === 2);
    const catalog = await BranchCatalog.open(`${dir}/a`, ids.main, new Date());
    await catalog.remove("dev");
    await up.sync([ids.main]);
    deepEqual(await store.list(`tenants/acme/timelines/${ids.dev}/`), []);
  }));

Deno.test("lake: a newer generation's pageserver takes the tenant; the older one stops writing to the lake", () =>
  withTempDir(async (dir) => {
    const store = new LocalStorage(`${dir}/lake`);
    const ids = await makeTenant(`${dir}/a`);
    await writeLayer(`${dir}/a`, ids.main, layerName(1, 0x10, 0x200), bytes(5000, 1));
    const old = new TenantUploader(store, "acme", `${dir}/a`, "node-a", quiet);
    await old.sync([ids.main]);
    // Another pageserver downloads the tenant and goes on with it: generation 2.
    equal((await downloadTenant(store, "acme", `${dir}/b`, quiet))?.timelines, 2);
    const events: string[] = [];
    const newer = new TenantUploader(store, "acme", `${dir}/b`, "node-b", (event) => events.push(event));
    await newer.ensureLocal(ids.main); // what opening the timeline does: its layers come from the lake
    deepEqual(await Deno.readFile(`${dir}/b/timelines/${ids.main}/${layerName(1, 0x10, 0x200)}`), bytes(5000, 1));
    await writeLayer(`${dir}/b`, ids.main, layerName(2, 0x200, 0x400), bytes(1000, 2));
    await newer.sync([ids.main]);
    equal(newer.generation, 2);
    // The old one writes a layer of its own, which would conflict: nothing of it reaches the lake.
    await writeLayer(`${dir}/a`, ids.main, layerName(2, 0x200, 0x300), bytes(999, 9));
    await old.sync([ids.main]);
    ok(!(await store.list("tenants/acme/")).some((k) => k.includes(layerName(2, 0x200, 0x300))));
    equal((await newestIndex(store, "acme", ids.main)).generation, 2);
    // Restarted, the old pageserver claims a new generation (3): its index is the one read from now on, and the
    // pageserver of generation 2 sees that at its next upload and stops.
    const restarted = new TenantUploader(store, "acme", `${dir}/a`, "node-a", quiet);
    await restarted.sync([ids.main]);
    equal(restarted.generation, 3);
    equal((await newestIndex(store, "acme", ids.main)).generation, 3);
    await writeLayer(`${dir}/b`, ids.main, layerName(3, 0x400, 0x500), bytes(10, 3));
    await newer.sync([ids.main]);
    ok(events.includes("tenant_generation_superseded"), events.join());
    ok(!(await store.list("tenants/acme/")).some((k) => k.includes(layerName(3, 0x400, 0x500))));
  }));

Deno.test("lake: layers come from the lake checked against their index; a damaged one is refused, naming it", () =>
  withTempDir(async (dir) => {
    const store = new LocalStorage(`${dir}/lake`);
    const ids = await makeTenant(`${dir}/a`);
    await writeLayer(`${dir}/a`, ids.main, layerName(1, 0x10, 0x200), bytes(5000, 1));
    await new TenantUploader(store, "acme", `${dir}/a`, "node-a", quiet).sync([ids.main, ids.dev]);
    const key = `tenants/acme/timelines/${ids.main}/${layerName(1, 0x10, 0x200)}-00000001`;
    const damaged = (await store.get(key))!;
    damaged[10] ^= 0xff;
    await store.put(key, damaged);
    equal((await downloadTenant(store, "acme", `${dir}/b`, quiet))?.timelines, 2);
    await rejects(
      new TenantUploader(store, "acme", `${dir}/b`, "node-b", quiet).ensureLocal(ids.main),
      (e: Error) => e instanceof CorruptDataError && e.message.includes(key),
    );
    equal(await downloadTenant(store, "nobody", `${dir}/c`, quiet), undefined);
  }));

Deno.test("lake: the store failing every request for a while loses nothing, and uploads finish by themselves", () =>
  withTempDir(async (dir) => {
    const flaky = new FlakyStorage(new LocalStorage(`${dir}/lake`), 5);
    const store = new RetryingStorage(flaky, { attempts: 3, base_delay_ms: 1, max_delay_ms: 5 });
    const ids = await makeTenant(`${dir}/a`);
    const up = new TenantUploader(store, "acme", `${dir}/a`, "node-a", quiet);
    const names: string[] = [];
    for (let i = 1; i <= 12; i++) {
      if (i === 4) flaky.outage = true;
      if (i === 9) flaky.outage = false;
      names.push(layerName(i, i * 0x100, i * 0x100 + 0x80));
      await writeLayer(`${dir}/a`, ids.main, names.at(-1)!, bytes(2000 + i, i));
      await up.sync([ids.main]).catch(() => {}); // what a tick does: the next one tries again
    }
    for (let tick = 0; tick < 20 && up.state(ids.main)?.layers !== names.length; tick++) {
      await up.sync([ids.main]).catch(() => {});
    }
    ok(flaky.failures > 10, `${flaky.failures} injected failures`);
    const index = await newestIndex(new LocalStorage(`${dir}/lake`), "acme", ids.main);
    deepEqual(index.layers.map((l) => l.name), names);
    equal(index.disk_consistent_lsn, "0/C80");
    const lake = new LocalStorage(`${dir}/lake`);
    equal((await downloadTenant(lake, "acme", `${dir}/b`, quiet))?.timelines, 2);
    await new TenantUploader(lake, "acme", `${dir}/b`, "node-b", quiet).ensureLocal(ids.main);
    for (const name of names) ok(await Deno.stat(`${dir}/b/timelines/${ids.main}/${name}`));
  }));

Deno.test("lake: LSN leases last their time, a renewal extends one, and each timeline has its own", () => {
  const leases = new LsnLeases();
  leases.grant("a", 100n, 1000, 0);
  leases.grant("a", 200n, 5000, 0);
  leases.grant("b", 300n, 1000, 0);
  deepEqual(leases.current("a", 500).sort(), [100n, 200n]);
  deepEqual(leases.current("a", 1000), [200n], "expired at its time");
  equal(leases.grant("a", 200n, 100, 1000).getTime(), 5000, "a shorter renewal keeps the later expiry");
  equal(leases.grant("a", 200n, 9000, 1000).getTime(), 10_000);
  deepEqual(leases.current("b", 999), [300n]);
  deepEqual(leases.current("c"), []);
});
