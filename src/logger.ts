/**
 * The logger type every layer takes. It lives at the bottom of the source tree, not beside `makeLogger` in cli/,
 * because storage, replication and compute all log and must not import from the CLI above them.
 *
 * @module
 */

/** Logs one event with its fields; the caller picks the format and destination (see cli/log.ts makeLogger). */
export type Logger = (event: string, fields: Record<string, unknown>) => void;
