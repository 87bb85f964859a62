/**
 * Command-line flags: `--name value` pairs checked against what a command knows. A mistake is a
 * {@linkcode UsageError}: printed, exit code 2.
 *
 * @module
 */

export { parseDuration } from "../duration.ts";

/** A command-line mistake: the message names the flag or value and where to look. */
export class UsageError extends Error {
  /** @param message what was wrong */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Checks a flag's value; boolean flags take none. */
export type FlagSpec = Record<string, ((value: string) => boolean) | "boolean">;

/** Parses `args` for `command`; `positional` names how many bare words it takes. */
export function parseFlags(
  command: string,
  args: string[],
  spec: FlagSpec,
  positional = 0,
): { flags: Record<string, string | true>; words: string[] } {
  const flags: Record<string, string | true> = {};
  const words: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i];
    if (!name.startsWith("--")) {
      if (words.length >= positional) throw new UsageError(`tarn ${command}: unexpected "${name}"; see --help`);
      words.push(name);
      continue;
    }
    const check = spec[name];
    if (check === undefined) throw new UsageError(`tarn ${command}: unknown flag ${name}; see tarn ${command} --help`);
    if (check === "boolean") {
      flags[name] = true;
      continue;
    }
    const value = args[++i];
    if (value === undefined || !check(value)) {
      throw new UsageError(`tarn ${command}: ${name} needs a valid value, got ${value ?? "nothing"}`);
    }
    flags[name] = value;
  }
  return { flags, words };
}

/** The value of a flag that takes one, or `fallback`. */
export function flagValue(flags: Record<string, string | true>, name: string, fallback: string): string {
  const value = flags[name];
  return typeof value === "string" ? value : fallback;
}

/** `HOST:PORT` or `[IPv6]:PORT`; undefined when malformed. */
export function parseListen(text: string): { hostname: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s]+)):(\d{1,5})$/.exec(text);
  if (match === null || Number(match[3]) > 65535) return undefined;
  return { hostname: match[1] ?? match[2], port: Number(match[3]) };
}

/** Resolves at the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      resolve();
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  });
}
