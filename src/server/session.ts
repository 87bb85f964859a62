/**
 * One client connection of the Postgres server. Many sessions share a compute's single backend: a session owns it
 * from the first message of a batch (a simple query, or extended-protocol messages up to Sync) until Postgres says
 * the session is idle outside a transaction. Statement and portal names are prefixed per session; a backend that
 * changes owner is reset (GUCs, cursors, LISTEN, advisory locks) when its last owner may have left such state, and
 * the new owner's startup settings are applied when they differ. A client that dies or idles in a transaction is
 * rolled back and its ownership released.
 *
 * @module
 */
import { AuthenticationFailedError } from "./scram.ts";
import { logIn, LoginRefusedError, type LoginRole, lookUpRole } from "./login_role.ts";
import type { CallIdentity } from "../compute/engine_identity.ts";
import { renameStatements } from "./statement_names.ts";
import { readCopyIn } from "./copy_in.ts";
import { ClientConnection } from "./client_connection.ts";
import type { SessionContext } from "./session_context.ts";
import type { CopyStream, SharedBackend } from "./shared_backend.ts";
import { readStartup } from "./session_startup.ts";
import { REPORTED_SQL, ReportedSettings } from "./reported_settings.ts";
import {
  asStatementTimeout,
  type SessionTimeouts,
  startupTimeouts,
  storedSettingsSql,
  TIMEOUTS_SQL,
  timeoutsOf,
} from "./session_timeouts.ts";
import { ReplicaBackend } from "./replica_backend.ts";
import { StatementReplay } from "./statement_replay.ts";
import {
  type BackendState,
  CAPTURE_SQL,
  handedOver,
  handover,
  HOLDS_TEMP_SQL,
  holdsTemp,
  keepOwnSettings,
  newBackendState,
  newGeneration,
  SESSION_STATE,
  sessionLeft,
  TEMP_OBJECTS,
} from "./backend_handover.ts";
import { startupSettings, startupSql } from "./startup_settings.ts";
import { backendSignal, signalReply } from "./backend_signals.ts";
import {
  LISTEN_STATEMENT,
  type ListenCommand,
  listenCommands,
  type Listener,
  type NotificationHub,
  NotificationInbox,
  rolledBack,
} from "./notifications.ts";
import {
  authenticationOk,
  backendKeyData,
  backendMessage,
  concatBytes,
  cStrings,
  errorResponse,
  FORWARDED_TYPES,
  type FrontendMessage,
  InvalidStartupError,
  ProtocolError,
  readyForQuery,
} from "./wire.ts";

/** One client connection. */
export class ServerSession {
  readonly id: number;
  readonly #ctx: SessionContext;
  readonly #client: ClientConnection;
  #params: Record<string, string> = {};
  #compute: SharedBackend | undefined;
  /** The secret a CancelRequest for this session must carry (BackendKeyData). */
  secret = 0;
  /** The call of this session at Postgres now, if any. */
  #in_flight: Promise<Uint8Array> | undefined;
  #release: (() => Promise<void>) | undefined;
  /** While the session owns the backend: its exec, and the resolver that hands the backend back. */
  #owned: {
    exec: (m: Uint8Array) => Promise<Uint8Array>;
    /** Runs the hand-over's statements, which may change the session's identity. */
    handover: (m: Uint8Array) => Promise<Uint8Array>;
    idle: () => Promise<void>;
    done: () => void;
    /** The engine's generation (`replica_backend.ts`; 0 where it never changes). */
    generation: number;
  } | undefined;
  /** The engine generation this session's statements were last made on. */
  #generation = 0;
  /** On a replica: the session's named statements, to make again on its next generation. */
  #replay: StatementReplay | undefined;
  #role: LoginRole | undefined;
  /** Who the session's calls run as: its login role, unless that is a superuser. */
  #identity: CallIdentity | undefined;
  #batch: Uint8Array[] = [];
  /** Extended-protocol messages went to Postgres (or wait to) without the ReadyForQuery that ends them. */
  #open_batch = false;
  /** The reported settings, as this client knows them. */
  #reported = new ReportedSettings();
  /** A statement may have changed a reported setting: check at the end of the batch. */
  #settings_may_change = false;
  /** The session's own timeouts, which the server enforces. */
  #timeouts: SessionTimeouts = { statement_ms: 0, idle_in_transaction_ms: 0 };
  #timeouts_read = false;
  #status = "I";
  #closed = false;
  /** A COPY waits for this client's data: a close must end the read, or the COPY (and the close) waits forever. */
  #copy_reading = false;
  /** What went wrong while a COPY read the client, raised once the statement has ended. */
  #copy_error: Error | undefined;
  /** This session as the branch's notification hub knows it. */
  readonly #inbox = new NotificationInbox((bytes) => this.#write(bytes));
  readonly #listener: Listener = { id: 0, deliver: (message) => this.#inbox.push(message) };
  /** LISTEN/UNLISTEN commands run in the current transaction, applied to the hub once it commits. */
  #listen_commands: ListenCommand[] = [];
  /** The session may have made temporary objects since it took the backend: check before giving it back. */
  #maybe_temp = false;
  /** The session holds temporary objects: it keeps the backend between transactions. */
  #holds_temp = false;

  /**
   * @param conn the client's socket
   * @param id the session's id (its pid in BackendKeyData)
   * @param ctx the server's routing, limits and log
   */
  constructor(conn: Deno.Conn, id: number, ctx: SessionContext) {
    this.id = id;
    this.#listener.id = id;
    this.#ctx = ctx;
    this.#client = new ClientConnection(conn, ctx.max_message_bytes);
  }

  /** Serves the connection until the client leaves or breaks the protocol; never throws. */
  async run(): Promise<void> {
    try {
      if (await this.#startupInTime()) await this.#serve();
    } catch (error) {
      if (error instanceof InvalidStartupError) {
        this.#ctx.log("invalid_startup", { session: this.id, message: error.message });
      } else if (error instanceof ProtocolError) {
        this.#ctx.log("protocol_error", { session: this.id, message: error.message });
        await this.#write(errorResponse("FATAL", "08P01", error.message)).catch(() => {});
      } else if (error instanceof LoginRefusedError) {
        this.#ctx.log("login_refused", { session: this.id, user: this.#params.user, message: error.message });
        await this.#write(errorResponse("FATAL", "28000", error.message)).catch(() => {});
      } else if (error instanceof AuthenticationFailedError) {
        this.#ctx.log("authentication_failed", { session: this.id, user: this.#params.user });
        await this.#write(errorResponse("FATAL", "28P01", error.message)).catch(() => {});
      } else if (error instanceof Error && error.name === "EngineCrashedError") {
        this.#ctx.log("engine_crashed", { session: this.id, message: error.message });
        this.#status = "I"; // the transaction died with the engine: nothing to roll back
        this.#open_batch = false;
        await this.#write(errorResponse("FATAL", "58000", error.message)).catch(() => {});
        if (this.#compute !== undefined) this.#ctx.engineFailed(this.#compute, this);
      } else if (error instanceof Error && error.name === "BranchNotFoundError") {
        await this.#write(errorResponse("FATAL", "3D000", error.message)).catch(() => {});
      } else if (!isDisconnect(error)) {
        this.#ctx.log("session_error", { session: this.id, message: String(error) });
        await this.#write(errorResponse("FATAL", "XX000", String(error))).catch(() => {});
      }
    } finally {
      await this.close();
    }
  }

  /** Rolls back what the session left open, hands the backend back and closes the socket. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#copy_reading) this.#client.close(); // the COPY then fails, and the call in flight ends
    // One call at a time on a backend: let a call in flight finish before rolling back.
    await this.#in_flight?.catch(() => {});
    if (this.#owned !== undefined) {
      try {
        if (this.#open_batch) await this.#owned.exec(backendMessage("S"));
        if (this.#status !== "I") await this.#owned.exec(backendMessage("Q", cStrings("ROLLBACK")));
      } catch (error) {
        this.#ctx.log("rollback_failed", { session: this.id, message: String(error) });
      }
      this.#owned.done();
      this.#owned = undefined;
    }
    const state = this.#compute && this.#ctx.backends.get(this.#compute);
    if (state !== undefined) {
      sessionLeft(state, this.id);
      state.notifications.leave(this.#listener);
    }
    this.#client.close();
    await this.#release?.();
  }

  /** The role the session logged in as, once authenticated. */
  get role(): LoginRole | undefined {
    return this.#role;
  }

  /** The compute this session is attached to, once started. */
  get compute(): SharedBackend | undefined {
    return this.#compute;
  }

  /** Ends the session with a FATAL error (`code`, `message`), as PostgreSQL ends a backend from outside. */
  async terminate(code: string, message: string): Promise<void> {
    if (this.#closed) return;
    this.#status = "I"; // what it had open died with the engine
    this.#open_batch = false;
    await this.#write(errorResponse("FATAL", code, message)).catch(() => {});
    await this.close();
  }

  /**
   * The startup and authentication, within PostgreSQL's `authentication_timeout` (60 s): a client that does not get
   * through by then is told so and disconnected, so that it holds no connection slot.
   */
  async #startupInTime(): Promise<boolean> {
    let timed_out = false;
    const timer = setTimeout(() => {
      timed_out = true;
      this.#ctx.log("authentication_timeout", { session: this.id, timeout_ms: this.#ctx.authentication_timeout_ms });
      this.#write(errorResponse("FATAL", "08P01", "canceling authentication due to timeout"))
        .catch(() => {}).finally(() => this.close());
    }, this.#ctx.authentication_timeout_ms);
    try {
      const started = await this.#startup();
      return started && !timed_out;
    } finally {
      clearTimeout(timer);
    }
  }

  async #startup(): Promise<boolean> {
    const params = await readStartup(this.#client, this.#ctx);
    if (params === undefined) return false;
    this.#params = params;
    const user = params.user ?? "postgres";
    const { compute, release } = await this.#ctx.attach(params);
    this.#compute = compute;
    this.#release = release;
    if (compute instanceof ReplicaBackend) this.#replay = new StatementReplay();
    const channel = {
      next: () => this.#client.next(() => this.#client.reader.takeMessage()),
      write: (b: Uint8Array) => this.#write(b),
    };
    const known = lookUpRole(compute, this.#backendState(compute), user);
    const role = await logIn(channel, user, await known, this.#ctx.password);
    this.#role = role;
    // A superuser may take any identity anyway: its calls need no confinement.
    this.#identity = role.superuser ? undefined : { login_role_id: role.oid };
    this.#reported = new ReportedSettings({
      session_authorization: user,
      is_superuser: role.superuser ? "on" : "off",
      application_name: params.application_name ?? "",
    });
    // Startup settings may change reported ones: the first batch checks.
    const settings = startupSettings(params);
    this.#settings_may_change = settings.length > 0;
    Object.assign(this.#timeouts, startupTimeouts(settings));
    this.secret = crypto.getRandomValues(new Int32Array(1))[0];
    await this.#write(concatBytes([
      authenticationOk(),
      this.#reported.startup(),
      backendKeyData(this.id, this.secret),
      readyForQuery("I"),
    ]));
    return true;
  }

  #backendState(compute: SharedBackend): BackendState {
    let state = this.#ctx.backends.get(compute);
    if (state === undefined) this.#ctx.backends.set(compute, state = newBackendState());
    return state;
  }

  async #serve(): Promise<void> {
    for (;;) {
      const message = await this.#client.next(() => this.#client.reader.takeMessage(), this.#owned !== undefined);
      if (message === undefined || message.type === "X") return;
      if (!FORWARDED_TYPES.has(message.type)) {
        throw new ProtocolError(`unknown or unexpected message type "${printable(message.type)}"`);
      }
      if (message.type === "d" || message.type === "c" || message.type === "f") {
        // Outside a batch, PostgreSQL ignores them (a COPY that failed leaves the client's data behind); inside
        // one, they follow the Execute of a COPY that has not run yet, and go with it.
        if (this.#open_batch) this.#batch.push(frame(message));
        continue;
      }
      if (message.type === "Q" && this.#status === "I" && !this.#open_batch) {
        // Signals to other sessions are the server's to deliver, without waiting for the backend they may hold.
        const signal = backendSignal(new TextDecoder().decode(message.body));
        if (signal !== undefined) {
          await this.#write(signalReply(signal, this.#ctx.signal(signal, this), "I"));
          continue;
        }
      }
      await this.#acquire();
      if (message.type === "Q" || message.type === "P") {
        const text = new TextDecoder().decode(message.body);
        if (SESSION_STATE.test(text)) {
          this.#ctx.backends.get(this.#compute!)!.dirty = true;
          this.#settings_may_change = true;
        }
        if (LISTEN_STATEMENT.test(text)) this.#listen_commands.push(...listenCommands(text));
        if (TEMP_OBJECTS.test(text)) this.#maybe_temp = true;
        if (ROLE_CHANGE.test(text)) this.#ctx.backends.get(this.#compute!)!.roles.clear();
      }
      if (message.type === "Q" || message.type === "F") await this.#run([...this.#batch.splice(0), frame(message)]);
      else {
        const renamed = renameStatements(message, `s${this.id}_`);
        this.#replay?.observe(renamed);
        this.#batch.push(frame(renamed));
        this.#open_batch = true;
        if (message.type === "S" || message.type === "H") await this.#run(this.#batch.splice(0));
      }
    }
  }

  /** Sends messages to Postgres in one call and its replies to the client; releases the backend when idle. */
  async #run(messages: Uint8Array[]): Promise<void> {
    this.#inbox.hold();
    const call = this.#owned!.exec(messages.length === 1 ? messages[0] : concatBytes(messages));
    this.#in_flight = call;
    // A client that goes away mid-statement has it cancelled, as PostgreSQL does; then it is rolled back.
    this.#client.watch(call).then((left) => {
      if (left) this.#ctx.log("client_left_during_statement", { session: this.id, cancelled: this.cancel() });
    });
    let timed_out = false;
    const timer = this.#timeouts.statement_ms <= 0 ? undefined : setTimeout(() => {
      timed_out = this.cancel();
    }, this.#timeouts.statement_ms);
    let reply: Uint8Array;
    const started_ms = performance.now();
    try {
      reply = await call;
    } finally {
      clearTimeout(timer);
      this.#in_flight = undefined;
    }
    this.#ctx.statementDone?.(performance.now() - started_ms);
    if (timed_out) reply = asStatementTimeout(reply);
    if (this.#closed) return; // closed meanwhile (server shutdown): close() took the backend back
    if (this.#copy_error !== undefined) throw this.#copy_error;
    const hub = this.#ctx.backends.get(this.#compute!)!.notifications;
    reply = hub.route(this.#listener, reply);
    // Postgres ends every answer it has finished with ReadyForQuery; without one, it waits for more of the batch
    // (a Sync that a COPY consumed, or the rest of an extended-protocol batch after a Flush).
    const n = reply.length;
    const ready = n >= 6 && reply[n - 6] === 0x5a && reply[n - 5] === 0 && reply[n - 2] === 5;
    if (ready) this.#status = String.fromCharCode(reply[n - 1]);
    if (ready && this.#settings_may_change && this.#status !== "E") reply = await this.#withReportedChanges(reply);
    this.#open_batch = !ready;
    if (ready && this.#status === "I" && this.#listen_commands.length > 0) await this.#syncListens(hub, reply);
    // Postgres sends a committed notification when it next reads a command: a Sync makes it read one now.
    if (ready && this.#status === "I" && hub.active) {
      hub.route(this.#listener, await this.#owned!.exec(backendMessage("S")));
    }
    await this.#write(reply);
    if (this.#status === "I" && !this.#open_batch) {
      await this.#inbox.release();
      if (this.#maybe_temp) {
        this.#holds_temp = holdsTemp(await this.#owned!.exec(backendMessage("Q", cStrings(HOLDS_TEMP_SQL))));
        this.#maybe_temp = this.#holds_temp;
      }
      if (this.#holds_temp) return; // temporary objects live in the backend: it stays this session's
      const state = this.#ctx.backends.get(this.#compute!)!;
      if (this.#replay !== undefined && state.dirty && state.last_owner === this.id) {
        keepOwnSettings(state, this.id, await this.#owned!.exec(backendMessage("Q", cStrings(CAPTURE_SQL))));
      }
      await this.#owned!.idle();
      this.#owned!.done();
      this.#owned = undefined;
    }
  }

  /**
   * `reply` with ParameterStatus for the reported settings that changed, before its final ReadyForQuery (where
   * PostgreSQL sends them). Once outside a transaction, a rolled-back SET has been reported too.
   */
  async #withReportedChanges(reply: Uint8Array): Promise<Uint8Array> {
    const values = await this.#owned!.exec(backendMessage("Q", cStrings(REPORTED_SQL + TIMEOUTS_SQL)));
    if (this.#status === "I") this.#settings_may_change = false;
    Object.assign(this.#timeouts, timeoutsOf(values));
    const changes = this.#reported.changes(values);
    if (changes.length === 0) return reply;
    return concatBytes([reply.subarray(0, reply.length - 6), changes, reply.subarray(reply.length - 6)]);
  }

  /** How a COPY FROM STDIN in a call of this session talks to its client. */
  readonly #copy_stream: CopyStream = { write: (bytes) => this.#write(bytes), read: () => this.#copyData() };

  /** The client's next messages for a COPY that waits (see `copy_in.ts`); a failure ends the session later. */
  async #copyData(): Promise<Uint8Array> {
    this.#copy_reading = true;
    try {
      const { bytes, error } = await readCopyIn({
        next: () => this.#client.next(() => this.#client.reader.takeMessage(), true),
        peekType: () =>
          this.#client.reader.buffered_bytes >= 5 ? String.fromCharCode(this.#client.reader.peek(1)[0]) : undefined,
        buffered: () => this.#client.reader.takeMessage(),
      });
      this.#copy_error ??= error;
      return bytes;
    } finally {
      this.#copy_reading = false;
    }
  }

  /** Takes the backend (waiting for other sessions), resetting it first if another session used it last. */
  async #acquire(): Promise<void> {
    if (this.#owned !== undefined) return;
    const compute = this.#compute!;
    const state = this.#backendState(compute);
    state.waiting++;
    await new Promise<void>((acquired, failed) => {
      compute.exclusive((exec, idle, generation) =>
        new Promise<void>((done) => {
          state.owned = true;
          const handBack = () => {
            state.owned = false;
            done();
          };
          const pid = { backend_pid: this.id };
          this.#owned = {
            exec: (message) => exec(message, { ...this.#identity, ...pid }),
            handover: (message) => exec(message, pid),
            idle,
            done: handBack,
            generation: generation ?? 0,
          };
          acquired();
        }), this.#copy_stream).catch(failed);
    }).finally(() => state.waiting--);
    if (this.#closed) {
      // Closed while it waited (terminated, timed out, server stopping): hand the backend on at once.
      this.#owned!.done();
      this.#owned = undefined;
      throw new Deno.errors.BadResource("the session was closed");
    }
    const generation = this.#owned!.generation;
    if (state.generation !== generation) newGeneration(state, generation);
    // On a fresh engine (a replica's next generation), this session's prepared statements are made again.
    const moved = this.#generation !== generation;
    this.#generation = generation;
    if (state.last_owner === this.id && !moved) return;
    const plan = handover(state, this.id, startupSql(this.#params, storedSettingsSql(this.#params.user ?? "postgres")));
    // The first time, the timeouts in force are read too: ALTER ROLE/DATABASE ... SET may have set them.
    const first = !this.#timeouts_read;
    const sql = first ? `${plan.sql} ${TIMEOUTS_SQL}`.trim() : plan.sql;
    const reply = sql === "" ? new Uint8Array(0) : await this.#owned!.handover(backendMessage("Q", cStrings(sql)));
    handedOver(state, this.id, plan, reply);
    if (first) Object.assign(this.#timeouts, timeoutsOf(reply));
    this.#timeouts_read = true;
    const replay = moved ? this.#replay?.messages() : undefined;
    if (replay !== undefined) await this.#owned!.handover(replay);
  }

  /** Cancels this session's running statement (a CancelRequest with its key arrived); false when none runs. */
  cancel(): boolean {
    if (this.#in_flight === undefined || this.#compute?.cancel === undefined) return false;
    return this.#compute.cancel(this.#owned?.generation);
  }

  /**
   * Called by the server now and then: a client silent inside a transaction (or a batch) for longer than the
   * idle-in-transaction timeout is told so, rolled back and disconnected, so the sessions waiting behind it go on.
   */
  async checkIdle(now_ms: number): Promise<void> {
    const own_ms = this.#timeouts.idle_in_transaction_ms;
    const timeout_ms = own_ms > 0
      ? Math.min(own_ms, this.#ctx.idle_in_transaction_ms)
      : this.#ctx.idle_in_transaction_ms;
    if (this.#client.waiting_since_ms === undefined || now_ms - this.#client.waiting_since_ms < timeout_ms) return;
    if (this.#holds_temp && this.#status === "I" && !this.#open_batch) return await this.#checkTempHolder(timeout_ms);
    this.#client.waiting_since_ms = undefined;
    this.#ctx.log("idle_in_transaction_timeout", { session: this.id, timeout_ms });
    await this.#write(errorResponse(
      "FATAL",
      "25P03",
      "terminating connection due to idle-in-transaction timeout",
      `a session may stay idle inside a transaction for ${timeout_ms} ms: other sessions wait for it`,
    )).catch(() => {});
    await this.close();
  }

  /** Idle between transactions with temporary objects: disconnected only when other sessions wait for it. */
  async #checkTempHolder(timeout_ms: number): Promise<void> {
    if ((this.#ctx.backends.get(this.#compute!)?.waiting ?? 0) === 0) return;
    this.#client.waiting_since_ms = undefined;
    this.#ctx.log("temp_holder_timeout", { session: this.id, timeout_ms });
    await this.#write(errorResponse(
      "FATAL",
      "57P05",
      "terminating connection: it holds temporary tables and stayed idle while other sessions waited",
      `the sessions of a branch share one PostgreSQL backend, and temporary tables keep it for their session; ` +
        `drop them (or use ON COMMIT DROP) when done: an idle holder is disconnected after ${timeout_ms} ms ` +
        `when others wait`,
    )).catch(() => {});
    await this.close();
  }

  /** The transaction that ran LISTEN/UNLISTEN ended: unless it rolled back, they hold; the backend follows. */
  async #syncListens(hub: NotificationHub, reply: Uint8Array): Promise<void> {
    const commands = this.#listen_commands;
    this.#listen_commands = [];
    if (rolledBack(reply)) return;
    hub.apply(this.#listener, commands);
    await this.#owned!.exec(backendMessage("Q", cStrings(hub.syncSql())));
  }

  #write(bytes: Uint8Array): Promise<void> {
    return this.#client.write(bytes);
  }
}

function frame(message: FrontendMessage): Uint8Array {
  return backendMessage(message.type, message.body);
}

/** A statement that may create, change or drop a role: the roles known for logins are read again. */
const ROLE_CHANGE = /\b(?:role|user|group)\b/i;

function printable(type: string): string {
  const code = type.charCodeAt(0);
  return code >= 32 && code < 127 ? type : `\\x${code.toString(16).padStart(2, "0")}`;
}

function isDisconnect(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.BadResource || error instanceof Deno.errors.UnexpectedEof;
}
