/**
 * `pg_backend_pid()` for each session of a server. PGlite runs one backend, whose `MyProcPid` Postgres also uses
 * for its latches, so it cannot change per session. Instead, the builtin's entry in fmgr's table (`fmgr_builtins`,
 * which PGlite does not export: it is found in the static data by its name and OID) points to a function that
 * answers the process id of the session whose call runs (its BackendKeyData pid), and `MyProcPid` outside such a
 * call. Found once per engine start; where it cannot be found with certainty, `pg_backend_pid()` stays as it is.
 *
 * @module
 */

/** `pg_backend_pid`'s OID (pg_proc.dat). */
const PG_BACKEND_PID_OID = 2026;
/** `FmgrBuiltin` on wasm32: foid (4), nargs (2), strict (1), retset (1), funcName (4), func (4). */
const FMGR_BUILTIN_BYTES = 16;

/** What of PGlite's Emscripten module this needs. */
export type PidModule = {
  HEAPU8: Uint8Array;
  addFunction: (fn: (fcinfo: number) => number, signature: string) => number;
};

/** Answers `pg_backend_pid()` with a session's pid for the duration of a call into the engine. */
export class BackendPid {
  readonly #mod: PidModule;
  readonly #exports: WebAssembly.Exports;
  /** The builtin's entry, its own function and ours; null when it cannot be located; undefined until first asked. */
  #found: { entry: number; original: number; replacement: number } | null | undefined;
  #pid: number | undefined;

  /** @param mod the engine's Emscripten module @param exports its WASM instance's exports */
  constructor(mod: PidModule, exports: WebAssembly.Exports) {
    this.#mod = mod;
    this.#exports = exports;
  }

  /**
   * Runs `fn` (a call into Postgres) with `pg_backend_pid()` answering `pid`. The entry points at the replacement
   * only during the call: a WASM snapshot (taken between calls) never holds a function another instance lacks.
   */
  async run<T>(pid: number, fn: () => Promise<T>): Promise<T> {
    const found = this.#locate();
    if (found === null) return await fn();
    const view = () => new DataView(this.#mod.HEAPU8.buffer);
    this.#pid = pid;
    view().setUint32(found.entry + 12, found.replacement, true);
    try {
      return await fn();
    } finally {
      view().setUint32(found.entry + 12, found.original, true);
      this.#pid = undefined;
    }
  }

  #locate(): { entry: number; original: number; replacement: number } | null {
    if (this.#found !== undefined) return this.#found;
    const heap_base = (this.#exports.__heap_base as WebAssembly.Global | undefined)?.value as number | undefined;
    const my_proc_pid = (this.#exports.MyProcPid as WebAssembly.Global | undefined)?.value as number | undefined;
    const entry = heap_base === undefined ? undefined : builtinEntry(this.#mod.HEAPU8, heap_base);
    if (entry === undefined || my_proc_pid === undefined) return this.#found = null;
    const own = () => new DataView(this.#mod.HEAPU8.buffer).getInt32(my_proc_pid, true);
    const replacement = this.#mod.addFunction(() => this.#pid ?? own(), "ii");
    const original = new DataView(this.#mod.HEAPU8.buffer).getUint32(entry + 12, true);
    return this.#found = { entry, original, replacement };
  }
}

/** The address of `pg_backend_pid`'s `FmgrBuiltin` below `limit`, when exactly one matches. */
function builtinEntry(memory: Uint8Array, limit: number): number | undefined {
  const name = new TextEncoder().encode("pg_backend_pid\0");
  const names = new Set<number>();
  for (let at = memory.indexOf(name[0]); at >= 0 && at < limit; at = memory.indexOf(name[0], at + 1)) {
    if ((at === 0 || memory[at - 1] === 0) && name.every((byte, i) => memory[at + i] === byte)) names.add(at);
  }
  const view = new DataView(memory.buffer);
  const found: number[] = [];
  for (let at = 0; at + FMGR_BUILTIN_BYTES <= limit; at += 4) {
    if (view.getUint32(at, true) !== PG_BACKEND_PID_OID || !names.has(view.getUint32(at + 8, true))) continue;
    if (view.getInt16(at + 4, true) === 0) found.push(at);
  }
  return found.length === 1 ? found[0] : undefined;
}
