/**
 * The invariants the simulation checks after every step: no acknowledged commit is lost (every elected proposer's
 * log holds every byte acknowledged in an earlier term, exactly), committed prefixes agree on all safekeepers, and
 * no safekeeper's term goes backwards.
 *
 * @module
 */
import { formatLsn, type Lsn, LSN_MAX } from "../../lsn.ts";
import type { Proposer } from "../proposer.ts";
import { ProposerWalBuffer } from "../proposer_wal_buffer.ts";
import type { SimDisk } from "./sim_storage.ts";
import { minLsn, type Term } from "./term_history.ts";

/** An invariant does not hold: the protocol (or its code) is wrong. */
export class InvariantViolation extends Error {
  /** @param what which invariant, where */
  constructor(what: string) {
    super(what);
    this.name = "InvariantViolation";
  }
}

/** What the checker knows of one proposer. */
interface ProposerRecord {
  /** Its whole log as the client saw it: the recovered WAL, then every append (undefined until elected). */
  log: ProposerWalBuffer | undefined;
  /** Its log agrees with the acknowledged WAL up to here. */
  verified_lsn: Lsn;
  /** The last commit LSN it reported. */
  commit_lsn: Lsn;
}

/** What a safekeeper looks like to the checker. */
export interface SafekeeperView {
  /** Its term (in memory when up, persisted when down). */
  term: Term;
  /** min(commit LSN, flush LSN): the WAL it holds as committed. */
  committed_lsn: Lsn;
  /** Its disk. */
  disk: SimDisk;
}

/** Watches proposers and safekeepers of one simulated timeline. */
export class SimChecker {
  readonly #timeline_start_lsn: Lsn;
  /** Every byte a client was told is committed, in any term: all such prefixes must agree. */
  readonly #acked: ProposerWalBuffer;
  /** The highest commit LSN reported in each term. */
  readonly #acked_by_term = new Map<Term, Lsn>();
  readonly #proposers = new Map<Proposer, ProposerRecord>();
  readonly #safekeeper_verified_lsn: Lsn[] = [];
  readonly #safekeeper_max_term: Term[] = [];

  /** @param timeline_start_lsn where the timeline's WAL starts */
  constructor(timeline_start_lsn: Lsn) {
    this.#timeline_start_lsn = timeline_start_lsn;
    this.#acked = new ProposerWalBuffer(timeline_start_lsn);
  }

  /** The end of the WAL acknowledged to clients. */
  get acked_lsn(): Lsn {
    return this.#acked.end_lsn;
  }

  /** Records WAL a client gave `proposer`. */
  onAppend(proposer: Proposer, lsn_start: Lsn, bytes: Uint8Array): void {
    this.#proposers.get(proposer)!.log!.append(lsn_start, bytes);
  }

  /** Forgets a proposer that stopped (its acknowledged WAL stays checked). */
  forget(proposer: Proposer): void {
    this.#proposers.delete(proposer);
  }

  /** Checks every live proposer: election results, commit reports. */
  checkProposers(proposers: Iterable<Proposer>): void {
    for (const proposer of proposers) {
      let record = this.#proposers.get(proposer);
      if (record === undefined) {
        record = { log: undefined, verified_lsn: this.#timeline_start_lsn, commit_lsn: 0n };
        this.#proposers.set(proposer, record);
      }
      if (record.log === undefined && proposer.state === "streaming") {
        record.log = new ProposerWalBuffer(this.#timeline_start_lsn);
        record.log.append(this.#timeline_start_lsn, proposer.recoveredWal(this.#timeline_start_lsn));
      }
      if (proposer.commit_lsn !== record.commit_lsn) this.#onCommit(proposer, record);
    }
    for (const [proposer, record] of this.#proposers) this.#verify(proposer, record);
  }

  #onCommit(proposer: Proposer, record: ProposerRecord): void {
    const commit_lsn = proposer.commit_lsn;
    const where = `proposer of term ${proposer.term}`;
    if (commit_lsn < record.commit_lsn) this.#fail(`${where}: commit LSN went back to ${formatLsn(commit_lsn)}`);
    if (record.log === undefined || commit_lsn > record.log.end_lsn) {
      this.#fail(`${where}: commit LSN ${formatLsn(commit_lsn)} beyond its log`);
    }
    record.commit_lsn = commit_lsn;
    this.#acked_by_term.set(proposer.term, commit_lsn);
    // Bytes below the old end are checked by #verify against what was acknowledged before.
    const old_end = this.#acked.end_lsn;
    if (commit_lsn > old_end) this.#acked.append(old_end, record.log.read(old_end, commit_lsn));
  }

  /** Its log must hold, exactly, every byte acknowledged in its term or before. */
  #verify(proposer: Proposer, record: ProposerRecord): void {
    if (record.log === undefined) return;
    let earlier_lsn = 0n;
    let own_lsn = 0n;
    for (const [term, lsn] of this.#acked_by_term) {
      if (term < proposer.term && lsn > earlier_lsn) earlier_lsn = lsn;
      if (term === proposer.term) own_lsn = lsn;
    }
    const where = `proposer of term ${proposer.term}`;
    if (earlier_lsn > proposer.term_start_lsn) {
      this.#fail(
        `${where} recovered WAL up to ${formatLsn(proposer.term_start_lsn)} only, ` +
          `but WAL up to ${formatLsn(earlier_lsn)} was acknowledged in an earlier term: acknowledged commits lost`,
      );
    }
    const target_lsn = earlier_lsn > own_lsn ? earlier_lsn : own_lsn;
    if (target_lsn <= record.verified_lsn) return;
    this.#compare(where, record.log.read(record.verified_lsn, target_lsn), record.verified_lsn);
    record.verified_lsn = target_lsn;
  }

  /** Checks safekeeper `index`: its term never goes back, its committed WAL is the acknowledged WAL. */
  checkSafekeeper(index: number, view: SafekeeperView): void {
    const where = `safekeeper ${index}`;
    const max_term = this.#safekeeper_max_term[index] ?? 0n;
    if (view.term < max_term) this.#fail(`${where}: term went back from ${max_term} to ${view.term}`);
    this.#safekeeper_max_term[index] = view.term;
    if (view.committed_lsn > this.#acked.end_lsn) {
      this.#fail(`${where}: holds ${formatLsn(view.committed_lsn)} as committed, no client was told so`);
    }
    let verified_lsn = this.#safekeeper_verified_lsn[index] ?? this.#timeline_start_lsn;
    verified_lsn = minLsn(verified_lsn, view.disk.changed_from_lsn);
    view.disk.changed_from_lsn = LSN_MAX;
    if (view.committed_lsn > verified_lsn) {
      if (view.committed_lsn > view.disk.wal_end_lsn) this.#fail(`${where}: commit beyond its durable WAL`);
      this.#compare(where, view.disk.readWal(verified_lsn, view.committed_lsn), verified_lsn);
      verified_lsn = view.committed_lsn;
    }
    this.#safekeeper_verified_lsn[index] = verified_lsn;
  }

  #compare(where: string, bytes: Uint8Array, lsn_start: Lsn): void {
    const acked = this.#acked.read(lsn_start, lsn_start + BigInt(bytes.length));
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] !== acked[i]) {
        this.#fail(`${where}: byte at ${formatLsn(lsn_start + BigInt(i))} differs from the acknowledged WAL`);
      }
    }
  }

  #fail(what: string): never {
    throw new InvariantViolation(what);
  }
}
