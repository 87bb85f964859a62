/**
 * The page I/O Worker: holds a compute's TCP connection to the pageserver, so that the engine's thread can block
 * (Atomics.wait) on a page it needs while this thread does the network I/O. It forwards frames as they come and
 * routes each reply by its request id: ids with {@linkcode SYNC_BIT} go back through the shared reply area, the
 * rest by postMessage. Protocol with the engine's thread: `page_channel.ts`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { FrameSplitter } from "../../pageserver/frames.ts";
import { CONTROL, type IoCommand, type IoEvent, SYNC_BIT } from "./page_channel_layout.ts";

let conn: Deno.TcpConn | undefined;
let control: Int32Array;
let reply_area: Uint8Array;
let request_area: Uint8Array;
let writing: Promise<void> = Promise.resolve();
let sync_waiting = false;

const post = (event: IoEvent, transfer: Transferable[] = []) => self.postMessage(event, transfer);

self.onmessage = (event: MessageEvent<IoCommand>) => {
  const command = event.data;
  if (command.op === "init") {
    control = new Int32Array(command.control);
    request_area = new Uint8Array(command.request);
    reply_area = new Uint8Array(command.reply);
  } else if (command.op === "connect") {
    connect(command.hostname, command.port);
  } else if (command.op === "send") {
    write(command.bytes);
  } else if (command.op === "sync") {
    sync_waiting = true;
    write(request_area.slice(0, Atomics.load(control, CONTROL.REQUEST_LENGTH)));
  } else if (command.op === "close") {
    disconnect("closed by the compute");
    self.close();
  }
};

async function connect(hostname: string, port: number): Promise<void> {
  try {
    conn = await Deno.connect({ hostname, port });
    conn.setNoDelay(true);
  } catch (error) {
    post({ op: "disconnected", reason: `cannot connect to the pageserver at ${hostname}:${port}: ${error}` });
    return;
  }
  post({ op: "connected" });
  const splitter = new FrameSplitter();
  const buffer = new Uint8Array(256 * 1024);
  const current = conn;
  try {
    for (;;) {
      const n = await current.read(buffer);
      if (n === null) break;
      for (const frame of splitter.push(buffer.subarray(0, n))) route(frame.type, frame.body);
    }
    disconnect("the pageserver closed the connection");
  } catch (error) {
    disconnect(`the connection to the pageserver failed: ${error}`);
  }
}

function route(type: number, body: Uint8Array): void {
  const id = new DataView(body.buffer, body.byteOffset, 4).getUint32(0, true);
  if ((id & SYNC_BIT) === 0 || !sync_waiting) {
    post({ op: "reply", type, body }, [body.buffer as ArrayBuffer]);
    return;
  }
  sync_waiting = false;
  reply_area[0] = type;
  reply_area.set(body, 1);
  Atomics.store(control, CONTROL.REPLY_LENGTH, body.length + 1);
  Atomics.add(control, CONTROL.REPLY_SEQ, 1);
  Atomics.notify(control, CONTROL.REPLY_SEQ);
}

function write(bytes: Uint8Array): void {
  const target = conn;
  if (target === undefined) return failSync();
  writing = writing.then(async () => {
    for (let done = 0; done < bytes.length;) done += await target.write(bytes.subarray(done));
  }).catch((error) => disconnect(`writing to the pageserver failed: ${error}`));
}

function disconnect(reason: string): void {
  if (conn === undefined) return;
  try {
    conn.close();
  } catch {
    // Closed by the peer already.
  }
  conn = undefined;
  failSync();
  post({ op: "disconnected", reason });
}

/** Wakes an engine thread waiting for a reply that will not come. */
function failSync(): void {
  if (!sync_waiting) return;
  sync_waiting = false;
  Atomics.store(control, CONTROL.REPLY_LENGTH, -1);
  Atomics.add(control, CONTROL.REPLY_SEQ, 1);
  Atomics.notify(control, CONTROL.REPLY_SEQ);
}
