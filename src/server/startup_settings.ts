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
