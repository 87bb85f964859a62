/**
 * Reads the fields Tarn needs from PostgreSQL 18's `global/pg_control` (ControlFileData, little endian).
 *
 * @module
 */
import type { Lsn } from "../lsn.ts";

/** PostgreSQL's DBState values, by number. */
const DB_STATES = [
  "starting up",
  "shut down",
  "shut down in recovery",
  "shutting down",
  "in crash recovery",
  "in archive recovery",
  "in production",
] as const;

/** What Tarn reads from pg_control. */
export type ControlFile = {
  /** The cluster state, as pg_controldata prints it. */
  state: (typeof DB_STATES)[number];
  /** LSN of the latest checkpoint record. */
  checkpoint_lsn: Lsn;
  /** Its redo point: recovery replays WAL from here. */
  redo_lsn: Lsn;
  /** WAL segment size in bytes. */
  segment_size: number;
};

/** Thrown when pg_control is not PostgreSQL 18's layout (wrong version of PGlite, or a corrupt page). */
export class ControlFileError extends Error {
  /** @param what what did not match */
  constructor(what: string) {
    super(`global/pg_control is not readable as PostgreSQL 18's control file: ${what}`);
    this.name = "ControlFileError";
  }
}

const OFFSET_STATE = 16;
const OFFSET_CHECKPOINT = 32;
const OFFSET_REDO = 40;
const OFFSET_BLCKSZ = 216;
const OFFSET_XLOG_BLCKSZ = 224;
const OFFSET_XLOG_SEG_SIZE = 228;

/** Parses the fields of {@linkcode ControlFile}; checks the layout through the block sizes it must hold. */
export function parseControlFile(page: Uint8Array): ControlFile {
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  if (view.getUint32(OFFSET_BLCKSZ, true) !== 8192 || view.getUint32(OFFSET_XLOG_BLCKSZ, true) !== 8192) {
    throw new ControlFileError("block sizes are not 8192 where PostgreSQL 18 keeps them");
  }
  const state = DB_STATES[view.getUint32(OFFSET_STATE, true)];
  if (state === undefined) throw new ControlFileError(`unknown state ${view.getUint32(OFFSET_STATE, true)}`);
  return {
    state,
    checkpoint_lsn: view.getBigUint64(OFFSET_CHECKPOINT, true),
    redo_lsn: view.getBigUint64(OFFSET_REDO, true),
    segment_size: view.getUint32(OFFSET_XLOG_SEG_SIZE, true),
  };
}
