/**
 * `terms.json` of a pageserver tenant: the highest term each of its timelines was attached with, so that a fence
 * survives a restart (a compute fenced before it cannot write again after it). Written atomically and durably
 * (`checked_json.ts`) whenever an attach raises a term, before the attach is answered. Format in
 * `docs/data_directory.md`.
 *
 * @module
 */
import { readCheckedJson, writeCheckedJson } from "../checked_json.ts";
import { CorruptDataError } from "../errors.ts";

/** The format version this code writes and reads. */
export const TERMS_FORMAT_VERSION = 1;

/** The stored value: timeline id to its highest term, a decimal string (a term is a u64). */
type StoredTerms = { format_version: number; terms: Record<string, string> };

const TIMELINE_ID = /^[0-9a-f]{32}$/;
const TERM = /^(0|[1-9][0-9]{0,19})$/;
const U64_MAX = (1n << 64n) - 1n;

/** The highest term of each timeline of one tenant, on disk. */
export class TermsFile {
  readonly #path: string;
  /** The terms asked to be durable (a superset of `#durable`). */
  readonly #terms: Map<string, bigint>;
  /** The terms known to be on disk. */
  readonly #durable: Map<string, bigint>;
  /** The write in progress or queued last: writes run one at a time, each of the whole file. */
  #writing: Promise<void> = Promise.resolve();

  private constructor(path: string, terms: Map<string, bigint>) {
    this.#path = path;
    this.#terms = new Map(terms);
    this.#durable = new Map(terms);
  }

  /** Reads `${dir}/terms.json` (none yet: no timeline was attached); `CorruptDataError` when damaged. */
  static async open(dir: string): Promise<TermsFile> {
    const path = `${dir}/terms.json`;
    const stored = await readCheckedJson<StoredTerms>(path, "terms", TERMS_FORMAT_VERSION);
    const terms = new Map<string, bigint>();
    for (const [timeline_id, term] of Object.entries(stored?.terms ?? {})) {
      if (!TIMELINE_ID.test(timeline_id) || typeof term !== "string" || !TERM.test(term) || BigInt(term) > U64_MAX) {
        throw new CorruptDataError(path, `bad entry ${JSON.stringify(timeline_id)}: ${JSON.stringify(term)}`);
      }
      terms.set(timeline_id, BigInt(term));
    }
    return new TermsFile(path, terms);
  }

  /** The highest term `timeline_id` was attached with (0: never). */
  get(timeline_id: string): bigint {
    return this.#terms.get(timeline_id) ?? 0n;
  }

  /**
   * Resolves once `term` or a higher one is `timeline_id`'s term on disk, writing the file if it is not (only the
   * timelines `keep` accepts are written: deleted ones fall out). A failed write rejects; the next call writes again.
   */
  async ensure(timeline_id: string, term: bigint, keep: (timeline_id: string) => boolean): Promise<void> {
    if ((this.#durable.get(timeline_id) ?? 0n) >= term) return;
    if (this.get(timeline_id) < term) this.#terms.set(timeline_id, term);
    const write = this.#writing.catch(() => {}).then(async () => {
      if ((this.#durable.get(timeline_id) ?? 0n) >= term) return; // an earlier queued write covered it
      const snapshot = [...this.#terms].filter(([id]) => keep(id));
      const stored: StoredTerms = {
        format_version: TERMS_FORMAT_VERSION,
        terms: Object.fromEntries(snapshot.map(([id, t]) => [id, t.toString()])),
      };
      await writeCheckedJson(this.#path, "terms", stored);
      for (const [id, t] of snapshot) if ((this.#durable.get(id) ?? 0n) < t) this.#durable.set(id, t);
    });
    this.#writing = write;
    await write;
  }
}
