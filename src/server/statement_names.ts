/**
 * Statement and portal names of one session on a shared backend: prefixed per session on the way in (Parse, Bind,
 * Describe, Close, Execute), so sessions sharing a backend never collide. The unnamed ones stay unnamed.
 *
 * @module
 */
import { concatBytes, cStrings, type FrontendMessage, readCString } from "./wire.ts";

/** `message` with every statement and portal name it carries prefixed by `prefix`. */
export function renameStatements(message: FrontendMessage, prefix: string): FrontendMessage {
  const rename = (name: string) => name === "" ? "" : `${prefix}${name}`;
  const body = message.body;
  switch (message.type) {
    case "P": {
      const [name, at] = readCString(body, 0);
      return { type: "P", body: concatBytes([cStrings(rename(name)), body.subarray(at)]) };
    }
    case "B": {
      const [portal, at1] = readCString(body, 0);
      const [statement, at2] = readCString(body, at1);
      return { type: "B", body: concatBytes([cStrings(rename(portal), rename(statement)), body.subarray(at2)]) };
    }
    case "D":
    case "C": {
      const [name, at] = readCString(body, 1);
      return {
        type: message.type,
        body: concatBytes([body.subarray(0, 1), cStrings(rename(name)), body.subarray(at)]),
      };
    }
    case "E": {
      const [portal, at] = readCString(body, 0);
      return { type: "E", body: concatBytes([cStrings(rename(portal)), body.subarray(at)]) };
    }
  }
  return message;
}
