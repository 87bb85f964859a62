/**
 * What a proposer knows of one safekeeper during its term: whether it took the elected message, how far it has
 * flushed the proposer's log, and how far the proposer has sent it.
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";

/** One safekeeper, seen from the proposer streaming to it. */
export class ProposerPeer {
  /** Whether it answered `ok` in this term: from then on its WAL up to `flush_lsn` is a prefix of ours. */
  elected = false;
  /** The end of its durable WAL, as acknowledged in this term (meaningful once `elected`). */
  flush_lsn: Lsn = 0n;
  /** Where the next append to it starts. */
  next_lsn: Lsn = 0n;
  /** Whether it acknowledged anything since the last tick: if not, what was in flight is taken as lost. */
  progressed = false;

  /** @param id the safekeeper's node id */
  constructor(readonly id: number) {}

  /** Notes an `ok` answer: the first one (to the elected message) tells where its log stops agreeing with ours. */
  acknowledged(flush_lsn: Lsn): void {
    this.flush_lsn = this.elected && this.flush_lsn > flush_lsn ? this.flush_lsn : flush_lsn;
    if (!this.elected || this.next_lsn < this.flush_lsn) this.next_lsn = this.flush_lsn;
    this.elected = true;
    this.progressed = true;
  }

  /** Notes a `gap` answer (only an elected safekeeper gives one): sending resumes at its end. */
  fellBehind(flush_lsn: Lsn): void {
    this.acknowledged(flush_lsn);
    this.next_lsn = flush_lsn;
  }

  /** At a tick: resends from the acknowledged end when nothing was acknowledged since the previous tick. */
  tick(): void {
    if (!this.progressed && this.next_lsn > this.flush_lsn) this.next_lsn = this.flush_lsn;
    this.progressed = false;
  }
}
