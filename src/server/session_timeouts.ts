/**
 * `statement_timeout` and `idle_in_transaction_session_timeout`, as a session sets them (startup options, `SET`,
 * `ALTER ROLE/DATABASE ... SET`), enforced by the server: Postgres's own timers are off in the engine Worker
 * (`postgres_timers.ts`). A statement running past its timeout is cancelled with the cancel flags and answered
 * with PostgreSQL's message; the idle timeout ends the session as PostgreSQL does (25P03).
 *
 * @module
 */
import { backendMessage, concatBytes, eachBackendMessage, textRows } from "./wire.ts";

/** A session's timeouts (ms; 0: none). */
export type SessionTimeouts = { statement_ms: number; idle_in_transaction_ms: number };

const NAMES: Record<string, keyof SessionTimeouts> = {
  statement_timeout: "statement_ms",
  idle_in_transaction_session_timeout: "idle_in_transaction_ms",
};

/** Rows (name, value in ms) of the timeouts in force. */
export const TIMEOUTS_SQL = `SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN (${
  Object.keys(NAMES).map((name) => `'${name}'`).join(", ")
});`;

/**
 * The SQL that applies the settings `ALTER ROLE/DATABASE ... SET` stored for `user` in this database, as a new
 * PostgreSQL backend does at start: global, then the database's, the role's, the role's in the database, each
 * overriding the one before (the startup packet's come after). A stored value Postgres refuses is skipped.
 */
export function storedSettingsSql(user: string): string {
  const role = `'${user.replaceAll("'", "''")}'`;
  return "DO $tarn$ DECLARE r record; BEGIN FOR r IN SELECT split_part(c, '=', 1) AS name, " +
    "substr(c, strpos(c, '=') + 1) AS value FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) AS c " +
    "WHERE s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())) " +
    `AND s.setrole IN (0, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = ${role})) ` +
    "ORDER BY s.setrole <> 0, s.setdatabase <> 0 LOOP BEGIN PERFORM pg_catalog.set_config(r.name, r.value, false); " +
    "EXCEPTION WHEN others THEN NULL; END; END LOOP; END $tarn$;";
}

const UNITS_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration as PostgreSQL reads one for a time setting (`500`, `5s`, `2min`); undefined when it cannot. */
export function parseDurationMs(value: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$/.exec(value);
  if (match === null) return undefined;
  return Math.round(Number(match[1]) * UNITS_MS[match[2] ?? "ms"]);
}

/** The timeouts among a session's startup settings. */
export function startupTimeouts(settings: [string, string][]): Partial<SessionTimeouts> {
  const timeouts: Partial<SessionTimeouts> = {};
  for (const [name, value] of settings) {
    const key = NAMES[name];
    const ms = key === undefined ? undefined : parseDurationMs(value);
    if (key !== undefined && ms !== undefined) timeouts[key] = ms;
  }
  return timeouts;
}

/** The timeouts in the reply to {@linkcode TIMEOUTS_SQL}. */
export function timeoutsOf(reply: Uint8Array): Partial<SessionTimeouts> {
  const timeouts: Partial<SessionTimeouts> = {};
  for (const [name, value] of textRows(reply)) {
    const key = name === undefined ? undefined : NAMES[name];
    if (key !== undefined && value !== undefined && /^\d+$/.test(value)) timeouts[key] = Number(value);
  }
  return timeouts;
}

const USER_CANCEL = "canceling statement due to user request";
const TIMEOUT_CANCEL = "canceling statement due to statement timeout";

/** `reply` with the cancel that the statement timeout caused told as PostgreSQL tells it. */
export function asStatementTimeout(reply: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  eachBackendMessage(reply, (type, body, at) => {
    const text = type === "E" ? decoder.decode(body) : "";
    parts.push(
      text.includes(`M${USER_CANCEL}\0`)
        ? backendMessage("E", encoder.encode(text.replace(`M${USER_CANCEL}\0`, `M${TIMEOUT_CANCEL}\0`)))
        : reply.subarray(at, at + 5 + body.length),
    );
    return true;
  });
  return concatBytes(parts);
}
