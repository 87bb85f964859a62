/**
 * Handing a compute's single Postgres backend from one session to the next without leaking session state. PGlite
 * runs one backend, so what PostgreSQL keeps per connection lives in that backend for every session of a branch.
 * The rules (docs/wire_protocol.md, "Session state"):
 *
 * - Settings (`SET`, `set_config`): when a session that may have changed some gives the backend away, its
 *   session-level settings are read (`pg_settings`, source `session`) and kept, then `RESET ALL`; when it takes
 *   the backend again, they are set again. So no session sees another's settings, and each keeps its own.
 * - Cursors, LISTEN, advisory locks: dropped at a hand-over (`CLOSE ALL`, `UNLISTEN *`, unlock all).
 * - Temporary tables cannot be kept per session in one backend, nor dropped under a session that still uses them:
 *   a session that holds temporary objects at the end of a transaction keeps the backend (others wait) until it
 *   drops them or leaves; if it stays idle while others wait, it is disconnected with a message that says why.
 *   Its temporary objects are dropped (`DISCARD TEMP`) before the next session gets the backend.
 *
 * @module
 */
import { eachBackendMessage } from "./wire.ts";

/** What a compute's backend carries from one owner to the next. */
export type BackendState = {
  /** Session id of the last owner (0: none yet). */
  last_owner: number;
  /** Whether the last owner may have left session state. */
  dirty: boolean;
  /** The startup settings in force, as SQL. */
  settings_key: string;
  /** Per session away from the backend: the SQL that sets its session-level settings again. */
  saved: Map<number, string>;
  /** Sessions waiting for the backend now. */
  waiting: number;
};

/** A backend first seen: it may carry state from sessions served through another handle, so it is reset once. */
export function newBackendState(): BackendState {
  return { last_owner: 0, dirty: true, settings_key: "", saved: new Map(), waiting: 0 };
}

/**
 * Statements that may leave session state behind (settings, prepared statements by SQL, cursors, LISTEN, advisory
 * locks, temp objects): the backend is reset before its next owner only when its last owner ran one of these, or
 * when Postgres reported a setting change (ParameterStatus). A command word counts where a statement can start
 * (also inside a string, for EXECUTE 'SET ...'), so that `UPDATE ... SET` does not make every pgbench transaction
 * pay for a hand-over.
 */
export const SESSION_STATE =
  /(?:^|[;'"$\n\0]|\*\/)\s*(?:set|reset|prepare|deallocate|declare|listen|discard)\b|\b(?:pg_advisory\w*|temp|temporary|set_config)\b/i;

/** Statements that may create temporary objects: after them, the session checks whether it holds some. */
export const TEMP_OBJECTS = /\b(temp|temporary|pg_temp)\b/i;

const RESET_SQL = "RESET ALL; CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP;";

/** Settings a session cannot carry across (the transaction's own, and who it is: issue-level roles come later). */
const NOT_SAVED = ["session_authorization", "role", "transaction_isolation", "transaction_read_only"];

/** One row, one text: the SQL that sets the session-level settings in force again. */
const CAPTURE_SQL = "SELECT coalesce(string_agg(format('SELECT pg_catalog.set_config(%L, %L, false);', name, " +
  `setting), ' '), '') FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT IN (${
    NOT_SAVED.map((name) => `'${name}'`).join(", ")
  });`;

/** One row: whether the backend holds temporary relations. */
export const HOLDS_TEMP_SQL =
  "SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema();";

/** The SQL that hands the backend to `owner`, and whether its reply starts with the last owner's settings. */
export type Handover = { sql: string; captures: boolean; settings_key: string };

/**
 * What runs when `owner` (with startup settings `startup`, as `set_config` statements) takes the backend; an
 * empty `sql` when nothing needs to run.
 */
export function handover(state: BackendState, owner: number, startup: string[]): Handover {
  const settings_key = startup.join(" ");
  const own = state.saved.get(owner) ?? "";
  const captures = state.dirty && state.last_owner !== 0;
  const apply = state.dirty || state.settings_key !== settings_key || own !== "";
  const sql = [
    ...captures ? [CAPTURE_SQL] : [],
    ...state.dirty ? [RESET_SQL] : [],
    ...apply ? startup : [],
    own,
  ].join(" ").trim();
  return { sql, captures, settings_key };
}

/** Records a hand-over done: the last owner's settings are kept (from `reply`), `owner` holds the backend now. */
export function handedOver(state: BackendState, owner: number, done: Handover, reply: Uint8Array): void {
  if (done.captures) {
    const captured = firstCell(reply) ?? "";
    if (captured === "") state.saved.delete(state.last_owner);
    else state.saved.set(state.last_owner, captured);
  }
  const restored = state.saved.delete(owner);
  Object.assign(state, { last_owner: owner, dirty: restored, settings_key: done.settings_key });
}

/** Whether the reply to {@linkcode HOLDS_TEMP_SQL} counts temporary relations. */
export function holdsTemp(reply: Uint8Array): boolean {
  const count = firstCell(reply);
  return count !== undefined && count !== "0";
}

/** The text of the first column of the first DataRow in `reply`. */
function firstCell(reply: Uint8Array): string | undefined {
  let cell: string | undefined;
  eachBackendMessage(reply, (type, body) => {
    if (type !== "D") return true;
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    if (body.length >= 6 && view.getInt16(0) >= 1) {
      const length = view.getInt32(2);
      cell = length < 0 ? undefined : new TextDecoder().decode(body.subarray(6, 6 + length));
    }
    return false;
  });
  return cell;
}
