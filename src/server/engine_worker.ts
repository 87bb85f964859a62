/**
 * The engine Worker: runs `Tarn` (Postgres, its file system, storage) off the server's thread, so the server keeps
 * accepting, authenticating and reading sockets while a statement runs, and can cancel that statement by setting
 * Postgres's interrupt flags in the shared WASM memory. Protocol: `engine_protocol.ts`.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import type { Compute } from "../compute/compute.ts";
import { shareWasmMemory } from "./shared_memory.ts";
import { disablePostgresTimers } from "./postgres_timers.ts";
import { type Lane, LANE_BYTES, LaneServer } from "./engine_channel.ts";
import type { BranchAt } from "../replication/branch_point.ts";
import { Tarn } from "../tarn.ts";
import { RemoteTenant } from "../compute/remote/remote_tenant.ts";
import { runAdmin } from "../branch_admin.ts";
import { copyFeedInput } from "./copy_feed.ts";
import type { CopyInput } from "../compute/engine_guard.ts";
import { type CallIdentity, identityOfCode } from "../compute/engine_identity.ts";
import { engineIdentityCells } from "../compute/engine.ts";
import {
  type AttachedCompute,
  CONTROL_CANCEL_SEQ,
  type EngineError,
  type EngineOpenOptions,
  type EngineReply,
  type EngineRequest,
  type ExecResult,
} from "./engine_protocol.ts";

shareWasmMemory();
disablePostgresTimers();

type Entry = {
  compute: Compute;
  control: Int32Array;
  cancel?: AttachedCompute["cancel"];
  attachments: number;
  /** The compute's restart count when `cancel` was taken: a restarted Postgres has its flags elsewhere. */
  restarts: number;
};
type Held = {
  exec: (bytes: Uint8Array, identity?: CallIdentity, copy_input?: CopyInput) => Promise<Uint8Array>;
  idle: () => Promise<void>;
  done: () => void;
};

let tarn: Tarn | RemoteTenant | undefined;
let open_options: EngineOpenOptions | undefined;
const computes = new Map<number, Entry>();
const compute_ids = new WeakMap<Compute, number>();
const releases = new Map<number, { compute_id: number; release: () => Promise<void> }>();
/** Backend ownerships by token: acquired (or waiting to be) until `done`. */
const holders = new Map<number, { entry: Entry; held: Promise<Held> }>();
let next_id = 1;
/** Requests that came by postMessage and are not answered yet: while any is, the lane must not block the thread. */
let in_progress = 0;
/** Messages taken from the server's thread, to tell whether more are on their way (see `LaneServer.serve`). */
let received = 0;
let lane_server: LaneServer | undefined;
/** Attachments and releases run one at a time, in the order sent, so a compute's count never dips to 0 early. */
let membership: Promise<unknown> = Promise.resolve();

self.onmessage = (event: MessageEvent<EngineRequest>) => {
  received++;
  const request = event.data;
  if (request.op === "attach_running") attachRunning(request.attach_id, request.compute_id, request.branch);
  else if (request.op === "done") release_backend(request.token);
  else if (request.op === "wake") lane_server?.woken();
  else answer(request.id, () => handle(request));
};

function answer(id: number, task: () => Promise<unknown>): void {
  const post = (reply: EngineReply) => self.postMessage(reply);
  in_progress++;
  task().finally(() => in_progress--).then(
    (value) => post({ id, ok: true, value }),
    (error) =>
      post({ id, ok: false, error: { name: error?.name ?? "Error", message: String(error?.message ?? error) } }),
  );
}

function handle(request: Exclude<EngineRequest, { op: "attach_running" | "done" | "wake" }>): Promise<unknown> {
  switch (request.op) {
    case "open":
      return open(request.options, request.lane);
    case "attach":
      return serially(() => attach(request.attach_id, request.branch, request.at));
    case "release":
      return serially(() => release(request.attach_id));
    case "exec":
      return exec(request);
    case "inject_fault":
      if (open_options?.fault_injection !== true) throw new Error("fault injection is off");
      computes.get(request.compute_id)?.compute.injectEngineFault();
      return Promise.resolve();
    case "admin":
      if (tarn === undefined) throw new Error("the engine is not open");
      return tarn instanceof Tarn ? runAdmin(tarn, request.request) : tarn.admin(request.request);
    case "head":
      if (tarn === undefined) throw new Error("the engine is not open");
      return tarn.headLsn(request.branch);
    case "stats":
      return tarn instanceof RemoteTenant ? tarn.stats() : Promise.resolve([]);
    case "close":
      return close();
  }
}

async function open(options: EngineOpenOptions, lane: Lane): Promise<void> {
  if (tarn !== undefined) throw new Error("the engine is open already");
  open_options = options;
  // Every login reads its role as the superuser: find where the engine keeps who it is while the engine opens.
  engineIdentityCells();
  const log = (event: string, fields: Record<string, unknown>) =>
    self.postMessage({ log: event, fields } satisfies EngineReply);
  tarn = options.remote === undefined
    ? await Tarn.open(options.dir, {
      compute_idle_ms: options.compute_idle_ms,
      page_cache_pages: options.page_cache_pages,
      block_cache_bytes: options.block_cache_bytes,
      safekeepers: options.safekeepers,
      remote: options.lake,
      log,
    })
    : await RemoteTenant.open({
      pageserver: options.remote.pageserver,
      tenant: options.remote.tenant,
      io: options.remote.io,
      suspend_after_ms: options.compute_idle_ms,
      safekeepers: options.safekeepers ?? [],
      compute: {
        page_cache_pages: options.page_cache_pages,
        checkpoint_wal_bytes: 16 * 1024 * 1024,
        checkpoint_idle_ms: 1000,
        page_store_memory_bytes: 0,
      },
      log,
    });
  lane_server = new LaneServer(lane, () => self.postMessage({ lane_wake: true } satisfies EngineReply));
  lane_server.serve(execFromLane, (posted) => in_progress === 0 && received === posted);
}

/** An exec that came by the lane: its reply goes back in the lane (first byte: released), else by postMessage. */
async function execFromLane(fields: number[], bytes: Uint8Array): Promise<Uint8Array | undefined> {
  const [id, token, compute_id, acquire, seq, copy, role, pid] = fields;
  try {
    const result = await exec({
      op: "exec",
      id,
      token,
      compute_id,
      acquire: acquire === 1,
      seq,
      copy: copy === 1,
      identity: [role, pid],
      bytes,
    });
    if (result.bytes.length + 1 > LANE_BYTES || result.cancel !== undefined) {
      self.postMessage({ id, ok: true, value: result } satisfies EngineReply);
      return undefined;
    }
    const reply = new Uint8Array(result.bytes.length + 1);
    reply[0] = result.released ? 1 : 0;
    reply.set(result.bytes, 1);
    return reply;
  } catch (error) {
    self.postMessage({ id, ok: false, error: asEngineError(error) } satisfies EngineReply);
    return undefined;
  }
}

function asEngineError(error: unknown): EngineError {
  const e = error as { name?: string; message?: string } | undefined;
  return { name: e?.name ?? "Error", message: String(e?.message ?? error) };
}

function serially<T>(task: () => Promise<T>): Promise<T> {
  const run = membership.then(task);
  membership = run.catch(() => {});
  return run;
}

/** One more connection on a compute the server knows is running (it holds an attachment to it). */
function attachRunning(attach_id: number, compute_id: number, branch: string): void {
  serially(async () => {
    const attached = await attach(attach_id, branch);
    if (attached.compute_id !== compute_id) throw new Error(`branch ${branch} changed compute while attached`);
  }).catch((error) => self.postMessage({ log: "attach_failed", fields: { branch, message: String(error) } }));
}

async function attach(attach_id: number, branch: string, at?: BranchAt): Promise<AttachedCompute> {
  if (tarn === undefined) throw new Error("the engine is not open");
  const { compute, release, lsn } = await tarn.attachCompute(branch, at);
  let compute_id = compute_ids.get(compute);
  if (compute_id === undefined || !computes.has(compute_id)) {
    compute_id = next_id++;
    compute_ids.set(compute, compute_id);
    const control = new Int32Array(new SharedArrayBuffer(4));
    const flags = compute.interruptFlags();
    const cancel = flags && { ...flags, control: control.buffer as SharedArrayBuffer };
    computes.set(compute_id, { compute, control, cancel, attachments: 0, restarts: compute.restarts });
  }
  const entry = computes.get(compute_id)!;
  entry.attachments++;
  releases.set(attach_id, { compute_id, release });
  return { compute_id, cancel: entry.cancel, lsn };
}

async function release(attach_id: number): Promise<void> {
  const attachment = releases.get(attach_id);
  if (attachment === undefined) return;
  releases.delete(attach_id);
  const entry = computes.get(attachment.compute_id)!;
  // A compute nothing attaches to may stop: forget it, so a stopped one is not kept alive from here.
  if (--entry.attachments === 0) computes.delete(attachment.compute_id);
  await attachment.release();
}

function acquire(token: number, compute_id: number): { entry: Entry; held: Promise<Held> } {
  const entry = computes.get(compute_id);
  const held = new Promise<Held>((resolve, reject) => {
    if (entry === undefined) return reject(new Error(`compute ${compute_id} is gone`));
    entry.compute.exclusive((exec, idle) => new Promise<void>((done) => resolve({ exec, idle, done }))).catch(reject);
  });
  const holder = { entry: entry!, held };
  holders.set(token, holder);
  return holder;
}

async function exec(request: Extract<EngineRequest, { op: "exec" }>): Promise<ExecResult> {
  const holder = request.acquire ? acquire(request.token, request.compute_id) : holders.get(request.token);
  if (holder === undefined) throw new Error(`backend token ${request.token} is not held`);
  const { exec } = await holder.held;
  const cancel = refreshCancel(holder.entry);
  armCancel(holder.entry, request.seq);
  let bytes: Uint8Array;
  try {
    const identity = identityOfCode(request.identity);
    bytes = await exec(request.bytes, identity, request.copy ? copyInput(request.id) : undefined);
  } finally {
    disarmCancel(holder.entry);
  }
  const released = endsIdle(bytes);
  if (released) release_backend(request.token);
  return cancel === undefined ? { bytes, released } : { bytes, released, cancel };
}

/** Where a COPY FROM STDIN of exec `id` gets the client's data: from the server's thread, through the feed. */
function copyInput(id: number): CopyInput {
  const options = open_options!;
  const post = (asked: number, bytes: Uint8Array) =>
    self.postMessage({ copy_output: { id, asked, bytes } } satisfies EngineReply);
  return copyFeedInput(options.copy_feed, post, options.copy_wait_ms);
}

/** After the compute's Postgres was restarted, its interrupt flags are elsewhere: the new ones, for the server. */
function refreshCancel(entry: Entry): AttachedCompute["cancel"] | undefined {
  if (entry.restarts === entry.compute.restarts) return undefined;
  entry.restarts = entry.compute.restarts;
  const flags = entry.compute.interruptFlags();
  entry.cancel = flags && { ...flags, control: entry.control.buffer as SharedArrayBuffer };
  return entry.cancel;
}

/** Whether Postgres's reply ends with ReadyForQuery "idle": the owner has nothing open on the backend. */
function endsIdle(bytes: Uint8Array): boolean {
  const n = bytes.length;
  return n >= 6 && bytes[n - 6] === 0x5a && bytes[n - 5] === 0 && bytes[n - 2] === 5 && bytes[n - 1] === 0x49;
}

/**
 * Clears a cancel left over from an earlier statement (set after it ended), then honours one the server asked for
 * this statement before it started.
 */
function armCancel(entry: Entry, seq: number): void {
  if (entry.cancel === undefined) return;
  const memory = new Int32Array(entry.cancel.memory);
  Atomics.store(memory, entry.cancel.query_cancel_pending >> 2, 0);
  if (Atomics.load(entry.control, CONTROL_CANCEL_SEQ) !== seq) return;
  Atomics.store(memory, entry.cancel.query_cancel_pending >> 2, 1);
  Atomics.store(memory, entry.cancel.interrupt_pending >> 2, 1);
}

function disarmCancel(entry: Entry): void {
  if (entry.cancel === undefined) return;
  Atomics.store(new Int32Array(entry.cancel.memory), entry.cancel.query_cancel_pending >> 2, 0);
}

/** Gives back the backend held under `token`, after running the idle-time checkpoint policy. */
function release_backend(token: number): void {
  const holder = holders.get(token);
  if (holder === undefined) return;
  holders.delete(token);
  holder.held.then(async ({ idle, done }) => {
    try {
      await idle();
    } catch (error) {
      self.postMessage({ log: "idle_failed", fields: { message: String(error) } } satisfies EngineReply);
    } finally {
      done();
    }
  }, () => {});
}

async function close(): Promise<void> {
  const closing = tarn;
  tarn = undefined;
  await closing?.close();
}
