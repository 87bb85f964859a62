/**
 * A tenant's settings, `config.json` in its directory (docs/data_directory.md): today its history window (`pitr`),
 * how far back branches and reads at a past point may go. Uploaded to the lake with `tarn.json`.
 *
 * @module
 */
import { readCheckedJson, writeCheckedJson } from "../checked_json.ts";
import { parseDuration } from "../duration.ts";
import { PageserverError } from "./pageserver_error.ts";

/** The version of `config.json` this code writes and reads. */
export const TENANT_CONFIG_FORMAT_VERSION = 1;
/** The default history window: 7 days. */
export const DEFAULT_PITR_MS = 7 * 86_400_000;

/** A tenant's settings. */
export type TenantConfig = { format_version: number; pitr_ms: number };

/** The tenant's settings; the defaults when it has no `config.json`. */
export async function readTenantConfig(dir: string): Promise<TenantConfig> {
  const stored = await readCheckedJson<TenantConfig>(`${dir}/config.json`, "config", TENANT_CONFIG_FORMAT_VERSION);
  return stored ?? { format_version: TENANT_CONFIG_FORMAT_VERSION, pitr_ms: DEFAULT_PITR_MS };
}

/** Writes `config.json` atomically and durably. */
export async function writeTenantConfig(dir: string, config: TenantConfig): Promise<void> {
  await writeCheckedJson(`${dir}/config.json`, "config", config);
}

/** The settings a request body (`{"pitr": "7d"}`) asks for, on top of `current`; a bad one is a `bad_request`. */
export function parseConfigChange(current: TenantConfig, body: unknown): TenantConfig {
  const change = (body ?? {}) as Record<string, unknown>;
  const unknown = Object.keys(change).filter((k) => k !== "pitr");
  if (unknown.length > 0) {
    throw new PageserverError("bad_request", `unknown setting ${unknown.join(", ")}: the settings are "pitr"`);
  }
  if (change.pitr === undefined) return current;
  const pitr_ms = typeof change.pitr === "string" ? parseDuration(change.pitr) : undefined;
  if (pitr_ms === undefined) {
    throw new PageserverError("bad_request", `"pitr" must be a duration such as "7d", "12h", "30m" or "10s"`);
  }
  return { ...current, pitr_ms };
}
