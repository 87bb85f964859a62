/**
 * The tenants a pageserver holds, each in `DIR/tenants/<name>/` (the same layout as an embedded data directory):
 * opened at start, created on demand (by the first compute, or the HTTP API), deleted with all their files.
 *
 * @module
 */
import type { Logger } from "../logger.ts";
import { DirLock } from "../dir_lock.ts";
import type { RemoteStorage } from "../remote_storage/mod.ts";
import { PageserverError } from "./pageserver_error.ts";
import { remoteTenants, tenantPrefix } from "./remote_index.ts";
import { Tenant } from "./tenant.ts";
import { downloadTenant } from "./tenant_download.ts";
import { TenantUploader } from "./tenant_uploader.ts";

const TENANT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** The most tenants one pageserver holds. */
export const MAX_TENANTS = 1024;

/** Every tenant of one pageserver. */
export class TenantRegistry {
  readonly #dir: string;
  readonly #lock: DirLock;
  readonly #log: Logger;
  readonly #tenants = new Map<string, Promise<Tenant>>();
  readonly #remote: RemoteStorage | undefined;
  /** This process's name in generation claims. */
  readonly #node = `${Deno.hostname()}-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;

  private constructor(dir: string, lock: DirLock, log: Logger, remote: RemoteStorage | undefined) {
    this.#dir = dir;
    this.#lock = lock;
    this.#log = log;
    this.#remote = remote;
  }

  /**
   * Locks `dir` (created if missing) and opens the tenants in it. With `remote`, first downloads every tenant the
   * lake holds that the directory does not (an empty directory gets them all back), and uploads from then on.
   */
  static async open(dir: string, log: Logger, remote?: RemoteStorage): Promise<TenantRegistry> {
    await Deno.mkdir(`${dir}/tenants`, { recursive: true });
    const lock = await DirLock.acquire(dir);
    const registry = new TenantRegistry(dir, lock, log, remote);
    try {
      for await (const entry of Deno.readDir(`${dir}/tenants`)) {
        if (!entry.isDirectory || !TENANT_NAME.test(entry.name)) continue;
        const tenant = await registry.#openTenant(entry.name, false);
        // A directory without its tenant file is a creation that a crash interrupted: it held nothing yet.
        if (tenant === undefined) await Deno.remove(`${dir}/tenants/${entry.name}`, { recursive: true });
        else registry.#tenants.set(entry.name, Promise.resolve(tenant));
      }
      for (const name of remote === undefined ? [] : await remoteTenants(remote)) {
        if (registry.#tenants.has(name) || !TENANT_NAME.test(name)) continue;
        await downloadTenant(remote!, name, `${dir}/tenants/${name}`, log);
        const tenant = await registry.#openTenant(name, false);
        if (tenant !== undefined) registry.#tenants.set(name, Promise.resolve(tenant));
      }
    } catch (error) {
      await registry.close();
      throw error;
    }
    return registry;
  }

  /** The tenant called `name`; with `create`, made when missing. */
  get(name: string, create = false): Promise<Tenant> {
    const known = this.#tenants.get(name);
    if (known !== undefined) return known;
    if (!TENANT_NAME.test(name)) {
      return Promise.reject(
        new PageserverError("bad_request", `"${name}" is not a tenant name: use letters, digits, ".", "_", "-" (1-63)`),
      );
    }
    if (!create) {
      return Promise.reject(
        new PageserverError("unknown_tenant", `no tenant "${name}" here: create it first (POST /v1/tenants)`),
      );
    }
    if (this.#tenants.size >= MAX_TENANTS) {
      return Promise.reject(new PageserverError("bad_request", `this pageserver holds ${MAX_TENANTS} tenants already`));
    }
    const opening = this.#openTenant(name, true).then((tenant) => tenant!);
    opening.catch(() => this.#tenants.delete(name));
    this.#tenants.set(name, opening);
    return opening;
  }

  #openTenant(name: string, create: boolean): Promise<Tenant | undefined> {
    const dir = `${this.#dir}/tenants/${name}`;
    const uploader = this.#remote === undefined
      ? undefined
      : new TenantUploader(this.#remote, name, dir, this.#node, this.#log);
    return Tenant.open(dir, name, this.#log, create, uploader);
  }

  /** Whether a tenant exists. */
  has(name: string): boolean {
    return this.#tenants.has(name);
  }

  /** The open tenants. */
  async list(): Promise<Tenant[]> {
    const out = [];
    for (const opening of this.#tenants.values()) out.push(await opening.catch(() => undefined));
    return out.filter((t) => t !== undefined);
  }

  /** Closes a tenant and deletes its files. */
  async delete(name: string): Promise<void> {
    const tenant = await this.get(name);
    this.#tenants.delete(name);
    await tenant.timelines.closeAll();
    await Deno.remove(`${this.#dir}/tenants/${name}`, { recursive: true });
    const prefixes = [tenantPrefix(name), `wal/${tenant.file.timeline_id}/`];
    for (const prefix of this.#remote === undefined ? [] : prefixes) {
      for (const key of await this.#remote!.list(prefix)) await this.#remote!.delete(key);
    }
    this.#log("tenant_deleted", { tenant: name });
  }

  /** Closes every tenant and releases the directory. */
  async close(): Promise<void> {
    for (const tenant of await this.list()) await tenant.close();
    this.#tenants.clear();
    await this.#lock.release();
  }
}
