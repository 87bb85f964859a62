/**
 * `SELECT pg_cancel_backend(pid)` and `SELECT pg_terminate_backend(pid)` for the sessions of this server. Every
 * session shares one Postgres backend, whose own signal functions know no other process; the server answers these
 * statements itself, with the sessions' process ids (their BackendKeyData): a cancel reaches the target's running
 * statement, a terminate ends the target session with FATAL 57P01, as PostgreSQL's do. Other forms (a pid from a
 * subquery, inside a transaction) go to Postgres, which answers false with a warning.
 *
 * @module
 */
import { backendMessage, concatBytes, errorResponse, readyForQuery } from "./wire.ts";
import type { LoginRole } from "./login_role.ts";

/** What a signal asks for. */
export type BackendSignal = { kind: "cancel" | "terminate"; pid: number };

/** Why a session may not signal another (PostgreSQL's DETAIL for 42501). */
export type SignalRefused = { detail: string };

/**
 * PostgreSQL's rule for signalling another backend: a superuser may signal any; a role may signal its own role's
 * sessions but never a superuser's. (Membership in `pg_signal_backend` is not consulted: such a role is refused.)
 */
export function signalRefused(
  kind: BackendSignal["kind"],
  from: LoginRole | undefined,
  target: LoginRole | undefined,
): SignalRefused | undefined {
  if (from?.superuser || from === undefined || target === undefined) return undefined;
  const verb = kind === "cancel" ? "cancel queries of" : "terminate";
  if (target.superuser) {
    return {
      detail: `Only roles with the SUPERUSER attribute may ${verb} processes of roles with the SUPERUSER attribute.`,
    };
  }
  if (target.oid === from.oid) return undefined;
  return { detail: `Only roles with privileges of the role whose process is being signalled may ${verb} it.` };
}

const SIGNAL_QUERY = /^\s*select\s+(?:pg_catalog\.)?pg_(cancel|terminate)_backend\s*\(\s*(\d{1,10})\s*\)\s*;?\s*$/i;

/** The signal a simple query asks for, if it is one of the two statements in their plain form. */
export function backendSignal(sql: string): BackendSignal | undefined {
  const match = SIGNAL_QUERY.exec(sql.replace(/\0+$/, ""));
  if (match === null) return undefined;
  const pid = Number(match[2]);
  return pid > 0x7fff_ffff ? undefined : { kind: match[1].toLowerCase() as BackendSignal["kind"], pid };
}

/**
 * Postgres's answer to the statement: one boolean column named after the function, or the error that refused it;
 * then ReadyForQuery `status`.
 */
export function signalReply(signal: BackendSignal, sent: boolean | SignalRefused, status: string): Uint8Array {
  if (typeof sent !== "boolean") {
    const action = signal.kind === "cancel" ? "cancel query" : "terminate process";
    return concatBytes([
      errorResponse("ERROR", "42501", `permission denied to ${action}`, sent.detail),
      readyForQuery(status),
    ]);
  }
  const name = new TextEncoder().encode(`pg_${signal.kind}_backend`);
  const field = new Uint8Array(name.length + 1 + 18);
  field.set(name, 0);
  const view = new DataView(field.buffer, name.length + 1);
  view.setInt32(0, 0); // table oid
  view.setInt16(4, 0); // column number
  view.setInt32(6, 16); // type oid: bool
  view.setInt16(10, 1); // type length
  view.setInt32(12, -1); // type modifier
  view.setInt16(16, 0); // text format
  const row = new Uint8Array([0, 1, 0, 0, 0, 1, sent ? 0x74 : 0x66]);
  return concatBytes([
    backendMessage("T", concatBytes([new Uint8Array([0, 1]), field])),
    backendMessage("D", row),
    backendMessage("C", new TextEncoder().encode("SELECT 1\0")),
    readyForQuery(status),
  ]);
}
