/**
 * Warm engines: a PGlite made ahead of need up to the point where it would open its data directory (WASM
 * instantiated, Emscripten's runtime initialised, PGlite's file bundle unpacked), parked in
 * {@linkcode TarnFS.initialSyncFs}. A compute that starts (a new branch's, a resumed one, a replica's next
 * generation, a fork at a new point) attaches one to its timeline's storage and only Postgres itself starts.
 *
 * PGlite reads its start parameters when Postgres starts, after that point, so one parked engine serves any
 * settings. The pool refills one engine at a time, after the start that took one is complete (both would otherwise
 * compete for the one thread that runs them).
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import { loadArtifacts, startParams } from "./engine.ts";
import { TarnFS, type TarnFsOptions } from "./tarn_fs.ts";

/** Postgres did not start: the message carries the tail of its log, which says why. */
export class ComputeStartError extends Error {
  /** @param log_tail Postgres's last log lines */
  constructor(cause: unknown, log_tail: string[]) {
    super(`PostgreSQL failed to start: ${String(cause)}\nits last log lines:\n${log_tail.join("\n")}`, { cause });
    this.name = "ComputeStartError";
  }
}

const LOG_TAIL_LINES = 40;
/** Engines kept parked at most: each holds about 20 MB. */
const MAX_PARKED = 4;

/** A started PGlite waiting for its storage. */
class ParkedEngine {
  readonly fs = new TarnFS();
  /** PGlite reads its start parameters when Postgres starts, after the point where it waits: filled at attach. */
  readonly #start_params: string[] = [];
  readonly #created: Promise<PGlite>;
  readonly #log_tail: string[] = [];
  #attached = false;

  constructor() {
    const echo = Deno.env.get("TARN_PG_LOG") !== undefined;
    const onStderr = (line: string) => {
      if (echo) console.error(line);
      this.#log_tail.push(line);
      if (this.#log_tail.length > LOG_TAIL_LINES) this.#log_tail.shift();
      return true;
    };
    this.#created = loadArtifacts().then(({ module, bundle }) =>
      PGlite.create({
        fs: this.fs,
        pgliteWasmModule: module,
        fsBundle: bundle,
        startParams: this.#start_params,
        onStderr,
      })
    );
    // An engine parked and never attached fails silently; one attached reports its failure there.
    this.#created.catch(() => {});
  }

  /** Resolves once the engine waits for its storage (or failed before). */
  get parked(): Promise<void> {
    return Promise.race([this.fs.waiting, this.#created.then(() => {}, () => {})]);
  }

  /** Starts Postgres on `storage` with `settings` (`name=value`, after Tarn's own). */
  async attach(storage: TarnFsOptions, settings: readonly string[]): Promise<{ pg: PGlite; fs: TarnFS }> {
    if (this.#attached) throw new Error("ParkedEngine.attach: an engine starts once");
    this.#attached = true;
    this.#start_params.push(...startParams(settings));
    this.#log_tail.length = 0;
    this.fs.bind(storage);
    try {
      return { pg: await this.#created, fs: this.fs };
    } catch (error) {
      throw new ComputeStartError(error, this.#log_tail);
    }
  }
}

/** The process's parked engines. */
class EnginePool {
  readonly #parked: ParkedEngine[] = [];
  #target = 1;
  #refilling: Promise<void> | undefined;

  /** How many engines to keep parked (0 turns the pool off and lets go of the parked ones). */
  set target(count: number) {
    if (!Number.isInteger(count) || count < 0 || count > MAX_PARKED) {
      throw new RangeError(`warm engines: ${count} is not an integer from 0 to ${MAX_PARKED}`);
    }
    this.#target = count;
    this.#parked.splice(count);
  }

  get target(): number {
    return this.#target;
  }

  /** Engines parked now (or on their way there). */
  get size(): number {
    return this.#parked.length;
  }

  /** Resolves once the pool holds its target (or was emptied). */
  async filled(): Promise<void> {
    while (this.#refilling !== undefined) await this.#refilling;
    await Promise.all(this.#parked.map((engine) => engine.parked));
  }

  /** A parked engine, or a new one (parking on the way to its start) when there is none. */
  take(): ParkedEngine {
    return this.#parked.shift() ?? new ParkedEngine();
  }

  /**
   * Parks engines up to the target, one after another, once `after` settled: the caller's whole start (a parked
   * engine's work would otherwise slow the start it is meant to speed up). A call while a refill waits is ignored.
   */
  refill(after: Promise<unknown>): void {
    this.#refilling ??= (async () => {
      await after.catch(() => {});
      while (this.#parked.length < this.#target) {
        const engine = new ParkedEngine();
        this.#parked.push(engine);
        await engine.parked;
      }
    })().finally(() => this.#refilling = undefined);
  }
}

/**
 * The process's pool of parked engines: `target` of them parked after the first start, 1 unless set here or by the
 * environment variable `TARN_WARM_ENGINES` (0 to 4; 0 saves the memory of a parked engine, ~20 MB).
 */
export const enginePool: EnginePool = new EnginePool();
const from_env = Deno.env.get("TARN_WARM_ENGINES");
if (from_env !== undefined) enginePool.target = Number(from_env);

/**
 * Starts PostgreSQL on `storage` with `extra_settings` (`name=value`), on a parked engine when the pool has one:
 * recovery runs if the files and WAL it finds say so. Postgres's log goes to stderr when `TARN_PG_LOG` is set; its
 * tail is kept for the error when start fails.
 */
export async function startPostgres(
  storage: TarnFsOptions,
  extra_settings: readonly string[] = [],
): Promise<{ pg: PGlite; fs: TarnFS }> {
  return await enginePool.take().attach(storage, extra_settings);
}
