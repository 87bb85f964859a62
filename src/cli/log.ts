/**
 * Structured logs: one event a line, as text (`time event key=value ...`) or as one JSON object.
 *
 * @module
 */

import type { Logger } from "../logger.ts";

/** A logger writing to stdout, as JSON lines when `json`. */
export function makeLogger(json: boolean): Logger {
  return (event, fields) => {
    const line = { time: new Date().toISOString(), event, ...fields };
    if (json) console.log(JSON.stringify(line));
    else console.log(`${line.time} ${event} ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(" ")}`);
  };
}
