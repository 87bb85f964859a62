/**
 * The compute's bounded page cache: the newest version of recently used pages, so that reads skip the page store
 * and writes can be sent as deltas against the version the compute already has.
 *
 * @module
 */
import assert from "node:assert/strict";

/** Counters for metrics and benchmarks. */
export type PageCacheStats = { hits: number; misses: number; evictions: number };

/** An LRU of pages keyed by (path, block). */
export class PageCache {
  readonly #capacity_pages: number;
  readonly #pages = new Map<string, Uint8Array>();
  /** Hits, misses and evictions since creation. */
  readonly stats: PageCacheStats = { hits: 0, misses: 0, evictions: 0 };

  /** @param capacity_pages the most pages held at once */
  constructor(capacity_pages: number) {
    assert(Number.isInteger(capacity_pages) && capacity_pages > 0, "page cache capacity must be a positive integer");
    this.#capacity_pages = capacity_pages;
  }

  /** The cached page, refreshed as most recently used; undefined on a miss. */
  get(path: string, blkno: number): Uint8Array | undefined {
    const key = cacheKey(path, blkno);
    const page = this.#pages.get(key);
    if (page === undefined) {
      this.stats.misses++;
      return undefined;
    }
    this.stats.hits++;
    this.#pages.delete(key);
    this.#pages.set(key, page);
    return page;
  }

  /** Caches `page` (kept by reference: the caller gives up ownership). */
  set(path: string, blkno: number, page: Uint8Array): void {
    const key = cacheKey(path, blkno);
    this.#pages.delete(key);
    this.#pages.set(key, page);
    if (this.#pages.size > this.#capacity_pages) {
      const oldest = this.#pages.keys().next().value as string;
      this.#pages.delete(oldest);
      this.stats.evictions++;
    }
  }

  /** Drops every block of `path` at or beyond `first_blkno` (truncate, unlink, rename). */
  dropFile(path: string, first_blkno = 0): void {
    const prefix = path + "#";
    for (const key of [...this.#pages.keys()]) {
      if (key.startsWith(prefix) && Number(key.slice(prefix.length)) >= first_blkno) this.#pages.delete(key);
    }
  }

  /** Drops every page (the storage under the cache was rewound). */
  clear(): void {
    this.#pages.clear();
  }

  /** Pages held now. */
  get size_pages(): number {
    return this.#pages.size;
  }
}

function cacheKey(path: string, blkno: number): string {
  return path + "#" + blkno;
}
