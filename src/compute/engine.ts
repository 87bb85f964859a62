/**
 * What every Tarn engine shares: the settings Tarn relies on, PGlite's WASM module and file bundle (loaded once per
 * process), and where the backend keeps who it is. Engines start in `engine_pool.ts`.
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
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
