/**
 * A timeline's GC state, `timelines/<timeline id>/gc.json` (docs/layer_file_format.md, "GC"): the GC cutoff (reads
 * below it are refused: the versions they need are gone) and the LSNs below it whose state is still kept whole (a
 * child branch's branch point, a lease), as images.
 *
 * @module
 */
import { readCheckedJson, writeCheckedJson } from "../checked_json.ts";
import { formatLsn, type Lsn, parseLsn } from "../lsn.ts";

/** The version of `gc.json` this code writes and reads. */
export const GC_STATE_FORMAT_VERSION = 1;

/** What a timeline's GC has given up, and what it kept. */
export type GcState = { cutoff_lsn: Lsn; image_lsns: Lsn[] };

type Stored = { format_version: number; cutoff_lsn: string; image_lsns: string[] };

/** The file's name in a timeline's directory. */
export const GC_STATE_FILE = "gc.json";

/** Reads `gc.json` in `layer_dir`: nothing collected yet when it is absent. */
export async function readGcState(layer_dir: string): Promise<GcState> {
  const stored = await readCheckedJson<Stored>(`${layer_dir}/${GC_STATE_FILE}`, "gc", GC_STATE_FORMAT_VERSION);
  if (stored === undefined) return { cutoff_lsn: 0n, image_lsns: [] };
  return { cutoff_lsn: parseLsn(stored.cutoff_lsn), image_lsns: stored.image_lsns.map(parseLsn) };
}

/** Writes `gc.json` atomically and durably. */
export async function writeGcState(layer_dir: string, state: GcState): Promise<void> {
  const stored: Stored = {
    format_version: GC_STATE_FORMAT_VERSION,
    cutoff_lsn: formatLsn(state.cutoff_lsn),
    image_lsns: state.image_lsns.map(formatLsn),
  };
  await writeCheckedJson(`${layer_dir}/${GC_STATE_FILE}`, "gc", stored);
}
