/**
 * Where `tarn branch` and `tarn status` run their requests: on the data directory itself, or, when a running
 * `tarn start` holds it, on that server (its address is in `server.json` in the directory; `POST /admin` on the
 * PostgreSQL port, loopback only).
 *
 * @module
 */
import { readCheckedJson, writeCheckedJson } from "../checked_json.ts";
import { type AdminRequest, type BranchRow, runAdmin } from "../branch_admin.ts";
import { DatabaseLockedError } from "../errors.ts";
import { Tarn } from "../tarn.ts";
import { UsageError } from "./flags.ts";

const SERVER_FILE = "server.json";
const SERVER_FORMAT_VERSION = 1;
const WILDCARDS = new Set(["0.0.0.0", "::", ""]);
const ADMIN_TIMEOUT_MS = 60_000;

/** Where a running server of a directory listens, as `server.json` records it. */
type ServerFile = { format_version: number; host: string; port: number; pid: number };

/** Records where this process serves the directory, for `tarn branch` run while it does. */
export async function writeServerFile(dir: string, host: string, port: number): Promise<void> {
  const value: ServerFile = { format_version: SERVER_FORMAT_VERSION, host, port, pid: Deno.pid };
  await writeCheckedJson(`${dir}/${SERVER_FILE}`, "server", value);
}

/** Removes the record at a clean stop. */
export async function removeServerFile(dir: string): Promise<void> {
  await Deno.remove(`${dir}/${SERVER_FILE}`).catch(() => {});
}

/** An error a server reported, with its type name kept (so the CLI prints it as the local one would). */
class RemoteError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

/** Runs `request` on the database in `dir`: opened here, or through the server that holds it. */
export async function runOnDirectory(dir: string, request: AdminRequest): Promise<BranchRow[]> {
  try {
    await Deno.stat(`${dir}/tarn.json`);
  } catch {
    throw new UsageError(`${dir} holds no Tarn database: give its directory with --data`);
  }
  let tarn: Tarn;
  try {
    tarn = await Tarn.open(dir);
  } catch (error) {
    if (!(error instanceof DatabaseLockedError)) throw error;
    return await runOnServer(dir, request, error);
  }
  try {
    return await runAdmin(tarn, request);
  } finally {
    await tarn.close();
  }
}

async function runOnServer(dir: string, request: AdminRequest, locked: DatabaseLockedError): Promise<BranchRow[]> {
  const server = await readCheckedJson<ServerFile>(`${dir}/${SERVER_FILE}`, "server", SERVER_FORMAT_VERSION);
  if (server === undefined) throw new UsageError(`${locked.message} (and it serves no administration)`);
  const host = WILDCARDS.has(server.host) ? "127.0.0.1" : server.host;
  let response: Response;
  try {
    response = await fetch(`http://${host.includes(":") ? `[${host}]` : host}:${server.port}/admin`, {
      method: "POST",
      body: JSON.stringify(request),
      signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS),
    });
  } catch (error) {
    throw new UsageError(
      `${locked.message}; its server (pid ${server.pid}, ${host}:${server.port}) did not answer: ` +
        `${(error as Error).message}`,
    );
  }
  const answer = await response.json() as {
    ok: boolean;
    value?: BranchRow[];
    error?: { name: string; message: string };
  };
  if (!answer.ok) throw new RemoteError(answer.error?.name ?? "Error", answer.error?.message ?? response.statusText);
  return answer.value ?? [];
}
