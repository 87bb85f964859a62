/**
 * Starts PostgreSQL (PGlite) on a {@linkcode TarnFS} with the settings Tarn relies on.
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import type { TarnFS } from "./tarn_fs.ts";
import { findIdentityCells, type IdentityCells } from "./engine_identity.ts";

/**
 * Settings Tarn depends on: pages are made by storage, so no full-page images in WAL; no zero-filled or recycled
 * segments (they would be shipped as WAL); small shared buffers for a fast start. Tarn checkpoints by itself.
 */
export const TARN_SETTINGS: readonly string[] = [
  "full_page_writes=off",
  "wal_init_zero=off",
  "wal_recycle=off",
  "shared_buffers=16MB",
];

/** PGlite's start parameters plus {@linkcode TARN_SETTINGS}. */
export function startParams(extra_settings: readonly string[] = []): string[] {
  return [...PGlite.defaultStartParams, ...[...TARN_SETTINGS, ...extra_settings].flatMap((setting) => ["-c", setting])];
}

type Artifacts = { module: WebAssembly.Module; bundle: Blob };
let artifacts: Promise<Artifacts> | undefined;

/**
 * PGlite's WASM module and file bundle, loaded once per process: every compute after the first starts faster.
 * Calling it early (while storage opens) takes the load off a compute's start.
 */
export function loadArtifacts(): Promise<Artifacts> {
  artifacts ??= (async () => {
    const dist = new URL("./", import.meta.resolve("@electric-sql/pglite"));
    const [wasm, data] = await Promise.all([
      Deno.readFile(new URL("pglite.wasm", dist)),
      Deno.readFile(new URL("pglite.data", dist)),
    ]);
    return { module: await WebAssembly.compile(wasm), bundle: new Blob([data]) };
  })();
  return artifacts;
}

let identity_cells: Promise<IdentityCells | undefined> | undefined;

/**
 * Where PGlite's backend keeps who it is (`engine_identity.ts`), found once per process, when a call first needs
 * it; undefined when this build does not show it with certainty.
 */
export function engineIdentityCells(): Promise<IdentityCells | undefined> {
  identity_cells ??= (async () => {
    const dist = new URL("./", import.meta.resolve("@electric-sql/pglite"));
    return findIdentityCells(await Deno.readFile(new URL("pglite.wasm", dist)));
  })();
  return identity_cells;
}

/** Postgres did not start: the message carries the tail of its log, which says why. */
export class ComputeStartError extends Error {
  /** @param log_tail Postgres's last log lines */
  constructor(cause: unknown, log_tail: string[]) {
    super(`PostgreSQL failed to start: ${String(cause)}\nits last log lines:\n${log_tail.join("\n")}`, { cause });
    this.name = "ComputeStartError";
  }
}

const LOG_TAIL_LINES = 40;

/**
 * Starts PostgreSQL on `fs` with `extra_settings` (`name=value`): recovery runs if the files and WAL it finds say so. Postgres's log goes to stderr
 * when `TARN_PG_LOG` is set; its tail is kept for the error when start fails.
 */
export async function startPostgres(fs: TarnFS, extra_settings: readonly string[] = []): Promise<PGlite> {
  const { module, bundle } = await loadArtifacts();
  const echo = Deno.env.get("TARN_PG_LOG") !== undefined;
  const log_tail: string[] = [];
  const onStderr = (line: string) => {
    if (echo) console.error(line);
    log_tail.push(line);
    if (log_tail.length > LOG_TAIL_LINES) log_tail.shift();
    return true;
  };
  try {
    return await PGlite.create({
      fs,
      pgliteWasmModule: module,
      fsBundle: bundle,
      startParams: startParams(extra_settings),
      onStderr,
    });
  } catch (error) {
    throw new ComputeStartError(error, log_tail);
  }
}
