/**
 * The PostgreSQL role a connection logs in as: looked up in the branch's own catalog (`pg_authid`) when the client
 * connects, as a PostgreSQL backend does at start. A role that does not exist or may not log in is refused (28000);
 * a role's password, when `CREATE ROLE ... PASSWORD` or `ALTER ROLE ... PASSWORD` gave it one, is its SCRAM
 * verifier; `rolvaliduntil` in the past makes password logins fail.
 *
 * @module
 */
import { authenticate, AuthenticationFailedError, type ScramChannel, type ScramSecret, scramSecret } from "./scram.ts";
import { backendMessage, cStrings, textRows } from "./wire.ts";
import type { BackendState } from "./backend_handover.ts";
import type { SharedBackend } from "./shared_backend.ts";

/** A role as a login needs it. */
export type LoginRole = {
  /** The role's oid. */
  oid: number;
  name: string;
  superuser: boolean;
  can_login: boolean;
  /** The role's SCRAM-SHA-256 verifier; undefined when it has no password (or an MD5 one, which SCRAM cannot use). */
  verifier: ScramSecret | undefined;
  /** `VALID UNTIL` has passed: password logins fail. */
  expired: boolean;
};

/** Why a login was refused before authentication could make a difference (SQLSTATE 28000). */
export class LoginRefusedError extends Error {
  /** @param message PostgreSQL's own message for the case */
  constructor(message: string) {
    super(message);
    this.name = "LoginRefusedError";
  }
}

/** Roles whose login is remembered per backend (see {@linkcode lookUpRole}). */
const MAX_KNOWN_ROLES = 1000;

/**
 * The role `user` in the branch's catalog, read as the superuser whoever holds the backend's session. While
 * another session runs a statement, a role read before (and not changed since: `state.roles` is emptied by a
 * statement that may change one) is taken as read: a client connects without waiting, as with PostgreSQL.
 */
export async function lookUpRole(
  compute: SharedBackend,
  state: BackendState,
  user: string,
): Promise<LoginRole | undefined> {
  const known = state.roles.get(user);
  if (known !== undefined && state.owned) return known;
  const role = await compute.exclusive(async (exec) => {
    const reply = await exec(backendMessage("Q", cStrings(loginRoleSql(user))), { catalog: true });
    return loginRoleOf(user, reply);
  });
  if (role === undefined) state.roles.delete(user);
  else if (state.roles.size < MAX_KNOWN_ROLES) state.roles.set(user, role);
  return role;
}

/** One row for role `name` (none when it does not exist): oid, super, login, password, expired. */
export function loginRoleSql(name: string): string {
  return "SELECT oid, rolsuper, rolcanlogin, rolpassword, coalesce(rolvaliduntil < now(), false) " +
    `FROM pg_catalog.pg_authid WHERE rolname = '${name.replaceAll("'", "''")}';`;
}

/** The role in the reply to {@linkcode loginRoleSql}; undefined when there is no such role. */
export function loginRoleOf(name: string, reply: Uint8Array): LoginRole | undefined {
  const [row] = textRows(reply);
  if (row === undefined) return undefined;
  const [oid, superuser, can_login, password, expired] = row;
  return {
    oid: Number(oid),
    name,
    superuser: superuser === "t",
    can_login: can_login === "t",
    verifier: password === undefined ? undefined : parseScramVerifier(password),
    expired: expired === "t",
  };
}

/** Refuses a login as `name` when the role is missing or may not log in, with PostgreSQL's messages. */
export function checkLogin(name: string, role: LoginRole | undefined): LoginRole {
  if (role === undefined) throw new LoginRefusedError(`role "${name}" does not exist`);
  if (!role.can_login) throw new LoginRefusedError(`role "${name}" is not permitted to log in`);
  return role;
}

/**
 * A verifier as PostgreSQL stores it (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64);
 * undefined for anything else.
 */
export function parseScramVerifier(text: string): ScramSecret | undefined {
  const match = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text);
  if (match === null) return undefined;
  const iterations = Number(match[1]);
  if (iterations < 1) return undefined;
  const [salt, stored_key, server_key] = [match[2], match[3], match[4]].map(fromBase64);
  if (stored_key.length !== 32 || server_key.length !== 32) return undefined;
  return { iterations, salt, stored_key, server_key };
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/**
 * Authenticates a login as `user` (role `role`, undefined when there is none): with a server password, by
 * SCRAM-SHA-256 against the role's own verifier or else the server's; a role that does not exist goes through
 * the same exchange and fails it, so a client cannot tell which roles exist without a password. Then the role
 * must exist and may log in. Throws {@linkcode AuthenticationFailedError} or {@linkcode LoginRefusedError}.
 */
export async function logIn(
  channel: ScramChannel,
  user: string,
  role: LoginRole | undefined,
  server_password: Promise<ScramSecret> | undefined,
): Promise<LoginRole> {
  if (server_password !== undefined) {
    const secret = role?.verifier ?? (role !== undefined ? await server_password : await unknownRoleSecret());
    await authenticate(channel, secret, user);
    if (role === undefined || role.expired) throw new AuthenticationFailedError(user);
  }
  return checkLogin(user, role);
}

let unknown_role_secret: Promise<ScramSecret> | undefined;

/** A verifier no password matches: a random one. */
function unknownRoleSecret(): Promise<ScramSecret> {
  unknown_role_secret ??= scramSecret(crypto.randomUUID());
  return unknown_role_secret;
}
