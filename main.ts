/**
 * The `tarn` command line: one binary, its role picked by the first argument. A bad command, flag or value prints
 * what was wrong and exits with code 2.
 *
 * @module
 */
import denoConfig from "./deno.json" with { type: "json" };
import { branch, status } from "./src/cli/branch.ts";
import { compute } from "./src/cli/compute.ts";
import { demo } from "./src/cli/demo.ts";
import { UsageError } from "./src/cli/flags.ts";
import { pageserver } from "./src/cli/pageserver.ts";
import { safekeeper } from "./src/cli/safekeeper.ts";
import { start } from "./src/cli/start.ts";

const HELP = `tarn ${denoConfig.version}: PostgreSQL with compute separated from storage

Usage:
  tarn start [--data DIR] [--port N]   serve PostgreSQL on 127.0.0.1:55432, data in ./tarn-data
  tarn branch create|list|delete|reset|protect ...   manage branches of a data directory or a tenant
  tarn status [--data DIR | --pageserver HOST:PORT | --safekeepers LIST]   branches, disk use, terms and LSNs
  tarn safekeeper --data DIR --listen HOST:PORT --id N   keep WAL durable as one of a quorum
  tarn pageserver --data DIR --listen HOST:PORT          serve pages, branches and history to computes
  tarn compute --pageserver HOST:PORT --safekeepers LIST --tenant NAME [--port N]   a stateless compute
  tarn demo [--data DIR]               a short embedded session
  tarn --help | --version

Every command takes --help. The three roles of a separated deployment: safekeeper, pageserver, compute.`;

/** Errors a user can meet (typed in src/errors.ts): their message is the whole story, no stack trace. */
const USER_ERRORS = new Set([
  "BranchExistsError",
  "BranchNotFoundError",
  "BranchRuleError",
  "ClosedError",
  "ComputeStartError",
  "ConfigurationError",
  "CorruptDataError",
  "CorruptLayerError",
  "CorruptWalError",
  "ComputeFencedError",
  "DatabaseLockedError",
  "EngineFailedError",
  "LsnFormatError",
  "LsnOutOfRangeError",
  "PageserverError",
  "PageserverUnavailableError",
  "PageserverUnreachableError",
  "QuorumLostError",
  "QuorumUnavailableError",
  "SafekeeperAddressError",
]);

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  start,
  branch,
  status,
  demo,
  safekeeper,
  pageserver,
  compute,
};

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || command === "--help" || command === "help") console.log(HELP);
    else if (command === "--version") console.log(`tarn ${denoConfig.version}`);
    else if (COMMANDS[command] !== undefined) await COMMANDS[command](rest);
    else throw new UsageError(`tarn: unknown command "${command}"; see tarn --help`);
    return 0;
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(error.message);
      return 2;
    }
    if (error instanceof Error && USER_ERRORS.has(error.name)) {
      console.error(`tarn: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
