/**
 * The embedded client: `query`, `exec`, the `sql` tagged template and `transaction`, over one compute's session.
 *
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { ClosedError, ReadOnlyError } from "./errors.ts";

/** A column of a result. */
export type Field = { name: string; dataTypeID: number };

/** The result of one statement. */
export type QueryResult<T = Record<string, unknown>> = {
  /** Rows as objects keyed by column name. */
  rows: T[];
  /** Columns, in order. */
  fields: Field[];
  /** Rows inserted, updated or deleted, when the statement says. */
  affectedRows?: number;
};

/** What runs statements: a client outside a transaction, or the transaction handle inside one. */
export interface Queryable {
  /** Runs one statement with `$1`-style parameters. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<T>>;
  /** Runs one or more statements without parameters; returns each statement's result. */
  exec(sql: string): Promise<QueryResult[]>;
  /** Runs a tagged template as one statement with its values as parameters. */
  sql<T = Record<string, unknown>>(strings: TemplateStringsArray, ...values: unknown[]): Promise<QueryResult<T>>;
}

/** The session's lock: one statement or transaction at a time, in arrival order. */
export class SessionLock {
  #tail: Promise<void> = Promise.resolve();
  readonly #prepare: () => Promise<void>;

  /** @param prepare runs before each holder (a compute restarts a failed engine there) */
  constructor(prepare: () => Promise<void> = () => Promise.resolve()) {
    this.#prepare = prepare;
  }

  /** Runs `fn` when every earlier holder has finished. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(async () => {
      await this.#prepare();
      return await fn();
    });
    this.#tail = result.then(() => {}, () => {});
    return result;
  }
}

/**
 * Hooks the database runs around each statement (checkpoints by WAL volume, idle timers), and for a read-only
 * connection the words naming what it reads, for the error a write gets.
 */
export type StatementHooks = { after(): Promise<void>; read_only_label?: string; on_close?: () => Promise<void> };

/** PostgreSQL's SQLSTATE for a write in a read-only transaction. */
const READ_ONLY_SQL_TRANSACTION = "25006";

/** A connection to a Tarn database. Statements are durable when their promise resolves. */
export class TarnClient implements Queryable {
  readonly #backend: () => PGlite;
  readonly #lock: SessionLock;
  readonly #hooks: StatementHooks;
  #closed = false;

  /** Made by `Tarn.connect()`; `backend` gives the compute's current Postgres (a rewind may replace it). */
  constructor(backend: () => PGlite, lock: SessionLock, hooks: StatementHooks) {
    this.#backend = backend;
    this.#lock = lock;
    this.#hooks = hooks;
  }

  /** Runs one statement with `$1`-style parameters. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<QueryResult<T>> {
    return this.#locked(() => runQuery<T>(this.#backend(), sql, params));
  }

  /** Runs one or more statements without parameters. */
  exec(sql: string): Promise<QueryResult[]> {
    return this.#locked(() => runExec(this.#backend(), sql));
  }

  /** Runs a tagged template as one statement with its values as parameters. */
  sql<T = Record<string, unknown>>(strings: TemplateStringsArray, ...values: unknown[]): Promise<QueryResult<T>> {
    return this.query<T>(templateText(strings), values);
  }

  /**
   * Runs `fn` in a transaction: COMMIT when it returns (durable when this resolves), ROLLBACK when it throws.
   * Other clients' statements wait until it ends.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.#locked(async () => {
      await this.#backend().exec("BEGIN");
      const tx: Queryable = {
        query: (sql, params) => runQuery(this.#backend(), sql, params),
        exec: (sql) => runExec(this.#backend(), sql),
        sql: (strings, ...values) => runQuery(this.#backend(), templateText(strings), values),
      };
      let result: T;
      try {
        result = await fn(tx);
      } catch (error) {
        await this.#backend().exec("ROLLBACK");
        throw error;
      }
      await this.#backend().exec("COMMIT");
      return result;
    });
  }

  /** Closes this client; the database stays open for others. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#hooks.on_close?.();
  }

  /** `await using db = await tarn.connect()` closes the client at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #locked<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new ClosedError("this Tarn client"));
    return this.#lock.run(async () => {
      try {
        return await fn();
      } catch (error) {
        const label = this.#hooks.read_only_label;
        if (label !== undefined && (error as { code?: string }).code === READ_ONLY_SQL_TRANSACTION) {
          throw new ReadOnlyError(label, error);
        }
        throw error;
      } finally {
        await this.#hooks.after();
      }
    });
  }
}

async function runQuery<T>(pg: PGlite, sql: string, params?: unknown[]): Promise<QueryResult<T>> {
  const result = await pg.query<T>(sql, params);
  return { rows: result.rows, fields: result.fields, affectedRows: result.affectedRows };
}

async function runExec(pg: PGlite, sql: string): Promise<QueryResult[]> {
  const results = await pg.exec(sql);
  return results.map((r) => ({
    rows: r.rows as Record<string, unknown>[],
    fields: r.fields,
    affectedRows: r.affectedRows,
  }));
}

function templateText(strings: TemplateStringsArray): string {
  return strings.reduce((text, part, i) => text + `$${i}` + part);
}
