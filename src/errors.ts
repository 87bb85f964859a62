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
