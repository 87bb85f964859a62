// Remote storage: the same contract for a local directory and for S3 (a real S3 API server, s3rver, on loopback);
// transient failures injected behind the same interface are retried until nothing is lost.
import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { ConfigurationError } from "../src/errors.ts";
import {
  LocalStorage,
  openRemoteStorage,
  type RemoteStorage,
  RemoteStorageError,
  RetryingStorage,
  S3Storage,
} from "../src/remote_storage/mod.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";
import { BUCKET, withS3 } from "./fixtures/s3_server.ts";
import { FlakyStorage } from "./fixtures/flaky_storage.ts";

const bytes = (n: number, seed: number) => new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);

/** What every store must do. */
async function contract(store: RemoteStorage): Promise<void> {
  equal(await store.get("none/here"), undefined);
  await store.put("tenants/a/index", bytes(100, 1));
  await store.put("tenants/a/layers/000002", bytes(70_000, 2));
  await store.put("tenants/a/layers/000001", bytes(10, 3));
  await store.put("tenants/b/index", bytes(5, 4));
  deepEqual(await store.get("tenants/a/layers/000002"), bytes(70_000, 2));
  await store.put("tenants/a/index", bytes(200, 5));
  deepEqual(await store.get("tenants/a/index"), bytes(200, 5), "a put replaces the object");
  deepEqual(await store.list("tenants/a/"), ["tenants/a/index", "tenants/a/layers/000001", "tenants/a/layers/000002"]);
  deepEqual(await store.list("tenants/a/layers/00000"), ["tenants/a/layers/000001", "tenants/a/layers/000002"]);
  deepEqual(await store.list("nothing/"), []);
  equal((await store.list("")).length, 4);
  await store.delete("tenants/a/layers/000001");
  await store.delete("tenants/a/layers/000001");
  deepEqual(await store.list("tenants/a/layers/"), ["tenants/a/layers/000002"]);
  equal(await store.get("tenants/a/layers/000001"), undefined);
  await rejects(store.put("../escape", bytes(1, 0)), TypeError);
  await rejects(store.get("/absolute"), TypeError);
  await rejects(store.list("a//b"), TypeError);
}

const storeTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });

storeTest("remote storage: a local directory keeps the contract", () =>
  withTempDir(async (dir) => {
    const store = openRemoteStorage(`file://${dir}/lake`);
    await contract(store);
    store.close();
    // Objects are plain files; an unfinished put's temporary file is not an object.
    await Deno.writeFile(`${dir}/lake/tenants/b/index.${crypto.randomUUID()}.partial`, bytes(3, 0));
    deepEqual(await new LocalStorage(`${dir}/lake`).list("tenants/b/"), ["tenants/b/index"]);
    // A key may end with ".partial" itself (an unsealed WAL segment's does): it is an object.
    const again = new LocalStorage(`${dir}/lake`);
    await again.put("wal/t/l/0000000000000002.partial", bytes(4, 1));
    deepEqual(await again.list("wal/"), ["wal/t/l/0000000000000002.partial"]);
  }));

storeTest("remote storage: S3 (s3rver) keeps the contract, under a prefix", () =>
  withS3(async (env) => {
    const store = openRemoteStorage(`s3://${BUCKET}/lake/one`, { env });
    const other = openRemoteStorage(`s3://${BUCKET}/lake/two`, { env });
    try {
      await contract(store);
      deepEqual(await other.list(""), [], "another prefix sees none of it");
      equal(store.url, `s3://${BUCKET}/lake/one/`);
    } finally {
      store.close();
      other.close();
    }
  }));

storeTest(
  "remote storage: injected transient S3 failures are retried with backoff; every upload completes",
  () =>
    withS3(async (env) => {
      const s3 = openRemoteStorage(`s3://${BUCKET}/flaky`, {
        env,
        retry: { attempts: 1, base_delay_ms: 1, max_delay_ms: 1 },
      });
      const flaky = new FlakyStorage(s3, 7);
      const store = new RetryingStorage(flaky, { attempts: 12, base_delay_ms: 1, max_delay_ms: 20 });
      try {
        const objects = Array.from(
          { length: 30 },
          (_, i) => [`layers/${String(i).padStart(4, "0")}`, bytes(1000 + i, i)],
        );
        await Promise.all(objects.map(([key, data]) => store.put(key as string, data as Uint8Array)));
        deepEqual(await store.list("layers/"), objects.map(([key]) => key));
        for (const [key, data] of objects) deepEqual(await store.get(key as string), data);
        ok(
          flaky.failures > 5 && store.retries === flaky.failures,
          `${flaky.failures} failures, ${store.retries} retries`,
        );
        // A refusal is not retried: it reaches the caller at once.
        const refusing = new RetryingStorage({
          ...flaky,
          url: "test://refusing",
          put: () => Promise.reject(new RemoteStorageError("put x", new Error("403 Forbidden"), false)),
          get: flaky.get.bind(flaky),
          list: flaky.list.bind(flaky),
          delete: flaky.delete.bind(flaky),
          close: () => {},
        });
        await rejects(refusing.put("x", bytes(1, 0)), /403 Forbidden/);
        equal(refusing.retries, 0);
      } finally {
        store.close();
      }
    }),
);

Deno.test("remote storage: --remote URLs name a directory or a bucket; anything else is a clear error", () => {
  ok(openRemoteStorage("file:///var/lib/tarn").url === "file:///var/lib/tarn");
  const s3 = openRemoteStorage("s3://my-bucket/a/b/", { env: {} });
  equal(s3.url, "s3://my-bucket/a/b/");
  s3.close();
  for (const bad of ["file://relative", "s3://B/x", "http://host/x", "s3://", "lake"]) {
    throws(() => openRemoteStorage(bad, { env: {} }), ConfigurationError, bad);
  }
  ok(new S3Storage({ bucket: "b-1", prefix: "" }).url === "s3://b-1/");
});
