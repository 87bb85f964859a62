/**
 * Handing a compute's single Postgres backend from one session to the next without leaking session state. PGlite
 * runs one backend, so what PostgreSQL keeps per connection lives in that backend for every session of a branch.
 * The rules (docs/wire_protocol.md, "Session state"):
 *
 * - Settings (`SET`, `set_config`): when a session that may have changed some gives the backend away, its
 *   session-level settings are read (`pg_settings`, source `session`) and kept, then `RESET ALL`; when it takes
 *   the backend again, they are set again. So no session sees another's settings, and each keeps its own.
 * - Cursors, advisory locks: dropped at a hand-over (`CLOSE ALL`, unlock all).
 * - LISTEN: the backend listens to every channel some session listens to, whoever holds it; the server routes each
 *   notification to its listeners (`notifications.ts`).
 * - Temporary tables cannot be kept per session in one backend, nor dropped under a session that still uses them:
 *   a session that holds temporary objects at the end of a transaction keeps the backend (others wait) until it
 *   drops them or leaves; if it stays idle while others wait, it is disconnected with a message that says why.
 *   Its temporary objects are dropped (`DISCARD TEMP`) before the next session gets the backend.
 *
 * @module
 */
import { NotificationHub } from "./notifications.ts";
import { textRows } from "./wire.ts";
import type { LoginRole } from "./login_role.ts";

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
  /** Statements prepared by SQL `PREPARE`, by name: the session that made them. */
  prepared: Map<string, number>;
  /** SQL-prepared statements of sessions that left, deallocated at the next hand-over. */
  orphans: Set<string>;
  /** The last owner has left: what it prepared by SQL and never showed goes at the next hand-over. */
  last_owner_gone: boolean;
  /** Who listens to which channel, among the sessions of this backend. */
  notifications: NotificationHub;
  /** A session holds the backend now. */
  owned: boolean;
  /**
   * The engine's generation (0 for a backend whose engine never changes). On a replica each generation is a
   * fresh engine: sessions keep their settings with the server (`saved`) and set them again on the next one.
   */
  generation: number;
  /** Login roles read from the catalog, by name, until a statement may have changed a role. */
  roles: Map<string, LoginRole>;
};

/** A backend first seen: it may carry state from sessions served through another handle, so it is reset once. */
export function newBackendState(): BackendState {
  return {
    last_owner: 0,
    dirty: true,
    settings_key: "",
    saved: new Map(),
    waiting: 0,
    prepared: new Map(),
    orphans: new Set(),
    last_owner_gone: false,
    notifications: new NotificationHub(),
    owned: false,
    roles: new Map(),
    generation: 0,
  };
}

/** The backend is a fresh engine (a replica's next generation): nothing of the last one's session state is there. */
export function newGeneration(state: BackendState, generation: number): void {
  Object.assign(state, {
    generation,
    last_owner: 0,
    dirty: true,
    settings_key: "",
    prepared: new Map(),
    orphans: new Set(),
    last_owner_gone: false,
  });
}

/**
 * On a replica, a session that may have changed its settings reads them before it gives the backend back (the
 * next owner may be on a fresh engine, where nobody could read them): the reply to {@linkcode CAPTURE_SQL}.
 */
export function keepOwnSettings(state: BackendState, owner: number, reply: Uint8Array): void {
  const [settings] = textRows(reply)[0] ?? [];
  if (settings) state.saved.set(owner, settings);
  else state.saved.delete(owner);
}

/**
 * Statements that may leave session state behind (settings, prepared statements by SQL, cursors, LISTEN, advisory
 * locks, temp objects; `ALTER ROLE/DATABASE` changes what the next session starts with): the backend is reset before its next owner only when its last owner ran one of these, or
 * when Postgres reported a setting change (ParameterStatus). A command word counts where a statement can start
 * (also inside a string, for EXECUTE 'SET ...'), so that `UPDATE ... SET` does not make every pgbench transaction
 * pay for a hand-over.
 */
export const SESSION_STATE =
  /(?:^|[;'"$\n\0]|\*\/)\s*(?:set|reset|prepare|deallocate|declare|listen|discard|alter\s+(?:role|user|database))\b|\b(?:pg_advisory\w*|temp|temporary|set_config)\b/i;

/** Statements that may create temporary objects: after them, the session checks whether it holds some. */
export const TEMP_OBJECTS = /\b(temp|temporary|pg_temp)\b/i;

/**
 * Who the session is comes first: a session that took another role may not be allowed the rest. PGlite's
 * `SET SESSION AUTHORIZATION DEFAULT` keeps the role it was set to, so the superuser is named.
 */
const RESET_SQL = "SET SESSION AUTHORIZATION postgres; RESET ROLE; RESET ALL; CLOSE ALL; " +
  "SELECT pg_advisory_unlock_all(); DISCARD TEMP;";

/**
 * One row: the SQL that puts the session's identity (session authorization, then role: neither is in
 * `pg_settings`) and its session-level settings back, and the names of the statements prepared by SQL,
 * comma-separated and quoted.
 */
export const CAPTURE_SQL = "SELECT concat_ws(' ', CASE WHEN session_user <> 'postgres' THEN " +
  "format('SET SESSION AUTHORIZATION %I;', session_user) END, CASE WHEN current_user <> session_user THEN " +
  "format('SET ROLE %I;', current_user) END, (SELECT string_agg(format('SELECT pg_catalog.set_config(%L, %L, " +
  "false);', name, setting), ' ') FROM pg_catalog.pg_settings WHERE source = 'session' AND name NOT LIKE " +
  "'transaction\\_%')), (SELECT coalesce(string_agg(quote_ident(name), ','), '') FROM " +
  "pg_catalog.pg_prepared_statements WHERE from_sql);";

/** Deallocates the SQL-prepared statements no session that is still here has made. */
function deallocateUnowned(kept: string[]): string {
  const keep = kept.map((name) => `'${name.replaceAll("'", "''")}'`).join(", ");
  return "DO $tarn$ DECLARE n text; BEGIN FOR n IN SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql" +
    `${kept.length > 0 ? ` AND name NOT IN (${keep})` : ""} LOOP EXECUTE 'DEALLOCATE ' || quote_ident(n); ` +
    "END LOOP; END $tarn$;";
}

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
  // Other startup settings (or another role) than the last owner's: what the last owner's set goes first.
  const dirty = state.dirty || state.settings_key !== settings_key;
  const captures = dirty && state.last_owner !== 0 && !state.last_owner_gone;
  const apply = dirty || own !== "";
  const orphans = [...state.orphans].map((name) => `DEALLOCATE ${quoteIdent(name)};`);
  // A backend first seen through this handle: whatever is prepared in it belongs to sessions that have all left.
  const unowned = state.last_owner === 0 ? ["DEALLOCATE ALL;"] : [deallocateUnowned([...state.prepared.keys()])];
  const sql = [
    ...captures ? [CAPTURE_SQL] : [],
    ...(state.last_owner === 0 || state.last_owner_gone) && dirty ? unowned : orphans,
    ...dirty ? [RESET_SQL] : [],
    ...apply ? startup : [],
    own,
  ].join(" ").trim();
  return { sql, captures, settings_key };
}

/** Records a hand-over done: the last owner's settings are kept (from `reply`), `owner` holds the backend now. */
export function handedOver(state: BackendState, owner: number, done: Handover, reply: Uint8Array): void {
  if (done.captures) {
    const [settings, names] = textRows(reply)[0] ?? [];
    if (!settings) state.saved.delete(state.last_owner);
    else state.saved.set(state.last_owner, settings);
    for (const name of splitNames(names ?? "")) {
      if (!state.prepared.has(name)) state.prepared.set(name, state.last_owner);
    }
  }
  state.orphans.clear();
  // A replica's sessions keep theirs for the next generation.
  const restored = state.generation > 0 ? state.saved.has(owner) : state.saved.delete(owner);
  Object.assign(state, { last_owner: owner, dirty: restored, settings_key: done.settings_key, last_owner_gone: false });
}

/** A session left: nothing is kept for it, and what it prepared by SQL is deallocated at the next hand-over. */
export function sessionLeft(state: BackendState, session: number): void {
  state.saved.delete(session);
  for (const [name, owner] of state.prepared) {
    if (owner !== session) continue;
    state.prepared.delete(name);
    state.orphans.add(name);
  }
  if (state.last_owner === session) state.last_owner_gone = true;
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Names as `quote_ident` wrote them, comma-separated, back to names. */
function splitNames(text: string): string[] {
  const names: string[] = [];
  for (const match of text.matchAll(/"((?:[^"]|"")*)"|([^,]+)/g)) {
    names.push(match[1] !== undefined ? match[1].replaceAll('""', '"') : match[2]);
  }
  return names;
}

/** Whether the reply to {@linkcode HOLDS_TEMP_SQL} counts temporary relations. */
export function holdsTemp(reply: Uint8Array): boolean {
  const [count] = textRows(reply)[0] ?? [];
  return count !== undefined && count !== "0";
}
