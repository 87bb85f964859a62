/**
 * The client's side of a COPY FROM STDIN that waits in Postgres (see `engine_guard.ts`): which of the client's
 * messages go to it, and how a client that leaves or breaks the protocol ends it.
 *
 * @module
 */
import { backendMessage, concatBytes, cStrings, FORWARDED_TYPES, type FrontendMessage, ProtocolError } from "./wire.ts";

/** Client bytes handed to a waiting COPY at once (more wait for the next read). */
const COPY_FEED_BYTES = 1024 * 1024;
/** Message types a COPY FROM STDIN takes from the client (Postgres ignores Flush and Sync during COPY). */
const COPY_TYPES = new Set(["d", "c", "f", "H", "S"]);

/** Where a COPY's messages come from: the client's socket, and what is already buffered from it. */
export type CopyInSource = {
  /** The next whole message, reading the socket as needed; undefined when the client has left. */
  next(): Promise<FrontendMessage | undefined>;
  /** The type of the next buffered message, if at least its header is buffered. */
  peekType(): string | undefined;
  /** The next whole buffered message, without reading the socket. */
  buffered(): FrontendMessage | undefined;
};

/** What a COPY gets next: bytes for Postgres, and the error that ends the session once the statement is over. */
export type CopyIn = { bytes: Uint8Array; error?: Error };

/**
 * The client's next messages for a waiting COPY: at least one whole message, and what else is buffered, up to the
 * end of the COPY (CopyDone or CopyFail). Anything that cannot go to a COPY fails it with a CopyFail instead:
 * PostgreSQL drops a Query sent during COPY and fails the COPY (its own check of that makes PGlite exit); a
 * client that left, or an unknown message type, also ends the session.
 */
export async function readCopyIn(source: CopyInSource): Promise<CopyIn> {
  const frames: Uint8Array[] = [];
  let bytes = 0;
  try {
    for (;;) {
      const waits = frames.length === 0;
      if (!waits && !COPY_TYPES.has(source.peekType() ?? "")) break;
      const message = waits ? await source.next() : source.buffered();
      if (message === undefined) {
        if (!waits) break;
        return { bytes: copyFail("the client left during COPY"), error: new ProtocolError("client left during COPY") };
      }
      if (!COPY_TYPES.has(message.type)) {
        const what = `unexpected message type 0x${message.type.charCodeAt(0).toString(16)} during COPY from stdin`;
        const error = FORWARDED_TYPES.has(message.type) ? undefined : new ProtocolError(what);
        return { bytes: concatBytes([...frames, copyFail(what)]), error };
      }
      frames.push(backendMessage(message.type, message.body));
      bytes += 5 + message.body.length;
      if (message.type === "c" || message.type === "f" || bytes >= COPY_FEED_BYTES) break;
    }
  } catch (error) {
    const bytes = concatBytes([...frames, copyFail("the client connection failed during COPY")]);
    return { bytes, error: error as Error };
  }
  return { bytes: concatBytes(frames) };
}

function copyFail(reason: string): Uint8Array {
  return backendMessage("f", cStrings(reason));
}
