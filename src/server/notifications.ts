/**
 * LISTEN/NOTIFY across the sessions of one compute. PGlite runs one backend for every session of a branch, so
 * Postgres sees one listener; the server keeps who listens to what. The backend LISTENs to every channel some
 * session listens to, a committed NOTIFY comes back as NotificationResponse messages in the reply of the statement
 * that committed it, and the server hands each one to every session listening to its channel (with the notifying
 * session's process id), when that session is not in the middle of a statement. Another branch has another backend
 * and another hub: notifications never cross branches.
 *
 * @module
 */
import { concatBytes } from "./wire.ts";

/** A session as the hub knows it: its process id, and how a notification reaches its client. */
export type Listener = { id: number; deliver(message: Uint8Array): void };

/** A LISTEN or UNLISTEN a statement makes (`*`: every channel). */
export type ListenCommand = { op: "listen" | "unlisten"; channel: string };

/** The most channels one backend listens to: a bound on the hub's memory, as PostgreSQL's queue is bounded. */
const MAX_CHANNELS = 10_000;

/** Statements that may LISTEN or UNLISTEN (`DISCARD ALL` unlistens), where a statement can start. */
export const LISTEN_STATEMENT = /(?:^|[;\0])\s*(?:(?:un)?listen|discard\s+all)\b/i;

/** The LISTEN and UNLISTEN commands of `sql`, in order; unquoted names fold to lower case, as Postgres does. */
export function listenCommands(sql: string): ListenCommand[] {
  const commands: ListenCommand[] = [];
  const pattern =
    /(?:^|[;\0])\s*(listen|unlisten|discard)\s+(\*|"((?:[^"]|"")+)"|[A-Za-z_\u0080-\uffff][\w$\u0080-\uffff]*)/gi;
  for (const match of sql.matchAll(pattern)) {
    const word = match[1].toLowerCase();
    if (word === "discard") {
      if (match[2].toLowerCase() === "all") commands.push({ op: "unlisten", channel: "*" });
      continue;
    }
    const op = word as ListenCommand["op"];
    const channel = match[2] === "*" ? "*" : match[3]?.replaceAll('""', '"') ?? match[2].toLowerCase();
    commands.push({ op, channel });
  }
  return commands;
}

/** Who listens to what on one backend. */
export class NotificationHub {
  readonly #channels = new Map<string, Set<Listener>>();
  /**
   * Whether the backend may listen to some channel (a LISTEN committed since the last sync that left none): only
   * then can a reply carry notifications, and only then does {@linkcode route} look through replies.
   */
  #backend_listens = false;

  /** Whether any session listens: only then does a committed transaction look for notifications. */
  get active(): boolean {
    return this.#channels.size > 0;
  }

  /** Applies a session's LISTEN/UNLISTEN commands (once they succeeded). */
  apply(listener: Listener, commands: ListenCommand[]): void {
    if (commands.some((c) => c.op === "listen")) this.#backend_listens = true;
    for (const { op, channel } of commands) {
      if (op === "unlisten" && channel === "*") this.leave(listener);
      else if (op === "unlisten") this.#drop(channel, listener);
      else if (this.#channels.has(channel) || this.#channels.size < MAX_CHANNELS) {
        let listeners = this.#channels.get(channel);
        if (listeners === undefined) this.#channels.set(channel, listeners = new Set());
        listeners.add(listener);
      }
    }
  }

  /** A session left (or ran `UNLISTEN *`): it listens to nothing. */
  leave(listener: Listener): void {
    for (const channel of [...this.#channels.keys()]) this.#drop(channel, listener);
  }

  /** The SQL that makes the backend listen to exactly the channels some session listens to. */
  syncSql(): string {
    this.#backend_listens = this.#channels.size > 0;
    const listens = [...this.#channels.keys()].map((channel) => `LISTEN ${quoteIdent(channel)};`);
    return ["UNLISTEN *;", ...listens].join(" ");
  }

  /**
   * Takes the NotificationResponse messages out of `reply` (the reply to a statement of `from`): each goes to the
   * sessions listening to its channel, `from` included, marked with `from`'s process id. Returns the rest.
   */
  route(from: Listener, reply: Uint8Array): Uint8Array {
    if (!this.#backend_listens) return reply;
    const kept: Uint8Array[] = [];
    let found = false;
    for (let at = 0; at + 5 <= reply.length;) {
      const length = new DataView(reply.buffer, reply.byteOffset + at + 1, 4).getInt32(0);
      const end = at + 1 + length;
      if (length < 4 || end > reply.length) break;
      const message = reply.subarray(at, end);
      if (reply[at] === 0x41) {
        found = true;
        this.#send(from, message);
      } else kept.push(message);
      at = end;
    }
    return found ? concatBytes(kept) : reply;
  }

  #send(from: Listener, message: Uint8Array): void {
    const channel_end = message.indexOf(0, 9);
    if (channel_end < 0) return;
    const channel = new TextDecoder().decode(message.subarray(9, channel_end));
    const listeners = this.#channels.get(channel);
    if (listeners === undefined) return;
    const marked = message.slice();
    new DataView(marked.buffer).setInt32(5, from.id);
    for (const listener of listeners) listener.deliver(marked);
  }

  #drop(channel: string, listener: Listener): void {
    const listeners = this.#channels.get(channel);
    listeners?.delete(listener);
    if (listeners?.size === 0) this.#channels.delete(channel);
  }
}

/** Notifications held for a busy client; beyond it they are dropped (PostgreSQL's queue is bounded too). */
const MAX_HELD_NOTIFICATIONS = 10_000;

/** A session's notifications: written at once while its client is idle, held while a statement of it runs. */
export class NotificationInbox {
  readonly #write: (bytes: Uint8Array) => Promise<void>;
  readonly #held: Uint8Array[] = [];
  #busy = false;

  /** @param write how bytes reach the client (in order with the session's replies) */
  constructor(write: (bytes: Uint8Array) => Promise<void>) {
    this.#write = write;
  }

  /** A notification for the client. */
  push(message: Uint8Array): void {
    if (this.#held.length >= MAX_HELD_NOTIFICATIONS) return;
    this.#held.push(message);
    if (!this.#busy) this.release().catch(() => {});
  }

  /** A statement starts: notifications wait for its reply. */
  hold(): void {
    this.#busy = true;
  }

  /** The session is idle again: what waited goes to the client. */
  async release(): Promise<void> {
    this.#busy = false;
    if (this.#held.length > 0) await this.#write(concatBytes(this.#held.splice(0)));
  }
}

/** Whether `reply` ends a transaction by rolling it back (its last CommandComplete says ROLLBACK). */
export function rolledBack(reply: Uint8Array): boolean {
  let tag = "";
  for (let at = 0; at + 5 <= reply.length;) {
    const length = new DataView(reply.buffer, reply.byteOffset + at + 1, 4).getInt32(0);
    if (length < 4 || at + 1 + length > reply.length) break;
    if (reply[at] === 0x43) tag = new TextDecoder().decode(reply.subarray(at + 5, at + length));
    at += 1 + length;
  }
  return tag.startsWith("ROLLBACK");
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
