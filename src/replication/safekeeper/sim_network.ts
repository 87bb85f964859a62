/**
 * The simulated network: messages in flight as encoded frames, delivered in random order, dropped, duplicated, or
 * blocked by a partition, all decided by the simulation's PRNG.
 *
 * @module
 */
import { decodeFrame, encodeMessage } from "./codec.ts";
import type { Message } from "./messages.ts";
import type { Prng } from "./prng.ts";

/** How many of the oldest messages in flight may overtake each other. */
const REORDER_WINDOW = 8;

/** A frame on its way from one node to another. */
export interface Packet {
  /** The sender's node id. */
  readonly from: number;
  /** The receiver's node id. */
  readonly to: number;
  /** The encoded message: every message crosses the codec, as on a real wire. */
  readonly frame: Uint8Array;
}

/** How unreliable the network is. */
export interface NetworkFaults {
  /** Probability that a delivery loses the message. */
  drop: number;
  /** Probability that a delivered message stays in flight to be delivered again. */
  duplicate: number;
}

/** Messages in flight between simulated nodes. */
export class SimNetwork {
  readonly #prng: Prng;
  readonly #max_in_flight: number;
  readonly #in_flight: Packet[] = [];
  /** Node pairs that cannot reach each other, as `low:high`. */
  readonly #blocked = new Set<string>();
  /** The current faults; the simulation turns them off to test liveness. */
  faults: NetworkFaults = { drop: 0.05, duplicate: 0.05 };

  /**
   * @param prng decides order and faults
   * @param max_in_flight messages held at most: a full network drops what is sent, as a full socket buffer would
   */
  constructor(prng: Prng, max_in_flight: number) {
    this.#prng = prng;
    this.#max_in_flight = max_in_flight;
  }

  /** Messages in flight. */
  get size(): number {
    return this.#in_flight.length;
  }

  /** Puts a message on the wire. */
  send(from: number, to: number, msg: Message): void {
    if (this.#in_flight.length >= this.#max_in_flight) return;
    this.#in_flight.push({ from, to, frame: encodeMessage(msg) });
  }

  /** Takes a message off the wire (a duplicate goes back to the end of the queue): undefined when it is lost (or nothing is in flight). */
  deliver(): { from: number; to: number; msg: Message } | undefined {
    if (this.#in_flight.length === 0) return undefined;
    // Mostly among the oldest few: reordered, yet with a bounded delay, as on a real network.
    const at = this.#prng.int(Math.min(this.#in_flight.length, REORDER_WINDOW));
    const packet = this.#in_flight[at];
    if (!this.#prng.chance(this.faults.duplicate)) this.#in_flight.splice(at, 1);
    else this.#in_flight.push(this.#in_flight.splice(at, 1)[0]);
    if (this.#prng.chance(this.faults.drop) || this.#blocked.has(pairKey(packet.from, packet.to))) return undefined;
    return { from: packet.from, to: packet.to, msg: decodeFrame(packet.frame) };
  }

  /** Splits `nodes` in two random sides that cannot reach each other. */
  partition(nodes: readonly number[]): string {
    this.#blocked.clear();
    const side = nodes.filter(() => this.#prng.chance(0.5));
    for (const a of side) for (const b of nodes) if (!side.includes(b)) this.#blocked.add(pairKey(a, b));
    return `partition [${side.join(",")}] from the rest`;
  }

  /** Ends every partition. */
  heal(): void {
    this.#blocked.clear();
  }
}

function pairKey(a: number, b: number): string {
  return a < b ? `${a}:${b}` : `${b}:${a}`;
}
