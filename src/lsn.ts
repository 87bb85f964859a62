/**
 * Log sequence numbers: 64-bit WAL positions, printed the way PostgreSQL prints them (`0/17CC6C8`).
 *
 * @module
 */

/** A WAL position in bytes. */
export type Lsn = bigint;

/** The largest LSN: "the newest version", used to read at the head of a timeline. */
export const LSN_MAX: Lsn = 0xffff_ffff_ffff_ffffn;

/** Thrown when a string is not an LSN in PostgreSQL's `X/Y` form. */
export class LsnFormatError extends Error {
  /** @param text the text that failed to parse */
  constructor(text: string) {
    super(`"${text}" is not an LSN: write it as PostgreSQL does, two hex numbers like 0/17CC6C8`);
    this.name = "LsnFormatError";
  }
}

/** Prints an LSN as PostgreSQL does: high and low 32 bits in upper-case hex. */
export function formatLsn(lsn: Lsn): string {
  const high = (lsn >> 32n).toString(16).toUpperCase();
  const low = (lsn & 0xffff_ffffn).toString(16).toUpperCase();
  return `${high}/${low}`;
}

/** Parses PostgreSQL's `X/Y` form; throws {@linkcode LsnFormatError} on anything else. */
export function parseLsn(text: string): Lsn {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (match === null) throw new LsnFormatError(text);
  return (BigInt("0x" + match[1]) << 32n) | BigInt("0x" + match[2]);
}

/** The WAL segment number that holds `lsn`. */
export function segmentOf(lsn: Lsn, segment_size: number): bigint {
  return lsn / BigInt(segment_size);
}

/** PostgreSQL's WAL segment file name (timeline 1 style `TTTTTTTTXXXXXXXXYYYYYYYY`). */
export function segmentFileName(timeline_id: number, segno: bigint, segment_size: number): string {
  const per_xlogid = 0x1_0000_0000n / BigInt(segment_size);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, "0");
  return hex(timeline_id) + hex(segno / per_xlogid) + hex(segno % per_xlogid);
}

/** Parses a WAL segment file name; undefined when `name` is not one. */
export function parseSegmentFileName(
  name: string,
  segment_size: number,
): { timeline_id: number; segno: bigint } | undefined {
  if (!/^[0-9A-F]{24}$/.test(name)) return undefined;
  const per_xlogid = 0x1_0000_0000n / BigInt(segment_size);
  const timeline_id = parseInt(name.slice(0, 8), 16);
  const segno = BigInt("0x" + name.slice(8, 16)) * per_xlogid + BigInt("0x" + name.slice(16, 24));
  return { timeline_id, segno };
}
