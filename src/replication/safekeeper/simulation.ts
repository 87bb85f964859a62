/**
 * A deterministic simulation of one timeline's WAL quorum: proposers and three safekeepers in one process, a
 * network that drops, duplicates, reorders and partitions, safekeeper crashes that keep only what was synced,
 * storage faults, proposers crashing and racing. Everything random comes from one seed; {@linkcode SimChecker}
 * checks the invariants after every step, and the run ends by checking that a healed cluster commits again.
 *
 * @module
 */
import { formatLsn, type Lsn } from "../../lsn.ts";
import { type Outgoing, Proposer, ProposerBackpressureError } from "../proposer.ts";
import type { Message, ProposerMessage, SafekeeperMessage } from "./messages.ts";
import { Prng } from "./prng.ts";
import { Safekeeper, SafekeeperFailedError } from "./safekeeper.ts";
import { SimChecker } from "./sim_checker.ts";
import { SimNetwork } from "./sim_network.ts";
import { SimDisk, StorageFault } from "./sim_storage.ts";

/** Options of {@linkcode simulate}. */
export interface SimulationOptions {
  /** Decides everything. */
  seed: number;
  /** Steps of faults (default 600). */
  steps?: number;
  /** Steps a healed cluster gets to commit (default 4000). */
  liveness_steps?: number;
  /** Trace lines printed with a failure (default 40). */
  trace_lines?: number;
}

/** What one run did. */
export interface SimulationStats {
  /** Steps taken, faults and healing. */
  steps: number;
  /** Bytes acknowledged to clients. */
  acked_bytes: number;
  /** Proposers that won an election. */
  elections: number;
  /** Safekeeper crashes, injected faults included. */
  crashes: number;
}

/** A run broke an invariant or did not make progress: carries the seed and the last steps. */
export class SimulationFailure extends Error {
  /**
   * @param seed replays the run: `deno task sim --seeds 1 --start <seed>`
   * @param cause what failed
   * @param trace the last steps before it
   */
  constructor(readonly seed: number, cause: unknown, readonly trace: readonly string[]) {
    super(
      `simulation seed ${seed} failed: ${cause instanceof Error ? cause.message : cause}\n` +
        `last steps:\n  ${trace.join("\n  ")}`,
      { cause },
    );
    this.name = "SimulationFailure";
  }
}

const SAFEKEEPERS = [0, 1, 2];
const TIMELINE_START_LSN: Lsn = 0x100_0028n;
const MAX_PROPOSERS = 3;
const MAX_IN_FLIGHT = 500;

/** What a step may do. */
type Action =
  | "deliver"
  | "tick"
  | "append"
  | "crash"
  | "restart"
  | "fault"
  | "partition"
  | "heal"
  | "crash_proposer"
  | "start_proposer";

const ACTIONS: readonly Action[] = [
  "deliver",
  "tick",
  "append",
  "crash",
  "restart",
  "fault",
  "partition",
  "heal",
  "crash_proposer",
  "start_proposer",
];
/** Weights per thousand steps, before each seed scales the faults (swarm testing: some seeds lack some faults). */
const BASE_WEIGHTS = [660, 40, 120, 20, 60, 15, 15, 30, 10, 10];
const FAULT_SCALES = [0, 0.5, 1, 2, 4];
const DROP_RATES = [0, 0.02, 0.1, 0.3];
const DUPLICATE_RATES = [0, 0.05, 0.2];

/** Runs one seed; throws {@linkcode SimulationFailure} when an invariant breaks or a healed cluster is stuck. */
export async function simulate(opts: SimulationOptions): Promise<SimulationStats> {
  const sim = new Simulation(opts.seed, opts.trace_lines ?? 40);
  try {
    await sim.init();
    for (let i = 0; i < (opts.steps ?? 600); i++) await sim.step();
    await sim.heal(opts.liveness_steps ?? 4000);
  } catch (error) {
    throw new SimulationFailure(opts.seed, error, sim.trace);
  }
  return sim.stats;
}

class Simulation {
  readonly prng: Prng;
  readonly network: SimNetwork;
  readonly checker = new SimChecker(TIMELINE_START_LSN);
  readonly disks: SimDisk[];
  readonly safekeepers: (Safekeeper | undefined)[] = [];
  readonly proposers = new Map<number, Proposer>();
  readonly stats: SimulationStats = { steps: 0, acked_bytes: 0, elections: 0, crashes: 0 };
  readonly #trace: string[] = [];
  readonly #trace_lines: number;
  #next_proposer = 100;
  readonly #elected = new Set<Proposer>();
  readonly #weights: number[];
  readonly #total_weight: number;

  constructor(seed: number, trace_lines: number) {
    this.prng = new Prng(seed);
    this.network = new SimNetwork(this.prng, MAX_IN_FLIGHT);
    this.disks = SAFEKEEPERS.map(() => new SimDisk(this.prng));
    this.#trace_lines = trace_lines;
    // Delivering, ticking and appending always happen; each fault is scaled (maybe to 0) for this seed.
    this.#weights = BASE_WEIGHTS.map((w, i) => i < 3 ? w : Math.round(w * this.prng.pick(FAULT_SCALES)));
    this.#total_weight = this.#weights.reduce((a, b) => a + b, 0);
    this.network.faults = { drop: this.prng.pick(DROP_RATES), duplicate: this.prng.pick(DUPLICATE_RATES) };
  }

  get trace(): string[] {
    return this.#trace;
  }

  note(line: string): void {
    this.#trace.push(`${this.stats.steps}: ${line}`);
    if (this.#trace.length > this.#trace_lines) this.#trace.shift();
  }

  async init(): Promise<void> {
    for (const id of SAFEKEEPERS) await this.restart(id);
    this.startProposer();
  }

  /** One random action, then every invariant. */
  async step(): Promise<void> {
    this.stats.steps++;
    if (this.proposers.size === 0 && this.prng.chance(0.05)) {
      // A compute is restarted soon after its proposer dies, whatever this seed's weights.
      this.startProposer();
      return this.check();
    }
    let roll = this.prng.int(this.#total_weight);
    let action = 0;
    while (roll >= this.#weights[action]) roll -= this.#weights[action++];
    await this.act(ACTIONS[action]);
    this.check();
  }

  async act(action: Action): Promise<void> {
    const proposer_ids = [...this.proposers.keys()];
    switch (action) {
      case "deliver":
        return await this.deliver();
      case "tick":
        if (proposer_ids.length > 0) this.tick(this.prng.pick(proposer_ids));
        return;
      case "append":
        this.clientAppend();
        return;
      case "crash":
        return this.crash(this.prng.pick(SAFEKEEPERS));
      case "restart":
        return await this.restart(this.prng.pick(SAFEKEEPERS));
      case "fault":
        return this.armFault(this.prng.pick(SAFEKEEPERS));
      case "partition":
        return this.note(this.network.partition([...SAFEKEEPERS, ...proposer_ids]));
      case "heal":
        this.network.heal();
        return this.note("network heals");
      case "crash_proposer":
        if (proposer_ids.length > 0) this.crashProposer(this.prng.pick(proposer_ids));
        return;
      case "start_proposer":
        this.startProposer();
        return;
    }
  }

  async deliver(): Promise<void> {
    const packet = this.network.deliver();
    if (packet === undefined) return;
    const { from, to, msg } = packet;
    const safekeeper = this.safekeepers[to];
    if (safekeeper !== undefined) {
      this.note(`${from} -> sk${to} ${describe(msg)}`);
      try {
        this.network.send(to, from, await safekeeper.handle(msg as ProposerMessage));
      } catch (error) {
        if (!(error instanceof SafekeeperFailedError && error.cause instanceof StorageFault)) throw error;
        this.note(`sk${to} failed: ${error.cause.message}`);
        this.crash(to);
      }
      return;
    }
    const proposer = this.proposers.get(to);
    if (proposer === undefined) return;
    this.note(`sk${from} -> ${to} ${describe(msg)}`);
    this.send(to, proposer.onMessage(from, msg as SafekeeperMessage));
  }

  send(from: number, out: Outgoing[]): void {
    for (const { to, msg } of out) this.network.send(from, to, msg);
  }

  tick(id: number): void {
    const proposer = this.proposers.get(id)!;
    this.note(`tick ${id} (${proposer.state}, term ${proposer.term})`);
    this.send(id, proposer.tick());
  }

  clientAppend(): boolean {
    const streaming = [...this.proposers].filter(([, p]) => p.state === "streaming");
    if (streaming.length === 0) return false;
    const [id, proposer] = this.prng.pick(streaming);
    const size_roll = this.prng.int(100);
    const size_bytes = 1 +
      (size_roll < 70 ? this.prng.int(100) : size_roll < 95 ? this.prng.int(600) : this.prng.int(3000));
    const lsn_start = proposer.end_lsn;
    const bytes = this.prng.bytes(size_bytes);
    try {
      this.send(id, proposer.append(lsn_start, bytes));
    } catch (error) {
      if (error instanceof ProposerBackpressureError) return false;
      throw error;
    }
    this.checker.onAppend(proposer, lsn_start, bytes);
    this.note(`client appends ${size_bytes} bytes at ${formatLsn(lsn_start)} to ${id}`);
    return true;
  }

  crash(id: number): void {
    if (this.safekeepers[id] === undefined) return;
    this.safekeepers[id] = undefined;
    this.stats.crashes++;
    this.note(`sk${id} crashes: ${this.disks[id].crash()}`);
  }

  async restart(id: number): Promise<void> {
    if (this.safekeepers[id] !== undefined) return;
    this.disks[id].fault_countdown = -1;
    this.safekeepers[id] = await Safekeeper.open(this.disks[id].open(), { commit_persist_interval_bytes: 200 });
    const sk = this.safekeepers[id]!;
    this.note(`sk${id} starts: term ${sk.term}, flush ${formatLsn(sk.flush_lsn)}`);
  }

  armFault(id: number): void {
    if (this.safekeepers[id] === undefined) return;
    this.disks[id].fault_countdown = this.prng.int(6);
    this.note(`sk${id} will fail storage operation ${this.disks[id].fault_countdown + 1} from now`);
  }

  startProposer(): number {
    if (this.proposers.size >= MAX_PROPOSERS) return -1;
    const id = this.#next_proposer++;
    const proposer = new Proposer({
      proposer_id: BigInt(id) * 0x1_0000_0001n,
      safekeepers: SAFEKEEPERS,
      timeline_start_lsn: TIMELINE_START_LSN,
      recover_from_lsn: TIMELINE_START_LSN,
      max_message_bytes: 512,
      max_inflight_bytes: 2048,
      max_buffer_bytes: 4096,
      max_uncommitted_bytes: 64 * 1024,
      max_campaigns: 1000,
    });
    this.proposers.set(id, proposer);
    this.note(`proposer ${id} starts`);
    this.send(id, proposer.start());
    return id;
  }

  crashProposer(id: number): void {
    this.checker.forget(this.proposers.get(id)!);
    this.proposers.delete(id);
    this.note(`proposer ${id} crashes`);
  }

  check(): void {
    this.checker.checkProposers(this.proposers.values());
    for (const [id, proposer] of this.proposers) {
      if (proposer.state === "streaming" && !this.#elected.has(proposer)) {
        this.#elected.add(proposer);
        this.stats.elections++;
        this.note(`proposer ${id} elected in term ${proposer.term} from ${formatLsn(proposer.term_start_lsn)}`);
      }
      if (proposer.state === "deposed") {
        this.note(`proposer ${id} deposed: ${proposer.deposed_reason}`);
        this.crashProposer(id);
      }
    }
    for (const id of SAFEKEEPERS) {
      const sk = this.safekeepers[id];
      const disk = this.disks[id];
      const term = sk?.term ?? disk.state.term;
      const commit_lsn = sk?.commit_lsn ?? disk.state.commit_lsn;
      const flush_lsn = sk?.flush_lsn ?? disk.wal_end_lsn;
      this.checker.checkSafekeeper(id, { term, committed_lsn: commit_lsn < flush_lsn ? commit_lsn : flush_lsn, disk });
    }
    this.stats.acked_bytes = Number(this.checker.acked_lsn - TIMELINE_START_LSN);
  }

  /** Ends faults, leaves a majority up and connected, and requires one proposer to commit all it was given. */
  async heal(max_steps: number): Promise<void> {
    this.network.faults = { drop: 0, duplicate: 0 };
    this.network.heal();
    for (const id of [...this.proposers.keys()]) this.crashProposer(id);
    for (const id of SAFEKEEPERS) await this.restart(id);
    for (const disk of this.disks) disk.fault_countdown = -1;
    if (this.prng.chance(0.3)) this.crash(this.prng.pick(SAFEKEEPERS));
    this.note("healed: faults off, a majority up");
    let proposer = this.proposers.get(this.startProposer())!;
    let appended = false;
    for (let i = 0; i < max_steps; i++) {
      this.stats.steps++;
      if (proposer.state === "deposed" || !this.proposers.has(this.#idOf(proposer))) {
        proposer = this.proposers.get(this.startProposer())!;
      }
      if (!appended && proposer.state === "streaming") appended = this.clientAppend();
      else if (this.network.size > 0) await this.deliver();
      else this.tick(this.#idOf(proposer));
      this.check();
      if (appended && proposer.commit_lsn === proposer.end_lsn) return;
    }
    throw new Error(
      `no progress: after ${max_steps} healed steps the proposer is ${proposer.state} in term ${proposer.term}, ` +
        `commit ${formatLsn(proposer.commit_lsn)} of ${formatLsn(proposer.end_lsn)}`,
    );
  }

  #idOf(proposer: Proposer): number {
    return [...this.proposers].find(([, p]) => p === proposer)?.[0] ?? -1;
  }
}

/** A message in a trace line. */
function describe(msg: Message): string {
  switch (msg.type) {
    case "status_request":
      return "status?";
    case "status_response":
      return `status t${msg.term} flush ${formatLsn(msg.flush_lsn)}`;
    case "vote_request":
      return `vote? t${msg.term}`;
    case "vote_response":
      return `vote t${msg.term} ${msg.granted ? "yes" : "no"} last t${msg.last_log_term} ${formatLsn(msg.flush_lsn)}`;
    case "elected":
      return `elected t${msg.term} at ${formatLsn(msg.term_start_lsn)}`;
    case "append_request":
      return `append t${msg.term} ${formatLsn(msg.begin_lsn)}+${msg.bytes.length} commit ${formatLsn(msg.commit_lsn)}`;
    case "append_response":
      return `appended t${msg.term} ${msg.status} flush ${formatLsn(msg.flush_lsn)} commit ${
        formatLsn(msg.commit_lsn)
      }`;
    case "read_request":
      return `read? t${msg.term} ${formatLsn(msg.lsn_start)}..${formatLsn(msg.lsn_end)}`;
    case "read_response":
      return `read t${msg.term} ${msg.status} ${formatLsn(msg.lsn_start)}..${formatLsn(msg.lsn_end)}`;
    case "hello":
      return `hello ${msg.tenant_id}/${msg.timeline_id}`;
    case "hello_response":
      return `hello from ${msg.node_id} t${msg.term} flush ${formatLsn(msg.flush_lsn)}`;
  }
}
