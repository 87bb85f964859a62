import assert from "node:assert/strict";
import { simulate } from "../src/replication/safekeeper/simulation.ts";

const SEEDS = 1000;
const STEPS = 1500;

Deno.test(`the quorum keeps every acknowledged commit through ${SEEDS} simulated runs of faults`, async () => {
  let acked_bytes = 0;
  let elections = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    // A failure throws SimulationFailure, whose message carries the seed and the last steps.
    const stats = await simulate({ seed, steps: STEPS });
    acked_bytes += stats.acked_bytes;
    elections += stats.elections;
  }
  // The runs must do real work, or the invariants hold vacuously.
  assert.ok(acked_bytes > SEEDS * 1000, `only ${acked_bytes} bytes acknowledged`);
  assert.ok(elections > SEEDS * 2, `only ${elections} elections`);
});

Deno.test("a seed replays the same run", async () => {
  assert.deepEqual(await simulate({ seed: 77, steps: STEPS }), await simulate({ seed: 77, steps: STEPS }));
});
