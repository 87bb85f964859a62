/**
 * A session's named prepared statements (extended protocol Parse), kept by the server so that they can be made
 * again on a fresh engine: a replica's sessions move to a new read-only compute between transactions
 * (`replica_backend.ts`), and drivers such as postgres.js prepare once and Bind the same statement for the life of
 * the connection. A Close of the statement forgets it. The unnamed statement lasts one batch and is not kept.
 *
 * @module
 */
import { backendMessage, concatBytes, type FrontendMessage, ProtocolError, readCString } from "./wire.ts";

/** Named statements one session may keep on a replica (PostgreSQL has no limit; a server needs one). */
export const MAX_REPLAYED_STATEMENTS = 10_000;

const SYNC = backendMessage("S", new Uint8Array(0));

/** The Parse messages of a session's named statements, as sent to the engine (names already per session). */
export class StatementReplay {
  readonly #parsed = new Map<string, Uint8Array>();

  /** Notes a message on its way to the engine: a Parse of a named statement, or a Close of one. */
  observe(message: FrontendMessage): void {
    if (message.type === "P") {
      const [name] = readCString(message.body, 0);
      if (name === "") return;
      if (!this.#parsed.has(name) && this.#parsed.size >= MAX_REPLAYED_STATEMENTS) {
        throw new ProtocolError(
          `more than ${MAX_REPLAYED_STATEMENTS} prepared statements on one replica connection: close some ` +
            "(Close, DEALLOCATE) or reconnect",
        );
      }
      this.#parsed.set(name, backendMessage("P", message.body));
    } else if (message.type === "C" && message.body[0] === 0x53) {
      this.#parsed.delete(readCString(message.body, 1)[0]);
    }
  }

  /** Parse messages that make every kept statement again, then Sync; undefined when none is kept. */
  messages(): Uint8Array | undefined {
    if (this.#parsed.size === 0) return undefined;
    return concatBytes([...this.#parsed.values(), SYNC]);
  }
}
