/**
 * Scale to zero: a branch's compute that nobody uses for a while is suspended (its Postgres stopped, what it committed
 * persisted; the listener stays up), and the next connection starts it again. This keeps the count of users per branch
 * and the timers; what suspending does is the owner's.
 *
 * @module
 */

/** Counts a branch's users and suspends it `after_ms` after its last one left. */
export class IdleSuspender {
  readonly #after_ms: number;
  readonly #suspend: (branch: string) => Promise<void>;
  readonly #users = new Map<string, number>();
  readonly #timers = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #suspending = new Map<string, Promise<void>>();

  /**
   * @param after_ms how long a branch stays up with no user (0: never suspended)
   * @param suspend stops a branch's compute
   */
  constructor(after_ms: number, suspend: (branch: string) => Promise<void>) {
    this.#after_ms = after_ms;
    this.#suspend = suspend;
  }

  /** A user takes `branch`: a pending suspension is called off; one under way is waited for. */
  async attach(branch: string): Promise<void> {
    clearTimeout(this.#timers.get(branch));
    this.#timers.delete(branch);
    this.#users.set(branch, (this.#users.get(branch) ?? 0) + 1);
    await this.#suspending.get(branch);
  }

  /** A user of `branch` left; the last one starts the clock. */
  release(branch: string): void {
    const left = (this.#users.get(branch) ?? 1) - 1;
    this.#users.set(branch, left);
    if (left > 0 || this.#after_ms <= 0) return;
    const timer = setTimeout(() => {
      this.#timers.delete(branch);
      if ((this.#users.get(branch) ?? 0) > 0) return;
      const suspending = this.#suspend(branch).finally(() => this.#suspending.delete(branch));
      this.#suspending.set(branch, suspending);
    }, this.#after_ms);
    Deno.unrefTimer(timer);
    this.#timers.set(branch, timer);
  }

  /** Calls off every pending suspension and waits for those under way. */
  async close(): Promise<void> {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    await Promise.all(this.#suspending.values());
  }
}
