/**
 * LSN leases: points of a timeline that readers outside its head use (a read-only compute at a past LSN, a replica),
 * each until it expires. GC keeps every leased point readable. Leases live in memory: after a pageserver restart a
 * reader renews its lease (as Neon's do) before the next GC could pass its point, which takes the history window.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";
import { PageserverError } from "./pageserver_error.ts";

/** The most leases one timeline holds; more are refused. */
export const MAX_LEASES_PER_TIMELINE = 1024;

/** The leases of one tenant's timelines. */
export class LsnLeases {
  /** Per timeline: each leased LSN and its expiry in ms since the epoch. */
  readonly #leases = new Map<string, Map<Lsn, number>>();

  /** Grants or extends a lease of `lsn` for `ttl_ms`; returns its expiry. */
  grant(timeline_id: string, lsn: Lsn, ttl_ms: number, now_ms = Date.now()): Date {
    let leases = this.#leases.get(timeline_id);
    if (leases === undefined) this.#leases.set(timeline_id, leases = new Map());
    this.#expire(leases, now_ms);
    if (!leases.has(lsn) && leases.size >= MAX_LEASES_PER_TIMELINE) {
      throw new PageserverError(
        "bad_request",
        `timeline ${timeline_id} holds ${MAX_LEASES_PER_TIMELINE} leases already: let some expire first`,
      );
    }
    const expires_ms = Math.max(leases.get(lsn) ?? 0, now_ms + ttl_ms);
    leases.set(lsn, expires_ms);
    return new Date(expires_ms);
  }

  /** The LSNs leased on a timeline now. */
  current(timeline_id: string, now_ms = Date.now()): Lsn[] {
    const leases = this.#leases.get(timeline_id);
    if (leases === undefined) return [];
    this.#expire(leases, now_ms);
    return [...leases.keys()];
  }

  #expire(leases: Map<Lsn, number>, now_ms: number): void {
    for (const [lsn, expires_ms] of leases) if (expires_ms <= now_ms) leases.delete(lsn);
  }
}
