/**
 * Tarn's checkpoint policy. PGlite runs single-user Postgres, which never checkpoints by itself: Tarn issues
 * CHECKPOINT after a volume of WAL and when idle, then persists the pages, so that a restart or a branch replays
 * little WAL. The WAL itself is kept: branches at past LSNs need it.
 *
 * @module
 */
import type { SessionLock } from "../client.ts";
import type { Lsn } from "../lsn.ts";
import type { WalSink, WalSource } from "../replication/wal_api.ts";
import type { ComputePages } from "../storage/page_api.ts";

/** What the checkpointer drives. */
export type CheckpointerOptions = {
  /** Runs CHECKPOINT (as a superuser, whoever the backend's session is). */
  checkpoint: () => Promise<unknown>;
  pages: ComputePages;
  wal: WalSink & WalSource;
  /** Checkpoint once this much WAL was written since the last one. */
  checkpoint_wal_bytes: number;
  /** Checkpoint after this long without statements, if WAL was written. */
  idle_ms: number;
};

/** Runs checkpoints by WAL volume and idleness. */
export class Checkpointer {
  readonly #options: CheckpointerOptions;
  #last_checkpoint_lsn: Lsn;
  #idle_timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  /** @param options what to checkpoint and when */
  constructor(options: CheckpointerOptions) {
    this.#options = options;
    this.#last_checkpoint_lsn = options.wal.end_lsn;
  }

  /** Called after every statement, inside the session lock. */
  async afterStatement(session: SessionLock): Promise<void> {
    const { wal, checkpoint_wal_bytes, idle_ms } = this.#options;
    if (wal.end_lsn - this.#last_checkpoint_lsn >= BigInt(checkpoint_wal_bytes)) await this.checkpoint();
    if (this.#idle_timer !== undefined) clearTimeout(this.#idle_timer);
    if (this.#stopped || wal.end_lsn === this.#last_checkpoint_lsn) return;
    const timer = setTimeout(() => {
      this.#idle_timer = undefined;
      if (!this.#stopped) session.run(() => this.checkpoint()).catch((error) => console.error(error));
    }, idle_ms);
    Deno.unrefTimer(timer);
    this.#idle_timer = timer;
  }

  /** CHECKPOINT now, and persist the pages it wrote in the background (nobody waits for a layer write). */
  async checkpoint(): Promise<void> {
    if (this.#stopped) return;
    const { pages, wal } = this.#options;
    await this.#options.checkpoint();
    this.#last_checkpoint_lsn = wal.end_lsn;
    pages.flushSoon(await wal.flush());
  }

  /** CHECKPOINT now unless no WAL was written since the last one (a checkpoint itself writes WAL). */
  async checkpointIfWritten(): Promise<void> {
    if (this.#options.wal.end_lsn !== this.#last_checkpoint_lsn) await this.checkpoint();
  }

  /** Lets checkpoints run again after {@linkcode stop} (a rewound compute goes on). */
  restart(): void {
    this.#stopped = false;
    this.#last_checkpoint_lsn = this.#options.wal.end_lsn;
  }

  /** Stops timers; no checkpoint starts after this. */
  stop(): void {
    this.#stopped = true;
    if (this.#idle_timer !== undefined) clearTimeout(this.#idle_timer);
  }
}
