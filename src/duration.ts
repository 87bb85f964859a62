/**
 * Durations as people write them in flags and settings: `500ms`, `30s`, `5m`, `1h`, `7d`, or `0`.
 *
 * @module
 */

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration (`500ms`, `30s`, `5m`, `1h`, `7d`, `0`) in ms; undefined when it is not one. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d{1,9})(ms|s|m|h|d)?$/.exec(text);
  if (match === null || (match[2] === undefined && match[1] !== "0")) return undefined;
  return Number(match[1]) * DURATION_UNITS_MS[match[2] ?? "ms"];
}
