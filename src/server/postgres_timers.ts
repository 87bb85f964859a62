/**
 * Postgres's own timers off, for the engine Worker: PGlite runs `setitimer` on JavaScript timers that fire between
 * statements, where `statement_timeout` cancels the next statement instead of the long one and
 * `idle_in_transaction_session_timeout` ends the backend (PGlite then exits, and every session of the branch with
 * it). The server enforces those timeouts itself (`session_timeouts.ts`) with the cancel flags; Postgres keeps the
 * values, so `SHOW` and `SET` behave as usual. One backend never waits for a lock held by another, so
 * `lock_timeout` and `deadlock_timeout` have nothing to time.
 *
 * @module
 */
// deno-lint-ignore-file no-explicit-any -- WebAssembly.instantiate is wrapped in place.

let installed = false;

/** From now on in this isolate, WASM modules get a `setitimer` that never arms a timer. Call before PGlite starts. */
export function disablePostgresTimers(): void {
  if (installed) return;
  installed = true;
  const wasm = WebAssembly as any;
  const instantiate = wasm.instantiate;
  wasm.instantiate = (source: any, imports: any) => {
    if (imports?.env?._setitimer_js !== undefined) imports.env._setitimer_js = () => 0;
    return instantiate(source, imports);
  };
}
