/**
 * Who the Postgres backend is, as the call running in it needs. PGlite's single backend logs in once, as the
 * bootstrap superuser, and a server's sessions take their roles with `SET SESSION AUTHORIZATION`. PostgreSQL lets
 * a session change its authorization only when the role it *authenticated* as is a superuser, so a non-superuser
 * session would get out of its role with `RESET SESSION AUTHORIZATION`. Around a call for such a session, the
 * backend's authenticated user (`AuthenticatedUserId` in miscinit.c) is set to the session's login role, exactly
 * what a PostgreSQL backend of that login holds; between calls it is the superuser again, for the server's own
 * hand-over statements and the checkpointer.
 *
 * PGlite exports neither that variable nor a function that sets it, so its address is found in the WASM binary:
 * `GetSessionUserId` (exported) names `SessionUserId`; `InitializeSessionUserIdStandalone` stores the bootstrap
 * superuser's id into `SessionUserId` and then into `AuthenticatedUserId`, a byte pattern found exactly once. Every
 * start checks both hold the superuser's id; where any step fails, the engine reports no identity cells and the
 * server refuses non-superuser logins instead of running them unconfined.
 *
 * @module
 */
import { codeSection, encodeSLeb, exportedFunctionBodies, readSLeb } from "./wasm_binary.ts";

/** The bootstrap superuser's role id (`BOOTSTRAP_SUPERUSERID`): the role PGlite's backend logs in as. */
export const BOOTSTRAP_SUPERUSER_ID = 10;

/** Addresses in the WASM memory of miscinit.c's user ids (each an `Oid`, 4 bytes) and security context. */
export type IdentityCells = {
  authenticated_user_id: number;
  session_user_id: number;
  current_user_id: number;
  security_context: number;
};

/**
 * Who a call into Postgres runs as: `login_role_id`, the role its session logged in as (it cannot take another
 * role's identity during the call); or `catalog`, the bootstrap superuser as the current user, for the server's
 * own catalog lookups whatever role the backend's session holds. `backend_pid`: what `pg_backend_pid()` answers
 * during the call (the session's process id in BackendKeyData; `backend_pid.ts`).
 */
export type CallIdentity = { login_role_id?: number; catalog?: true; backend_pid?: number };

/**
 * A {@linkcode CallIdentity} as two integers for the shared-memory lane to the engine Worker: the role (0: as the
 * backend is, -1: catalog, else the login role) and the backend pid (0: none).
 */
export function identityCode(identity: CallIdentity | undefined): [number, number] {
  const role = identity?.catalog ? -1 : identity?.login_role_id ?? 0;
  return [role, identity?.backend_pid ?? 0];
}

/** The {@linkcode CallIdentity} of an {@linkcode identityCode}. */
export function identityOfCode([role, pid]: [number, number]): CallIdentity | undefined {
  if (role === 0 && pid === 0) return undefined;
  return {
    ...role === -1 ? { catalog: true } as const : role > 0 ? { login_role_id: role } : {},
    ...pid > 0 ? { backend_pid: pid } : {},
  };
}

const I32_CONST = 0x41;
const I32_LOAD = [0x28, 0x02, 0x00];
const I32_STORE = [0x36, 0x02, 0x00];
const LOCAL_GET = 0x20;

/** The identity cells of the PGlite binary `wasm`; undefined when they cannot be found with certainty. */
export function findIdentityCells(wasm: Uint8Array): IdentityCells | undefined {
  const bodies = exportedFunctionBodies(wasm, ["GetSessionUserId", "GetUserIdAndSecContext"]);
  const session_user_id = loadAddress(bodies.get("GetSessionUserId"), 0)?.value;
  // GetUserIdAndSecContext(*userid, *sec_context): local.get 0, load CurrentUserId, store; local.get 1, load ...
  const context = bodies.get("GetUserIdAndSecContext");
  const current = context?.[0] === LOCAL_GET && context[1] === 0 ? loadAddress(context, 2) : undefined;
  const second = current === undefined ? -1 : current.end + I32_STORE.length;
  const stored = current !== undefined && I32_STORE.every((byte, i) => context![current.end + i] === byte);
  const security_context = stored && context![second] === LOCAL_GET && context![second + 1] === 1
    ? loadAddress(context, second + 2)?.value
    : undefined;
  const current_user_id = current?.value;
  if (session_user_id === undefined || current_user_id === undefined || security_context === undefined) return;
  const authenticated_user_id = storedAfter(codeSection(wasm), session_user_id);
  if (authenticated_user_id === undefined) return;
  const cells = { authenticated_user_id, session_user_id, current_user_id, security_context };
  return new Set(Object.values(cells)).size === 4 ? cells : undefined;
}

/** The address A of `i32.const A; i32.load` at `at` in `body`, and the offset after the load. */
function loadAddress(body: Uint8Array | undefined, at: number): { value: number; end: number } | undefined {
  if (body === undefined || body[at] !== I32_CONST) return undefined;
  const { value, end } = readSLeb(body, at + 1);
  return I32_LOAD.every((byte, i) => body[end + i] === byte) ? { value, end: end + I32_LOAD.length } : undefined;
}

/**
 * The one address B such that the code stores the superuser's id into `address` and right after into B
 * (`i32.const address; i32.const 10; i32.store; i32.const B; i32.const 10; i32.store`); undefined unless exactly
 * one such B exists.
 */
function storedAfter(code: Uint8Array, address: number): number | undefined {
  const superuser = encodeSLeb(BOOTSTRAP_SUPERUSER_ID);
  const store = (at: number) => [...superuser, ...I32_STORE].every((byte, i) => code[at + i] === byte);
  const head = [I32_CONST, ...encodeSLeb(address), I32_CONST];
  const found = new Set<number>();
  // Scan for the address's first byte: rarer than the opcode, so this takes a few milliseconds.
  for (let at = code.indexOf(head[1]) - 1; at >= 0; at = code.indexOf(head[1], at + 2) - 1) {
    if (!head.every((byte, i) => code[at + i] === byte) || !store(at + head.length)) continue;
    const next = at + head.length + superuser.length + I32_STORE.length;
    if (code[next] !== I32_CONST) continue;
    const { value, end } = readSLeb(code, next + 1);
    if (code[end] === I32_CONST && store(end + 1)) found.add(value);
  }
  return found.size === 1 ? [...found][0] : undefined;
}

/** The identity cells, checked against a started engine's memory: each user id holds the bootstrap superuser. */
export function checkedCells(cells: IdentityCells | undefined, memory: ArrayBufferLike): IdentityCells | undefined {
  if (cells === undefined) return undefined;
  const view = new Int32Array(memory);
  const ids = [cells.authenticated_user_id, cells.session_user_id, cells.current_user_id];
  const aligned = ids.every((address) => address % 4 === 0 && address < memory.byteLength);
  return aligned && ids.every((address) => view[address >> 2] === BOOTSTRAP_SUPERUSER_ID) ? cells : undefined;
}

/** Runs `fn` (a call into Postgres) as `identity`, and puts the backend's identity back after. */
export async function runAs<T>(
  memory: () => ArrayBufferLike,
  cells: IdentityCells,
  identity: CallIdentity,
  fn: () => Promise<T>,
): Promise<T> {
  const slots = identity.catalog
    ? [[cells.current_user_id, BOOTSTRAP_SUPERUSER_ID], [cells.security_context, 0]]
    : identity.login_role_id !== undefined
    ? [[cells.authenticated_user_id, identity.login_role_id]]
    : [];
  const view = () => new Int32Array(memory());
  const saved = slots.map(([address]) => view()[address >> 2]);
  for (const [address, value] of slots) view()[address >> 2] = value;
  try {
    return await fn();
  } finally {
    slots.forEach(([address], i) => view()[address >> 2] = saved[i]);
  }
}
