/**
 * An embedded client on a branch's read replica (`Tarn.connect(branch, { replica: true })`): read-only statements
 * on the branch's newest committed state, never older than `max_lag_ms` when a statement (or a transaction) begins.
 * As in the server (docs/replicas.md), the replica is a series of read-only computes at the branch head; this
 * client owns its own, and moves to a new one before a statement that would otherwise read an older state than the
 * bound allows (when the head has moved). A transaction stays on one compute from BEGIN to COMMIT.
 *
 * @module
 */
import { SessionLock, TarnClient } from "./client.ts";
import type { Compute } from "./compute/compute.ts";
import type { Lsn } from "./lsn.ts";

/** Where the replica's computes come from. */
export type EmbeddedReplicaSource = {
  /** A read-only compute at the branch head now, its LSN, and how to stop it. */
  attach(): Promise<{ compute: Compute; release: () => Promise<void>; lsn?: Lsn }>;
  /** The branch head now. */
  headLsn(): Promise<Lsn>;
};

type Generation = { compute: Compute; release: () => Promise<void>; head: Lsn; fresh_at_ms: number };

/** A client on `branch`'s replica. */
export async function connectReplica(
  source: EmbeddedReplicaSource,
  branch: string,
  max_lag_ms: number,
): Promise<TarnClient> {
  if (!(max_lag_ms > 0)) throw new RangeError(`max_lag_ms must be positive, got ${max_lag_ms}`);
  const start = async (): Promise<Generation> => {
    const fresh_at_ms = performance.now();
    const head = await source.headLsn();
    const { compute, release } = await source.attach();
    return { compute, release, head, fresh_at_ms };
  };
  let current = await start();
  // Runs before each statement or transaction, alone: the compute it leaves has nothing running.
  const lock = new SessionLock(async () => {
    if (performance.now() - current.fresh_at_ms <= max_lag_ms) return;
    const checked_ms = performance.now();
    if (await source.headLsn() <= current.head) {
      current.fresh_at_ms = checked_ms;
      return;
    }
    const next = await start();
    const previous = current;
    current = next;
    await previous.release();
  });
  return new TarnClient(() => current.compute.postgres, lock, {
    after: () => Promise.resolve(),
    read_only_label: `the replica of branch "${branch}"`,
    on_close: () => current.release(),
  });
}
