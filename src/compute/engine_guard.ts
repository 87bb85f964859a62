/**
 * Guards a PGlite instance so that no statement can stop the process: every call into Postgres goes through one
 * entry (`execProtocolRawSync`), which
 *
 * - feeds Postgres its input as a stream: when Postgres reads from inside a command (COPY FROM STDIN: the only
 *   command that reads the client) and the input is used up, the call asks {@linkcode CopyInput} for the client's
 *   next bytes, exactly as a backend blocks on its socket; without a client to ask, it feeds a CopyFail, so COPY
 *   ends with an error instead of Postgres taking the end of input for a lost connection and exiting;
 * - turns any exception out of Postgres (an `exit`, an abort, a WASM trap, out of memory, an error thrown by the
 *   file system under it) into an {@linkcode EngineCrashedError} and marks the instance dead: its memory may be
 *   inconsistent, so nothing runs on it again; the compute restarts Postgres from storage instead.
 *
 * How a read "from inside a command" is told from the read of the next command: PGlite calls its read callback
 * both when Postgres waits for the next message (it answers "nothing more" there and the call returns) and when
 * COPY wants data (where "nothing more" means the client is gone: FATAL, exit). The two differ in how deep Postgres's
 * C stack is: a command read happens right under `PostgresMainLoopOnce` (544 bytes deep in PGlite 0.5.16), a COPY
 * read inside the executor (1,248-1,536 bytes). The shallowest read seen is the command read; a deeper one with
 * the input used up is a read inside a command.
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { BOOTSTRAP_SUPERUSER_ID, type CallIdentity, type IdentityCells, runAs } from "./engine_identity.ts";
import { engineIdentityCells } from "./engine.ts";
import { BackendPid } from "./backend_pid.ts";

/** Postgres failed inside the engine (exit, abort, trap, out of memory): the statement was lost, not committed. */
export class EngineCrashedError extends Error {
  /** @param cause what Postgres threw */
  constructor(cause: unknown) {
    // A compute that lost its quorum (a newer one took over) does not come back by restarting.
    const advice = (cause as Error)?.name === "QuorumLostError"
      ? ""
      : "; it restarts from storage with every committed transaction: reconnect or run the statement again";
    super(`the PostgreSQL engine failed while running this statement (${describe(cause)})${advice}`, { cause });
    this.name = "EngineCrashedError";
  }
}

/**
 * Gives the client's next bytes to a COPY FROM STDIN that has used up its input, and takes the replies Postgres
 * produced meanwhile (CopyInResponse first), which the client must see before it sends more. Synchronous: it
 * blocks the engine's thread until the bytes arrive. Returns at most {@linkcode COPY_INPUT_MAX_BYTES}.
 */
export type CopyInput = (output: Uint8Array) => Uint8Array;

/** Most bytes one {@linkcode CopyInput} call returns. */
export const COPY_INPUT_MAX_BYTES = 1024 * 1024;

/** What PGlite exposes of its Emscripten module, as far as the guard needs it. */
type EngineModule = {
  _PostgresMainLoopOnce: () => void;
  _PostgresMainLongJmp: () => void;
  _PostgresSendReadyForQueryIfNecessary: () => void;
  _pgl_pq_flush: () => void;
  stackSave: () => number;
  _abort: () => void;
  _GetSessionUserId: () => number;
  _GetUserId: () => number;
  HEAPU8: Uint8Array;
  addFunction: (fn: (fcinfo: number) => number, signature: string) => number;
};

/** What PGlite's loop throws for an ERROR (Postgres's longjmp), which it handles itself; anything else is fatal. */
const POSTGRES_MAIN_LONGJMP = 100;

const encoder = new TextEncoder();

/** A CopyFail message (the frontend's way to abort a COPY FROM STDIN) with `reason`. */
export function copyFail(reason: string): Uint8Array {
  const text = encoder.encode(reason);
  const message = new Uint8Array(6 + text.length);
  message[0] = 0x66; // 'f'
  new DataView(message.buffer).setInt32(1, 5 + text.length);
  message.set(text, 5);
  return message;
}

const NO_CLIENT = copyFail(
  "COPY FROM STDIN needs a client that streams the data: use a PostgreSQL client through the server " +
    "(tarn start), or COPY FROM a file",
);
/**
 * The same for a COPY run by the extended protocol: Postgres ignores a Sync during COPY, and after an error it
 * skips messages until the next Sync, so the Sync that ended the client's batch must follow the CopyFail.
 */
const NO_CLIENT_EXTENDED = new Uint8Array([...NO_CLIENT, 0x53, 0, 0, 0, 4]);

/** This engine cannot confine a call to a role: only superusers may log in to it. */
export class IdentityUnavailableError extends Error {
  constructor() {
    super(
      "this build of the PostgreSQL engine does not let Tarn confine a session to its role (the backend's " +
        "authenticated user could not be located): connect as a superuser role",
    );
    this.name = "IdentityUnavailableError";
  }
}

/** A PGlite instance behind the guard. */
export class EngineGuard {
  readonly pg: PGlite;
  readonly #mod: EngineModule;
  /** Why the instance is dead; undefined while it is alive. */
  #crashed: unknown;
  /** Stack pointer at the entry of the running `PostgresMainLoopOnce`; undefined outside it. */
  #loop_sp: number | undefined;
  /** Depth of a command read: the shallowest read seen. */
  #command_read_depth = Number.MAX_SAFE_INTEGER;
  #input = new StreamInput();
  #copy_input: CopyInput | undefined;
  #output: Uint8Array[] = [];
  #fault_armed = false;
  readonly #backend_pid: BackendPid | undefined;

  /**
   * Installs the guard on `pg` (once, right after it started); with its WASM `exports`, calls can answer
   * `pg_backend_pid()` for a session.
   */
  constructor(pg: PGlite, exports?: WebAssembly.Exports) {
    this.pg = pg;
    const mod = (pg as unknown as { mod: EngineModule }).mod;
    this.#mod = mod;
    this.#backend_pid = exports && new BackendPid(mod, exports);
    const loop_once = mod._PostgresMainLoopOnce.bind(mod);
    mod._PostgresMainLoopOnce = () => {
      this.#loop_sp = mod.stackSave();
      try {
        loop_once();
      } catch (error) {
        if ((error as { status?: number })?.status === POSTGRES_MAIN_LONGJMP) throw error;
        // PGlite's loop swallows anything but its longjmp: pose as one, so that it calls the (guarded) handler.
        this.#crashed = error;
        throw { status: POSTGRES_MAIN_LONGJMP };
      } finally {
        this.#loop_sp = undefined;
      }
    };
    this.#guardAfterCrash(mod, "_PostgresMainLongJmp", () => {
      throw new EngineCrashedError(this.#crashed);
    });
    this.#guardAfterCrash(mod, "_PostgresSendReadyForQueryIfNecessary", () => {});
    this.#guardAfterCrash(mod, "_pgl_pq_flush", () => {});
    const run = pg.execProtocolRawSync.bind(pg);
    pg.execProtocolRawSync = (message: Uint8Array) => {
      if (this.#crashed !== undefined) throw new EngineCrashedError(this.#crashed);
      this.#input.reset(message, (used_up) => this.#more(used_up));
      try {
        const output = run(this.#input as unknown as Uint8Array);
        if (this.#crashed !== undefined) throw new EngineCrashedError(this.#crashed);
        return output;
      } catch (error) {
        if (error instanceof EngineCrashedError) throw error;
        this.#crashed = error;
        throw new EngineCrashedError(error);
      } finally {
        this.#input.reset(new Uint8Array(0), () => undefined);
      }
    };
  }

  /** Once Postgres has died, `name` no longer reaches the dead module: `instead` runs. */
  #guardAfterCrash(
    mod: EngineModule,
    name: "_PostgresMainLongJmp" | "_PostgresSendReadyForQueryIfNecessary" | "_pgl_pq_flush",
    instead: () => void,
  ): void {
    const original = mod[name].bind(mod);
    mod[name] = () => this.#crashed === undefined ? original() : instead();
  }

  /**
   * Fault injection for tests: the next read Postgres makes inside a statement aborts the WASM module there (what
   * `abort()` in Postgres's C code does), as a trap in the middle of a statement would.
   */
  armFault(): void {
    this.#fault_armed = true;
  }

  /**
   * Declares this instance unusable from outside (its storage went away): nothing more runs on it, and the
   * compute restarts Postgres before the next session, as after a crash.
   */
  fail(cause: unknown): void {
    this.#crashed ??= cause;
  }

  /** Why Postgres died, if it did: then nothing may run on this instance. */
  get crashed(): unknown {
    return this.#crashed;
  }

  /**
   * Passes raw protocol messages to Postgres and resolves with its replies once the WAL they wrote is durable. A
   * COPY FROM STDIN among them takes its data from `copy_input`; without one, it fails with a clear error.
   */
  async execRaw(message: Uint8Array, copy_input?: CopyInput, identity?: CallIdentity): Promise<Uint8Array> {
    if (identity?.backend_pid !== undefined && this.#backend_pid !== undefined) {
      const { backend_pid, ...rest } = identity;
      return await this.#backend_pid.run(backend_pid, () => this.execRaw(message, copy_input, rest));
    }
    if (identity?.catalog || identity?.login_role_id !== undefined) {
      return await runAs(
        () => this.#mod.HEAPU8.buffer,
        await this.#cells(),
        identity,
        () => this.execRaw(message, copy_input),
      );
    }
    this.#output = [];
    this.#copy_input = copy_input;
    try {
      await this.pg.execProtocolRawStream(message, {
        syncToFs: true,
        onRawData: (chunk: Uint8Array) => this.#output.push(chunk.slice()),
      });
      return concat(this.#output.splice(0));
    } finally {
      this.#copy_input = undefined;
      this.#output = [];
    }
  }

  /** Runs `fn` (a call into Postgres) with the bootstrap superuser as the current user, whoever the session is. */
  async asSuperuser<T>(fn: () => Promise<T>): Promise<T> {
    const cells = await engineIdentityCells();
    if (cells === undefined) return await fn();
    return await runAs(() => this.#mod.HEAPU8.buffer, await this.#cells(), { catalog: true }, fn);
  }

  /**
   * The identity cells, checked against this engine at rest: the authenticated user is the superuser, and the
   * session and current user ids are what Postgres's own functions answer.
   */
  async #cells(): Promise<IdentityCells> {
    const cells = await engineIdentityCells();
    const view = new Int32Array(this.#mod.HEAPU8.buffer);
    if (
      cells === undefined || view[cells.authenticated_user_id >> 2] !== BOOTSTRAP_SUPERUSER_ID ||
      view[cells.session_user_id >> 2] !== this.#mod._GetSessionUserId() ||
      view[cells.current_user_id >> 2] !== this.#mod._GetUserId()
    ) throw new IdentityUnavailableError();
    return cells;
  }

  /**
   * PGlite's read callback runs (`used_up`: everything given has been read): more input for a read inside a
   * command with its input used up, else nothing.
   */
  #more(used_up: boolean): Uint8Array | undefined {
    if (this.#loop_sp === undefined) return undefined;
    if (this.#fault_armed) {
      this.#fault_armed = false;
      this.#mod._abort();
    }
    const depth = this.#loop_sp - this.#mod.stackSave();
    if (depth <= this.#command_read_depth) {
      this.#command_read_depth = depth;
      return undefined;
    }
    if (!used_up) return undefined;
    if (this.#copy_input === undefined) return this.#input.first_type === 0x51 ? NO_CLIENT : NO_CLIENT_EXTENDED;
    const more = this.#copy_input(concat(this.#output.splice(0)));
    if (more.length === 0 || more.length > COPY_INPUT_MAX_BYTES) {
      throw new Error(`engine guard: COPY input of ${more.length} bytes (1..${COPY_INPUT_MAX_BYTES} expected)`);
    }
    return more;
  }
}

/**
 * The input PGlite reads from, in place of a byte array: it reads `length` and `subarray(start, end)` with offsets
 * that only grow, and `[0]`. When everything given has been read, `length` asks for more.
 */
class StreamInput {
  #bytes: Uint8Array = new Uint8Array(0);
  /** Stream offset of `#bytes[0]`. */
  #base = 0;
  /** Stream offset up to which PGlite has read. */
  #taken = 0;
  #more: (used_up: boolean) => Uint8Array | undefined = () => undefined;
  #first_type = 0;

  reset(bytes: Uint8Array, more: (used_up: boolean) => Uint8Array | undefined): void {
    this.#bytes = bytes;
    this.#first_type = bytes[0];
    this.#base = 0;
    this.#taken = 0;
    this.#more = more;
  }

  /** The type of the first message of the call's input. */
  get first_type(): number {
    return this.#first_type;
  }

  get 0(): number {
    return this.#bytes[0];
  }

  get length(): number {
    const more = this.#more(this.#taken === this.#base + this.#bytes.length);
    if (more !== undefined) {
      // What was read is never read again: keep only what is new.
      this.#base = this.#taken;
      this.#bytes = more;
    }
    return this.#base + this.#bytes.length;
  }

  subarray(start: number, end: number): Uint8Array {
    if (start < this.#base || end > this.#base + this.#bytes.length || start > end) {
      throw new Error(
        `engine guard: read of ${start}..${end} outside ${this.#base}..${this.#base + this.#bytes.length}`,
      );
    }
    this.#taken = end;
    return this.#bytes.subarray(start - this.#base, end - this.#base);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function describe(cause: unknown): string {
  const error = cause as { name?: string; message?: string; status?: number } | undefined;
  if (error?.name === "ExitStatus") return `PostgreSQL exited with status ${error.status}`;
  const text = `${error?.name ?? "Error"}: ${error?.message ?? String(cause)}`;
  return text.length > 300 ? `${text.slice(0, 300)}...` : text;
}
