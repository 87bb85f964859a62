/**
 * {@linkcode SafekeeperStorage} on local disk: per (tenant, timeline) a directory holding `safekeeper.json` (the
 * state, CRC-checked, replaced atomically) and `wal/` (a {@linkcode WalLog}: segment files of checksummed frames,
 * whose torn tail is dropped on open).
 *
 * @module
 */
import { readCheckedJson, writeCheckedJson } from "../../checked_json.ts";
import { CorruptDataError } from "../../errors.ts";
import type { Lsn } from "../../lsn.ts";
import { WalLog } from "../wal_log.ts";
import { ID_PATTERN } from "./messages.ts";
import { EMPTY_STATE, type SafekeeperState, type SafekeeperStorage } from "./storage.ts";
import { termHistoryProblem } from "./term_history.ts";

/** The version of `safekeeper.json` this code writes and reads. */
export const STATE_FORMAT_VERSION = 1;
const STATE_KEY = "safekeeper";
const STATE_FILE = "safekeeper.json";

/** Options of {@linkcode FileSafekeeperStorage.open}. */
export interface FileSafekeeperStorageOptions {
  /** The safekeeper's data directory. */
  dir: string;
  /** The tenant: matches {@linkcode ID_PATTERN} (1-64 of `[A-Za-z0-9_-]`, safe as a directory name). */
  tenant_id: string;
  /** The timeline: matches {@linkcode ID_PATTERN}. */
  timeline_id: string;
  /** PostgreSQL's WAL segment size in bytes. */
  segment_size: number;
}

/** `safekeeper.json` as stored: LSNs and terms as decimal strings, since JSON numbers stop at 2^53. */
interface StoredState {
  format_version: number;
  term: string;
  voted_for: string;
  term_history: { term: string; start_lsn: string }[];
  commit_lsn: string;
}

/** A timeline's safekeeper state and WAL in a directory. */
export class FileSafekeeperStorage implements SafekeeperStorage {
  readonly #state_path: string;
  readonly #wal: WalLog;

  private constructor(state_path: string, wal: WalLog) {
    this.#state_path = state_path;
    this.#wal = wal;
  }

  /** Opens (creating when absent) `dir/tenants/<tenant>/timelines/<timeline>/`. */
  static async open(opts: FileSafekeeperStorageOptions): Promise<FileSafekeeperStorage> {
    for (const [what, id] of [["tenant", opts.tenant_id], ["timeline", opts.timeline_id]]) {
      if (!ID_PATTERN.test(id)) throw new TypeError(`${what} id "${id}" must be 1-64 of [A-Za-z0-9_-]`);
    }
    const dir = `${opts.dir}/tenants/${opts.tenant_id}/timelines/${opts.timeline_id}`;
    await Deno.mkdir(dir, { recursive: true });
    const wal = await WalLog.open({ dir, segment_size: opts.segment_size });
    return new FileSafekeeperStorage(`${dir}/${STATE_FILE}`, wal);
  }

  /** What opening the WAL had to repair (a torn tail dropped). */
  get warnings(): readonly string[] {
    return this.#wal.warnings;
  }

  /** Reads `safekeeper.json`; {@linkcode CorruptDataError} when it is damaged. */
  async loadState(): Promise<SafekeeperState> {
    const stored = await readCheckedJson<StoredState>(this.#state_path, STATE_KEY, STATE_FORMAT_VERSION);
    if (stored === undefined) return EMPTY_STATE;
    try {
      const state: SafekeeperState = {
        term: BigInt(stored.term),
        voted_for: BigInt(stored.voted_for),
        term_history: stored.term_history.map((s) => ({ term: BigInt(s.term), start_lsn: BigInt(s.start_lsn) })),
        commit_lsn: BigInt(stored.commit_lsn),
      };
      const problem = termHistoryProblem(state.term_history);
      if (problem !== undefined) throw new Error(problem);
      return state;
    } catch (error) {
      throw new CorruptDataError(this.#state_path, `bad field: ${error}`);
    }
  }

  /** Writes `safekeeper.json` through a temporary file, fsync and rename. */
  async persistState(state: SafekeeperState): Promise<void> {
    const stored: StoredState = {
      format_version: STATE_FORMAT_VERSION,
      term: state.term.toString(),
      voted_for: state.voted_for.toString(),
      term_history: state.term_history.map((s) => ({ term: s.term.toString(), start_lsn: s.start_lsn.toString() })),
      commit_lsn: state.commit_lsn.toString(),
    };
    await writeCheckedJson(this.#state_path, STATE_KEY, stored);
  }

  /** The first LSN held. */
  get wal_start_lsn(): Lsn {
    return this.#wal.start_lsn;
  }

  /** The end of the WAL written. */
  get wal_end_lsn(): Lsn {
    return this.#wal.end_lsn;
  }

  /** The end of the durable WAL. */
  get wal_flush_lsn(): Lsn {
    return this.#wal.flush_lsn;
  }

  /** Buffers `bytes` at the end. */
  writeWal(lsn_start: Lsn, bytes: Uint8Array): void {
    if (lsn_start !== this.#wal.end_lsn) throw new RangeError("safekeeper WAL writes go at the end");
    this.#wal.append(lsn_start, bytes);
  }

  /** Cuts the WAL at `lsn` (an empty append there: the log truncates, or starts there when empty). */
  truncateWal(lsn: Lsn): void {
    this.#wal.append(lsn, new Uint8Array(0));
  }

  /** Deletes the segment files wholly below `lsn`. */
  removeWalBefore(lsn: Lsn): void {
    this.#wal.retainFrom(lsn);
  }

  /** fsyncs the WAL; a failure leaves the log refusing every later flush. */
  syncWal(): Promise<Lsn> {
    return this.#wal.flush();
  }

  /** Reads WAL bytes. */
  readWal(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    return this.#wal.read(lsn_start, lsn_end);
  }

  /** Closes the WAL files. */
  close(): Promise<void> {
    return this.#wal.close();
  }
}
