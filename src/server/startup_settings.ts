/**
 * The settings a client's startup packet asks for, applied whenever its session takes the backend.
 *
 * @module
 */
import { ProtocolError } from "./wire.ts";

/** Startup parameters that are not settings. */
const NOT_SETTINGS = new Set(["user", "database", "options", "replication", "tarn.branch"]);

/**
 * The settings a startup packet asks for: its parameters other than user, database and options, plus each
 * `-c name=value` or `--name=value` of `options` (except `--branch` and `--at`, which pick what to serve).
 */
export function startupSettings(params: Record<string, string>): [string, string][] {
  const settings = Object.entries(params).filter(([name]) => !NOT_SETTINGS.has(name));
  const words = (params.options ?? "").trim().split(/\s+/).filter((word) => word !== "");
  for (let i = 0; i < words.length; i++) {
    const setting = words[i] === "-c" ? words[++i] : words[i].startsWith("--") ? words[i].slice(2) : undefined;
    const match = setting === undefined ? null : /^([A-Za-z_][\w.]*)=(.*)$/.exec(setting);
    if (match === null) throw new ProtocolError(`options: cannot read "${words[i] ?? ""}"; use -c name=value`);
    if (match[1] !== "branch" && match[1] !== "at") settings.push([match[1].replaceAll("-", "_"), match[2]]);
  }
  return settings;
}

/**
 * What runs when a session takes the backend: its identity (the login role), the settings `ALTER ROLE/DATABASE
 * ... SET` stored for it (`stored`), then its startup settings. `set_config` takes a value as the startup packet
 * does (`search_path=a,b` is two schemas, not one name).
 */
export function startupSql(params: Record<string, string>, stored: string): string[] {
  return [
    `SET SESSION AUTHORIZATION ${quoteIdent(params.user ?? "postgres")};`,
    stored,
    ...startupSettings(params).map(([name, value]) =>
      `SELECT pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false);`
    ),
  ];
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
