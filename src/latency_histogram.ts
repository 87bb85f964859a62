/**
 * A latency histogram in Prometheus's form (cumulative buckets, a sum and a count, in seconds), shared by the
 * pageserver's and the compute's `/metrics`.
 *
 * @module
 */

/** Upper bounds of the buckets, in seconds: from 100 us (a GetPage) to 10 s (a slow statement). */
const BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10];

/** Observations of a latency. */
export class LatencyHistogram {
  readonly #counts = new Array<number>(BUCKETS_S.length).fill(0);
  /** Observations so far. */
  count = 0;
  /** Their sum (s). */
  sum_s = 0;

  /** Records one observation of `elapsed_ms`. */
  observe(elapsed_ms: number): void {
    this.count++;
    this.sum_s += elapsed_ms / 1000;
    const i = BUCKETS_S.findIndex((le) => elapsed_ms / 1000 <= le);
    if (i >= 0) this.#counts[i]++;
  }

  /** The metric `name` (with `help`) in Prometheus's text format, one line an entry. */
  lines(name: string, help: string): string[] {
    const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    let cumulative = 0;
    BUCKETS_S.forEach((le, i) => {
      cumulative += this.#counts[i];
      lines.push(`${name}_bucket{le="${le}"} ${cumulative}`);
    });
    lines.push(`${name}_bucket{le="+Inf"} ${this.count}`, `${name}_sum ${this.sum_s}`, `${name}_count ${this.count}`);
    return lines;
  }
}
