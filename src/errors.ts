/**
 * Errors a Tarn user can meet: each says what happened and what to do.
 *
 * @module
 */

/** Another process holds the data directory. */
export class DatabaseLockedError extends Error {
  /** The pid written by the holder, if it could be read. */
  readonly holder_pid: number | undefined;
  /**
   * @param dir the data directory
   * @param holder_pid the pid of the process holding it
   */
  constructor(dir: string, holder_pid: number | undefined) {
    const who = holder_pid === undefined ? "another process" : `process ${holder_pid}`;
    super(`${dir} is in use by ${who}: close it there first, or open another directory`);
    this.name = "DatabaseLockedError";
    this.holder_pid = holder_pid;
  }
}

/** A file of a data directory is damaged in a way Tarn cannot repair without losing data. */
export class CorruptDataError extends Error {
  /**
   * @param file the damaged file
   * @param what what is wrong with it
   */
  constructor(file: string, what: string) {
    super(`${file} is damaged (${what}); restore the directory from a copy, or report it with this file`);
    this.name = "CorruptDataError";
  }
}

/** The handle was closed; nothing more can be done with it. */
export class ClosedError extends Error {
  /** @param what what was closed */
  constructor(what: string) {
    super(`${what} is closed: open it again to go on`);
    this.name = "ClosedError";
  }
}

/** No branch has that name. */
export class BranchNotFoundError extends Error {
  /** @param name the branch asked for */
  constructor(name: string, known: string[]) {
    super(`no branch "${name}": the branches are ${known.join(", ")}; create it with createBranch("${name}")`);
    this.name = "BranchNotFoundError";
  }
}

/** A branch with that name exists already. */
export class BranchExistsError extends Error {
  /** @param name the name asked for */
  constructor(name: string) {
    super(`a branch "${name}" exists already: pick another name, or delete or reset that branch`);
    this.name = "BranchExistsError";
  }
}

/** A branch operation that its rules refuse (protected, has children, the root). */
export class BranchRuleError extends Error {
  /** @param message what was refused and what to do */
  constructor(message: string) {
    super(message);
    this.name = "BranchRuleError";
  }
}

/** A branch point outside the history a branch holds. */
export class LsnOutOfRangeError extends Error {
  /** @param message which point, which range, and what to do */
  constructor(message: string) {
    super(message);
    this.name = "LsnOutOfRangeError";
  }
}

/** A write on a read-only (time-travel) connection. */
export class ReadOnlyError extends Error {
  /** @param what the connection, e.g. `branch "main" at 0/17CC6C8` */
  constructor(what: string, cause: unknown) {
    super(`this connection reads ${what} and cannot write: connect without "at", "readOnly" or "replica" to write`, {
      cause,
    });
    this.name = "ReadOnlyError";
  }
}

/** Options that cannot work together (for example safekeepers for an in-memory database). */
export class ConfigurationError extends Error {
  /** @param message what cannot work, and what to do instead */
  constructor(message: string) {
    super(message);
    this.name = "ConfigurationError";
  }
}
