/**
 * What the engine's thread and the page I/O Worker share: the words of the control array, the sizes of the request
 * and reply areas, and the messages they post each other.
 *
 * @module
 */

/** A request id with this bit set is answered through the shared reply area (the engine's thread is blocked). */
export const SYNC_BIT = 0x8000_0000;
/** Bytes of the request area: the largest synchronous request frame. */
export const REQUEST_AREA_BYTES = 256 * 1024;
/** Bytes of the reply area: the largest synchronous reply (a type byte, then the body). */
export const REPLY_AREA_BYTES = 4 * 1024 * 1024;

/** Indexes in the control array (Int32). */
export const CONTROL = { REQUEST_LENGTH: 0, REPLY_SEQ: 1, REPLY_LENGTH: 2, WORDS: 3 } as const;

/**
 * To the I/O Worker itself, or to a bootstrap port it was given: a new link, one TCP connection driven through
 * `port` by {@linkcode IoCommand}s; or a port on which more links will come.
 */
export type IoSetup = { op: "link"; port: MessagePort } | { op: "bootstrap"; port: MessagePort };

/** Engine thread to I/O Worker, on a link's port. */
export type IoCommand =
  | { op: "init"; control: SharedArrayBuffer; request: SharedArrayBuffer; reply: SharedArrayBuffer }
  | { op: "connect"; hostname: string; port: number }
  | { op: "send"; bytes: Uint8Array }
  | { op: "sync" }
  | { op: "prefetch"; id: number; bytes: Uint8Array }
  | { op: "claim"; id: number }
  | { op: "forget"; id: number }
  | { op: "close" };

/** I/O Worker to engine thread, on a link's port. */
export type IoEvent =
  | { op: "connected" }
  | { op: "disconnected"; reason: string }
  | { op: "reply"; type: number; body: Uint8Array };
