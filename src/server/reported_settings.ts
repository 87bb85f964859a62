/**
 * The settings PostgreSQL reports to its client (GUC_REPORT): ParameterStatus at startup, and again whenever one
 * changes (`SET`, `RESET`, a rolled-back `SET`, a function's `SET` clause). PGlite sends none of them, so the
 * server asks after a batch that may have changed one and reports what differs from what the client was told.
 * Drivers depend on it: psql lexes by `standard_conforming_strings`, and drivers that escape on the client side
 * read it too.
 *
 * @module
 */
import { concatBytes, parameterStatus, textRows } from "./wire.ts";

/** What PostgreSQL 18 reports (`GUC_REPORT`), with the value a new session starts with on Tarn. */
const STARTUP_VALUES: readonly [string, string][] = [
  ["application_name", ""],
  ["client_encoding", "UTF8"],
  ["DateStyle", "ISO, MDY"],
  ["default_transaction_read_only", "off"],
  ["in_hot_standby", "off"],
  ["integer_datetimes", "on"],
  ["IntervalStyle", "postgres"],
  ["is_superuser", "on"],
  ["scram_iterations", "4096"],
  ["search_path", '"$user", public'],
  ["server_encoding", "UTF8"],
  ["server_version", "18.6"],
  ["session_authorization", "postgres"],
  ["standard_conforming_strings", "on"],
  ["TimeZone", "UTC"],
];

/**
 * One row per reported setting: its name and its value now. `session_authorization` is the session user: PGlite's
 * backend never set the setting at login, so a RESET empties it while the session user stays.
 */
export const REPORTED_SQL = `SELECT n, CASE WHEN n = 'session_authorization' THEN session_user::text ` +
  `ELSE pg_catalog.current_setting(n, true) END FROM unnest(ARRAY[${
    STARTUP_VALUES.map(([name]) => `'${name}'`).join(", ")
  }]) AS n;`;

/** What one client has been told of the reported settings. */
export class ReportedSettings {
  readonly #told = new Map<string, string>();

  /** @param overrides values this session starts with that differ from the defaults (its startup parameters) */
  constructor(overrides: Record<string, string> = {}) {
    for (const [name, value] of STARTUP_VALUES) this.#told.set(name, overrides[name] ?? value);
  }

  /** ParameterStatus for every reported setting, as the startup sends them. */
  startup(): Uint8Array {
    return concatBytes([...this.#told].map(([name, value]) => parameterStatus(name, value)));
  }

  /** ParameterStatus for each setting whose value in the reply to {@linkcode REPORTED_SQL} the client has not seen. */
  changes(reply: Uint8Array): Uint8Array {
    const changed: Uint8Array[] = [];
    for (const [name, value] of textRows(reply)) {
      if (name === undefined || value === undefined || !this.#told.has(name) || this.#told.get(name) === value) {
        continue;
      }
      this.#told.set(name, value);
      changed.push(parameterStatus(name, value));
    }
    return concatBytes(changed);
  }
}
