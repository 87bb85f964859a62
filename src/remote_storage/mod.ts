/**
 * Remote storage: the object store behind `--remote URL` (`file:///path` or `s3://bucket/prefix`), with retries.
 *
 * @module
 */
import { ConfigurationError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import { LocalStorage } from "./local_storage.ts";
import type { RemoteStorage } from "./remote_storage.ts";
import { DEFAULT_RETRY, RetryingStorage, type RetryPolicy } from "./retrying_storage.ts";
import { S3Storage } from "./s3_storage.ts";

export { LocalStorage, RetryingStorage, S3Storage };
export { type RemoteStorage, RemoteStorageError } from "./remote_storage.ts";
export { DEFAULT_RETRY, type RetryPolicy } from "./retrying_storage.ts";

/**
 * The store a `--remote` URL names, behind retries. S3 reads the standard AWS environment (`AWS_ACCESS_KEY_ID`,
 * `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3`); `env` stands in for it in tests.
 */
export function openRemoteStorage(
  url: string,
  options: { log?: Logger; retry?: RetryPolicy; env?: Record<string, string | undefined> } = {},
): RemoteStorage {
  return new RetryingStorage(
    storageOf(url, options.env ?? Deno.env.toObject()),
    options.retry ?? DEFAULT_RETRY,
    options.log,
  );
}

function storageOf(url: string, env: Record<string, string | undefined>): RemoteStorage {
  const file = /^file:\/\/(\/.*)$/.exec(url);
  if (file !== null) return new LocalStorage(decodeURIComponent(file[1]));
  const s3 = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (s3 !== null) {
    const prefix = (s3[2] ?? "").replace(/\/*$/, "");
    const key_id = env.AWS_ACCESS_KEY_ID;
    const secret = env.AWS_SECRET_ACCESS_KEY;
    return new S3Storage({
      bucket: s3[1],
      prefix: prefix === "" ? "" : prefix + "/",
      endpoint: env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL,
      region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION,
      credentials: key_id !== undefined && secret !== undefined
        ? { accessKeyId: key_id, secretAccessKey: secret }
        : undefined,
    });
  }
  throw new ConfigurationError(
    `--remote ${url}: use file:///absolute/path or s3://bucket/prefix (a bucket name of 3-63 lower-case letters, ` +
      `digits, "." and "-")`,
  );
}
