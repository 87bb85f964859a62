/**
 * A compute's single Postgres backend as the sessions of a branch share it: one owner at a time, raw protocol
 * messages in and out, a COPY FROM STDIN streamed through the owner's client.
 *
 * @module
 */

import type { CallIdentity } from "../compute/engine_identity.ts";

/**
 * The client's side of a COPY FROM STDIN running in Postgres: `write` gives the client Postgres's replies so far
 * (CopyInResponse first), `read` the client's next messages (CopyData, CopyDone or CopyFail, Flush, Sync).
 */
export type CopyStream = { write(bytes: Uint8Array): Promise<void>; read(): Promise<Uint8Array> };

/**
 * What an owner of a backend does with it: `exec` passes raw protocol messages to Postgres and resolves with its
 * replies once the WAL they wrote is durable, run as `identity` (`engine_identity.ts`) when given; `generation`
 * numbers the engine behind a backend whose engine changes (a replica, `replica_backend.ts`): a new number is a
 * fresh engine, without the session state the last one held; `idle` runs the checkpoint policy, for when no transaction is open.
 */
export type BackendFn<T> = (
  exec: (message: Uint8Array, identity?: CallIdentity) => Promise<Uint8Array>,
  idle: () => Promise<void>,
  generation?: number,
) => Promise<T>;

/** A compute's single Postgres backend, which the sessions of a branch share. */
export interface SharedBackend {
  /**
   * Runs `fn` with the backend to itself; other owners wait. A COPY FROM STDIN streams through `copy` where the
   * backend can wait for the client's data (the engine in a Worker); elsewhere it fails with an error saying so.
   */
  exclusive<T>(fn: BackendFn<T>, copy?: CopyStream): Promise<T>;
  /**
   * Cancels the statement running now (on engine `generation`, where engines change), if any and if it can be
   * reached; says whether a cancel was sent.
   */
  cancel?(generation?: number): boolean;
}
