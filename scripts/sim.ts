/**
 * Runs the safekeeper quorum simulation over many seeds: `deno task sim --seeds 100000 [--start 1] [--steps 1500]`.
 * A failure prints its seed and last steps and exits 1; replay it with `--seeds 1 --start <seed>`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { simulate, SimulationFailure } from "../src/replication/safekeeper/simulation.ts";

const USAGE = "usage: deno task sim --seeds N [--start S] [--steps K] [--trace LINES]";

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) {
    console.error(`--${name} ${text} is not a whole number\n${USAGE}`);
    Deno.exit(2);
  }
  return value;
}

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    options: {
      seeds: { type: "string" },
      start: { type: "string" },
      steps: { type: "string" },
      trace: { type: "string" },
      help: { type: "boolean" },
    },
  }).values;
} catch (error) {
  console.error(`${(error as Error).message}\n${USAGE}`);
  Deno.exit(2);
}
if (parsed.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const seeds = positive("seeds", parsed.seeds, 1000);
const start = positive("start", parsed.start, 1);
const steps = positive("steps", parsed.steps, 1500);
const trace_lines = positive("trace", parsed.trace, 60);

const started_ms = performance.now();
let acked_bytes = 0;
let elections = 0;
let crashes = 0;
for (let seed = start; seed < start + seeds; seed++) {
  try {
    const stats = await simulate({ seed, steps, trace_lines });
    acked_bytes += stats.acked_bytes;
    elections += stats.elections;
    crashes += stats.crashes;
  } catch (error) {
    if (!(error instanceof SimulationFailure)) throw error;
    console.error(error.message);
    console.error(`replay: deno task sim --seeds 1 --start ${seed} --steps ${steps}`);
    Deno.exit(1);
  }
  const done = seed - start + 1;
  if (done % 1000 === 0) console.log(`${done} seeds ok (last ${seed})`);
}
const seconds = (performance.now() - started_ms) / 1000;
console.log(
  `${seeds} seeds from ${start} ok in ${seconds.toFixed(1)} s (${(seeds / seconds).toFixed(0)} seeds/s): ` +
    `${acked_bytes} bytes acknowledged, ${elections} elections, ${crashes} safekeeper crashes`,
);
