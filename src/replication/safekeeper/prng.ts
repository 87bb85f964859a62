/**
 * A small seeded pseudo-random generator (mulberry32) for simulations: the same seed gives the same run.
 *
 * @module
 */

/** Deterministic random numbers from a 32-bit seed. */
export class Prng {
  #state: number;

  /** @param seed any integer; runs with the same seed draw the same numbers */
  constructor(seed: number) {
    this.#state = seed | 0;
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) | 0;
    let t = Math.imul(this.#state ^ (this.#state >>> 15), 1 | this.#state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A uniform integer in [0, limit). */
  int(limit: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * limit);
  }

  /** A uniform bigint in [low, high]. */
  between(low: bigint, high: bigint): bigint {
    return low + BigInt(this.int(Number(high - low) + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }

  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** `size_bytes` random bytes. */
  bytes(size_bytes: number): Uint8Array {
    const out = new Uint8Array(size_bytes);
    for (let i = 0; i < size_bytes; i++) out[i] = this.next() & 0xff;
    return out;
  }
}
