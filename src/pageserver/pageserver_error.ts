/**
 * The error a pageserver request fails with: a code from the protocol, and a message naming what was asked for.
 *
 * @module
 */
import type { ErrorCode } from "./messages.ts";

/** A request the pageserver refused; the code travels in the error reply. */
export class PageserverError extends Error {
  /** What kind of failure. */
  readonly code: ErrorCode;

  /**
   * @param code what kind of failure
   * @param message what happened and what to do
   */
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "PageserverError";
    this.code = code;
  }
}
