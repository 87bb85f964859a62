/**
 * Who owns each timeline of a tenant on the pageserver: the term of the compute that attached it last (kept on disk
 * in `terms.json`, `ownership_file.ts`, so that a fence survives a restart), how far its WAL is committed and its
 * versions ingested, and how many of its connections are open. Fencing rules in docs/pageserver_protocol.md.
 *
 * @module
 */
import { formatLsn, type Lsn } from "../lsn.ts";
import type { Logger } from "../logger.ts";
import type { PageStore } from "../storage/page_store.ts";
import type { TermsFile } from "./ownership_file.ts";
import { PageserverError } from "./pageserver_error.ts";

/** The compute-facing state of one timeline. */
export type Ownership = {
  term: bigint;
  commit_lsn: Lsn;
  ingested_lsn: Lsn;
  persisting?: Promise<void>;
  /** Open connections attached with the owner's term: none means the owner is gone (or between reconnects). */
  connections: number;
};

/**
 * Who sends a write: the term the request carries, and the term its connection attached the timeline with
 * (undefined: it did not). A write is taken only when both are the owner's term.
 */
export type Writer = { term: bigint; attached: bigint | undefined };

/** The owners of one tenant's timelines. */
export class TimelineOwners {
  readonly #owners = new Map<string, Ownership>();
  readonly #terms: TermsFile;
  readonly #catalogued: (timeline_id: string) => boolean;
  readonly #log: Logger;
  readonly #tenant: string;

  /**
   * @param terms each timeline's highest term on disk
   * @param catalogued whether a timeline still belongs to a branch (others are left out of `terms.json`)
   * @param tenant the tenant's name, for the log
   * @param log where takeovers are told
   */
  constructor(terms: TermsFile, catalogued: (timeline_id: string) => boolean, tenant: string, log: Logger) {
    this.#terms = terms;
    this.#catalogued = catalogued;
    this.#tenant = tenant;
    this.#log = log;
  }

  /** A timeline's state, made (with its term from disk) on first use. */
  get(timeline_id: string): Ownership {
    let owner = this.#owners.get(timeline_id);
    if (owner === undefined) {
      owner = { term: this.#terms.get(timeline_id), commit_lsn: 0n, ingested_lsn: 0n, connections: 0 };
      this.#owners.set(timeline_id, owner);
    }
    return owner;
  }

  /** A timeline's state if it has been used since the start. */
  find(timeline_id: string): Ownership | undefined {
    return this.#owners.get(timeline_id);
  }

  /** The term a timeline's next owner must exceed. */
  term(timeline_id: string): bigint {
    return this.#owners.get(timeline_id)?.term ?? this.#terms.get(timeline_id);
  }

  /** Every timeline used since the start, with its state. */
  entries(): IterableIterator<[string, Ownership]> {
    return this.#owners.entries();
  }

  /**
   * A compute with `term` takes the timeline. A higher term than the owner's fences the owner: its page versions
   * beyond `wal_end_lsn` (the WAL the new owner recovered from the quorum) came from WAL that was never committed,
   * and go. An equal term changes nothing (the owner attaching again). A lower term is refused, and term 0 (no
   * election's) too. The term is on disk before this resolves: a fence outlives a crash right after the answer.
   */
  async takeOver(timeline_id: string, term: bigint, wal_end_lsn: Lsn, pages: PageStore): Promise<bigint> {
    if (term === 0n) {
      throw new PageserverError(
        "bad_request",
        `attach to timeline ${timeline_id} with term 0: term 0 owns nothing, attach with a safekeeper election's term`,
      );
    }
    const owner = this.get(timeline_id);
    if (term < owner.term) {
      throw new PageserverError(
        "fenced",
        `timeline ${timeline_id} belongs to a compute of term ${owner.term}, not ${term}: this compute was replaced`,
      );
    }
    if (wal_end_lsn < pages.disk_consistent_lsn) {
      throw new PageserverError(
        "lsn_out_of_range",
        `timeline ${timeline_id} has pages durable up to ${formatLsn(pages.disk_consistent_lsn)}, but the WAL its ` +
          `safekeepers hold ends at ${formatLsn(wal_end_lsn)}: committed WAL is missing (safekeepers' directories ` +
          `lost without their WAL in the lake?); start safekeepers that hold it`,
      );
    }
    if (term > owner.term) {
      // The old owner's versions newer than the new owner's WAL go, and from here on its writes are refused.
      const previous_term = owner.term;
      const dropped = pages.dropNewerThan(wal_end_lsn);
      owner.term = term;
      owner.connections = 0;
      this.#log("timeline_attached", {
        tenant: this.#tenant,
        timeline_id,
        term: Number(term),
        previous_term: Number(previous_term),
        wal_end: formatLsn(wal_end_lsn),
        dropped_versions: dropped,
      });
      owner.ingested_lsn = owner.ingested_lsn < wal_end_lsn ? owner.ingested_lsn : wal_end_lsn;
    }
    // An equal term waits too: the write its first attach started may still be under way (or have failed).
    await this.#terms.ensure(timeline_id, term, this.#catalogued);
    if (owner.term !== term) {
      throw new PageserverError(
        "fenced",
        `timeline ${timeline_id} was taken by a compute of term ${owner.term} while term ${term} attached`,
      );
    }
    return term;
  }

  /** A connection attached the timeline with `term`. */
  connected(timeline_id: string, term: bigint): void {
    const owner = this.get(timeline_id);
    if (owner.term === term) owner.connections++;
  }

  /** A connection that attached the timeline with `term` closed. */
  disconnected(timeline_id: string, term: bigint): void {
    const owner = this.#owners.get(timeline_id);
    if (owner !== undefined && owner.term === term && owner.connections > 0) owner.connections--;
  }

  /** Throws `fenced` unless `writer` owns the timeline: its term is the owner's, and its connection attached with it. */
  checkWriter(timeline_id: string, { term, attached }: Writer): void {
    const owner = this.get(timeline_id);
    if (owner.term === 0n) {
      throw new PageserverError(
        "fenced",
        `timeline ${timeline_id} has no owner (term 0, no compute attached to it), so a write of term ${term} ` +
          `is refused: attach first`,
      );
    }
    if (term !== owner.term) {
      throw new PageserverError(
        "fenced",
        `timeline ${timeline_id} belongs to a compute of term ${owner.term}, not ${term}: this compute was replaced`,
      );
    }
    if (attached !== term) {
      const did = attached === undefined ? "did not attach to it" : `attached to it with term ${attached}`;
      throw new PageserverError(
        "fenced",
        `timeline ${timeline_id} belongs to term ${owner.term}, but the connection writing with term ${term} ${did}: ` +
          `a write must follow its attach on the same connection (after a pageserver restart, attach again)`,
      );
    }
  }
}
