/**
 * Object storage as Tarn uses it: whole objects put, got, listed by prefix and deleted, under keys that are relative
 * paths. One interface with two backends (`local_storage.ts`, `s3_storage.ts`), chosen by URL (`mod.ts`); a
 * {@linkcode RetryingStorage} (`retrying_storage.ts`) rides out transient failures in front of either.
 *
 * @module
 */

/** An object store. Keys are relative paths of `[A-Za-z0-9._-]` segments separated by `/`. */
export interface RemoteStorage {
  /** Where it stores, for messages (`file:///data/lake`, `s3://bucket/prefix`). */
  readonly url: string;
  /** Stores `bytes` under `key`, replacing what was there: readers see the old object or the new one, whole. */
  put(key: string, bytes: Uint8Array): Promise<void>;
  /** The object under `key`; undefined when there is none. */
  get(key: string): Promise<Uint8Array | undefined>;
  /** Every key that starts with `prefix`, sorted. */
  list(prefix: string): Promise<string[]>;
  /** Removes the object under `key`; nothing when there is none. */
  delete(key: string): Promise<void>;
  /** Lets go of connections (requests after it fail). */
  close(): void;
}

/** The object store failed or refused a request. `transient` says whether the same request may succeed later. */
export class RemoteStorageError extends Error {
  /** Whether retrying may help (a timeout, a 5xx, throttling). */
  readonly transient: boolean;
  /**
   * @param what the request (`put x/y in s3://bucket`)
   * @param cause what the store or the network said
   * @param transient whether retrying may help
   */
  constructor(what: string, cause: unknown, transient: boolean) {
    super(`${what} failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = "RemoteStorageError";
    this.transient = transient;
  }
}

const KEY = /^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/;

/** Throws unless `key` is a relative path of plain segments (no `..`, no empty or absolute parts). */
export function assertKey(key: string): void {
  if (!KEY.test(key) || key.split("/").some((part) => part === "." || part === "..")) {
    throw new TypeError(`"${key}" is not an object key: relative path segments of letters, digits, ".", "_", "-"`);
  }
}

/** Throws unless `prefix` is empty or a key, or a key followed by `/`. */
export function assertPrefix(prefix: string): void {
  if (prefix !== "") assertKey(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix);
}
