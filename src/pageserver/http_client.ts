/**
 * The client side of the pageserver's HTTP management API (`docs/pageserver_protocol.md`): branch administration
 * of a tenant and the pageserver's status, as `tarn branch --pageserver`, `tarn status --pageserver` and a compute's
 * `tarn branch` requests use them.
 *
 * @module
 */
import type { AdminRequest, BranchRow } from "../branch_admin.ts";

/** The pageserver could not be reached over HTTP, or did not answer as its API does. */
export class PageserverUnreachableError extends Error {
  /**
   * @param address the pageserver's HOST:PORT
   * @param cause what failed
   */
  constructor(address: string, cause: unknown) {
    super(`the pageserver at ${address} did not answer: ${cause}; is \`tarn pageserver\` running there?`, { cause });
    this.name = "PageserverUnreachableError";
  }
}

/** The base URL of the pageserver at `address` (HOST:PORT, an IPv6 host in brackets or not). */
function baseUrl(address: string): string {
  const colon = address.lastIndexOf(":");
  const host = address.slice(0, colon).replace(/^\[|\]$/g, "");
  return `http://${host.includes(":") ? `[${host}]` : host}:${address.slice(colon + 1)}`;
}

async function request(address: string, path: string, init?: RequestInit): Promise<{ status: number; body: unknown }> {
  try {
    const response = await fetch(baseUrl(address) + path, init);
    return { status: response.status, body: await response.json() };
  } catch (error) {
    throw new PageserverUnreachableError(address, error);
  }
}

/** Runs a branch administration request on `tenant` at the pageserver; its errors keep their names. */
export async function pageserverAdmin(address: string, tenant: string, admin: AdminRequest): Promise<BranchRow[]> {
  const path = `/v1/tenants/${encodeURIComponent(tenant)}/admin`;
  const { status, body } = await request(address, path, { method: "POST", body: JSON.stringify(admin) });
  const answer = body as { ok?: boolean; value?: BranchRow[]; error?: { name: string; message: string } | string };
  if (answer.ok === true) return answer.value ?? [];
  const error = new Error(
    typeof answer.error === "string" ? answer.error : answer.error?.message ?? `HTTP status ${status}`,
  );
  error.name = typeof answer.error === "object" ? answer.error.name : "PageserverError";
  throw error;
}

/** Takes (or renews) a lease on `lsn` of `branch`: GC keeps that point readable for `ttl` (`"60s"`). */
export async function pageserverLease(
  address: string,
  tenant: string,
  branch: string,
  lsn: string,
  ttl: string,
): Promise<void> {
  const path = `/v1/tenants/${encodeURIComponent(tenant)}/branches/${encodeURIComponent(branch)}/lease`;
  const { status, body } = await request(address, path, { method: "POST", body: JSON.stringify({ lsn, ttl }) });
  if (status !== 200) {
    const error = new Error(`lease on ${branch} at ${lsn}: ${(body as { error?: string })?.error ?? status}`);
    error.name = "PageserverError";
    throw error;
  }
}

/** The pageserver's `GET /status`. */
export async function pageserverStatus(address: string): Promise<unknown> {
  return (await request(address, "/status")).body;
}
