/**
 * S3 and S3-compatible stores as an object store (`--remote s3://bucket/prefix`), through `@aws-sdk/client-s3`.
 * Configured by the standard AWS environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, and
 * `AWS_ENDPOINT_URL_S3` for another endpoint (MinIO, s3rver, ...), which is then addressed path-style.
 *
 * @module
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { assertKey, assertPrefix, type RemoteStorage, RemoteStorageError } from "./remote_storage.ts";

/** Pages a listing reads at most (1,000 keys each). */
const MAX_LIST_PAGES = 100_000;

/** Where an S3 store is and how to reach it. */
export type S3Location = {
  bucket: string;
  /** Prefix of every key ("" or ending in "/"). */
  prefix: string;
  /** A custom endpoint (path-style addressing); default: AWS. */
  endpoint?: string;
  region?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
};

/** Objects in an S3 bucket under a prefix. */
export class S3Storage implements RemoteStorage {
  readonly url: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;

  /** @param location the bucket, prefix and endpoint */
  constructor(location: S3Location) {
    this.#bucket = location.bucket;
    this.#prefix = location.prefix;
    this.url = `s3://${location.bucket}/${location.prefix}`;
    this.#client = new S3Client({
      region: location.region ?? "us-east-1",
      endpoint: location.endpoint,
      forcePathStyle: location.endpoint !== undefined,
      credentials: location.credentials,
      // Retries are RetryingStorage's, with its limits and its log.
      maxAttempts: 1,
    });
  }

  async put(key: string, bytes: Uint8Array): Promise<void> {
    assertKey(key);
    const command = new PutObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key, Body: bytes });
    await this.#send(`put ${key}`, () => this.#client.send(command));
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    assertKey(key);
    try {
      const reply = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
      return await reply.Body!.transformToByteArray();
    } catch (error) {
      if ((error as Error)?.name === "NoSuchKey") return undefined;
      throw this.#failure(`get ${key}`, error);
    }
  }

  async list(prefix: string): Promise<string[]> {
    assertPrefix(prefix);
    const keys: string[] = [];
    let token: string | undefined;
    for (let page = 0; page < MAX_LIST_PAGES; page++) {
      const command = new ListObjectsV2Command({
        Bucket: this.#bucket,
        Prefix: this.#prefix + prefix,
        ContinuationToken: token,
      });
      const reply = await this.#send(`list ${prefix}`, () => this.#client.send(command));
      for (const object of reply.Contents ?? []) keys.push(object.Key!.slice(this.#prefix.length));
      if (!reply.IsTruncated) return keys.sort();
      token = reply.NextContinuationToken;
    }
    throw new RemoteStorageError(`list ${prefix} in ${this.url}`, `more than ${MAX_LIST_PAGES} pages`, false);
  }

  async delete(key: string): Promise<void> {
    assertKey(key);
    const command = new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key });
    await this.#send(`delete ${key}`, () => this.#client.send(command));
  }

  /** Closes the client's connections. */
  close(): void {
    this.#client.destroy();
  }

  async #send<R>(what: string, request: () => Promise<R>): Promise<R> {
    try {
      return await request();
    } catch (error) {
      throw this.#failure(what, error);
    }
  }

  #failure(what: string, error: unknown): RemoteStorageError {
    return new RemoteStorageError(`${what} in ${this.url}`, error, isTransient(error));
  }
}

/** Network failures, timeouts, 5xx and throttling may pass; a refusal (4xx) will not. */
function isTransient(error: unknown): boolean {
  const e = error as { $metadata?: { httpStatusCode?: number }; $retryable?: unknown; name?: string; code?: string };
  const status = e?.$metadata?.httpStatusCode;
  if (e?.$retryable !== undefined) return true;
  if (status !== undefined) return status >= 500 || status === 429 || status === 408;
  return true;
}
