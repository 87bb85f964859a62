/**
 * Retries an object store's transient failures (timeouts, 5xx, throttling, a dropped connection) with exponential
 * backoff and jitter, up to a limit; a refusal, or the last failure, reaches the caller. Every request Tarn makes is
 * idempotent (a put replaces the whole object, a delete of nothing is nothing), so a retry is always safe.
 *
 * @module
 */
import type { Logger } from "../logger.ts";
import { type RemoteStorage, RemoteStorageError } from "./remote_storage.ts";

/** How hard to retry. */
export type RetryPolicy = {
  /** Attempts in all, the first included. */
  attempts: number;
  /** The first wait (ms); each next one doubles, up to `max_delay_ms`, with up to 50% jitter. */
  base_delay_ms: number;
  max_delay_ms: number;
};

/** The default: about a minute of trying. */
export const DEFAULT_RETRY: RetryPolicy = { attempts: 10, base_delay_ms: 100, max_delay_ms: 10_000 };

/** A store whose transient failures are retried. */
export class RetryingStorage implements RemoteStorage {
  readonly url: string;
  readonly #inner: RemoteStorage;
  readonly #policy: RetryPolicy;
  readonly #log: Logger;
  /** Retries so far, for metrics and tests. */
  retries = 0;

  /**
   * @param inner the store
   * @param policy how hard to retry
   * @param log where each retry is told
   */
  constructor(inner: RemoteStorage, policy: RetryPolicy = DEFAULT_RETRY, log: Logger = () => {}) {
    this.#inner = inner;
    this.#policy = policy;
    this.#log = log;
    this.url = inner.url;
  }

  put(key: string, bytes: Uint8Array): Promise<void> {
    return this.#retry("put", key, () => this.#inner.put(key, bytes));
  }

  get(key: string): Promise<Uint8Array | undefined> {
    return this.#retry("get", key, () => this.#inner.get(key));
  }

  list(prefix: string): Promise<string[]> {
    return this.#retry("list", prefix, () => this.#inner.list(prefix));
  }

  delete(key: string): Promise<void> {
    return this.#retry("delete", key, () => this.#inner.delete(key));
  }

  close(): void {
    this.#inner.close();
  }

  async #retry<R>(op: string, key: string, request: () => Promise<R>): Promise<R> {
    for (let attempt = 1;; attempt++) {
      try {
        return await request();
      } catch (error) {
        const transient = error instanceof RemoteStorageError && error.transient;
        if (!transient || attempt >= this.#policy.attempts) throw error;
        const delay_ms = Math.min(this.#policy.max_delay_ms, this.#policy.base_delay_ms * 2 ** (attempt - 1));
        const wait_ms = Math.round(delay_ms * (0.5 + Math.random() / 2));
        this.retries++;
        this.#log("remote_storage_retry", { op, key, attempt, wait_ms, error: (error as Error).message });
        await new Promise((resolve) => setTimeout(resolve, wait_ms));
      }
    }
  }
}
