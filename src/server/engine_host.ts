/**
 * The server's side of the engine Worker: opens a data directory in a Worker (`engine_worker.ts`) and hands the
 * server one {@linkcode RemoteBackend} per compute. A backend's `exec` is one round trip to the Worker; taking and
 * giving back the backend are one-way messages the Worker handles in order. `cancel` sets Postgres's interrupt
 * flags in the compute's shared WASM memory from this thread.
 *
 * @module
 */
import type { BranchAt } from "../replication/branch_point.ts";
import type { AdminRequest } from "../branch_admin.ts";
import {
  type AttachedCompute,
  CONTROL_CANCEL_SEQ,
  type EngineOpenOptions,
  type EngineReply,
  type EngineRequest,
  type ExecResult,
} from "./engine_protocol.ts";
import type { BackendFn, CopyStream, SharedBackend } from "./shared_backend.ts";
import { LaneClient, makeLane } from "./engine_channel.ts";
import { CopyFeedWriter, FEED_BYTES, makeCopyFeed } from "./copy_feed.ts";
import { copyFail } from "../compute/engine_guard.ts";
import type { Logger } from "../logger.ts";
import { pageIoPort, startPageIoWorker } from "../compute/remote/page_channel.ts";
import type { BranchStats } from "../compute/remote/remote_tenant.ts";
import { type CallIdentity, identityCode } from "../compute/engine_identity.ts";

/** Requests in flight at once; each client connection has at most one, so this is far above need. */
const MAX_PENDING = 10_000;

/** The engine Worker died: the server cannot serve until it is restarted (its data is safe on disk). */
export class EngineFailedError extends Error {
  /** @param what the Worker's uncaught error */
  constructor(what: string) {
    super(`the engine stopped: ${what}; restart the server (committed data is safe)`);
    this.name = "EngineFailedError";
  }
}

type Attachment = { backend: RemoteBackend; attachments: number; compute_id: number };
type ExecRequest = Extract<EngineRequest, { op: "exec" }>;
/** A COPY in progress: the client's stream, and what it gave beyond one feed. */
type CopyState = { stream: CopyStream; backlog: Uint8Array };

/** How long a COPY FROM STDIN waits in the Worker for data the server's thread never sends (ms). */
const COPY_WAIT_MS = 10 * 60_000;

/** How the server opens an engine: {@linkcode EngineOpenOptions} without the parts the host makes itself. */
export type EngineHostOptions = Omit<EngineOpenOptions, "copy_feed" | "copy_wait_ms">;
type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void };

/** A Tarn engine running in a Worker. */
export class EngineHost {
  readonly #worker: Worker;
  /** The page I/O Worker of a compute on a pageserver. */
  #page_io: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  readonly #backends = new Map<number, Attachment>();
  /** Read-write computes this thread holds attachments to, by branch. */
  readonly #running = new Map<string, Attachment>();
  readonly #log: Logger;
  #next_id = 1;
  #failure: Error | undefined;
  readonly #lane_memory = makeLane();
  readonly #lane = new LaneClient(this.#lane_memory, () => this.#worker.postMessage({ op: "wake" }));
  readonly #copy_memory = makeCopyFeed();
  readonly #copy_feed = new CopyFeedWriter(this.#copy_memory);
  /** Execs whose COPY FROM STDIN may ask for the client's data, by request id. */
  readonly #copies = new Map<number, CopyState>();
  #crashed!: (error: EngineFailedError) => void;
  /** Resolves if the Worker dies (Postgres aborted, out of memory): every session fails from then on. */
  readonly crashed: Promise<EngineFailedError> = new Promise((resolve) => this.#crashed = resolve);

  private constructor(log: Logger) {
    this.#log = log;
    this.#worker = new Worker(new URL("./engine_worker.ts", import.meta.url), { type: "module" });
    this.#worker.onmessage = (event: MessageEvent<EngineReply>) => this.#receive(event.data);
    this.#worker.onerror = (event) => {
      event.preventDefault();
      const error = new EngineFailedError(event.message);
      this.#fail(error);
      this.#crashed(error);
    };
  }

  /** Starts the Worker and opens the data directory in it; rejects (and stops the Worker) when that fails. */
  static async open(
    options: EngineHostOptions,
    log: Logger = () => {},
  ): Promise<EngineHost> {
    const host = new EngineHost(log);
    // A compute's page I/O Worker starts here: started by the engine Worker, it would take ~500 ms to run.
    host.#page_io = options.remote === undefined ? undefined : startPageIoWorker();
    const io = host.#page_io === undefined ? undefined : pageIoPort(host.#page_io);
    const remote = options.remote === undefined ? undefined : { ...options.remote, io };
    const open_options = { ...options, remote, copy_feed: host.#copy_memory, copy_wait_ms: COPY_WAIT_MS };
    try {
      await host.#call({ op: "open", id: 0, options: open_options, lane: host.#lane_memory }, io ? [io] : []);
    } catch (error) {
      host.#terminate();
      throw error;
    }
    return host;
  }

  /**
   * The compute of `branch` (read only at `at`), and how to let go of it: the server's `ComputeSource`. A branch
   * whose compute this thread already holds is attached without waiting for the Worker (which may be busy running
   * a statement), so a new connection is served its startup at once.
   */
  async attachCompute(
    branch: string,
    at?: BranchAt,
  ): Promise<{ compute: SharedBackend; release: () => Promise<void>; lsn?: bigint }> {
    const attach_id = this.#next_id++;
    let lsn: bigint | undefined;
    let known = at === undefined ? this.#running.get(branch) : undefined;
    if (known !== undefined) {
      this.#send({ op: "attach_running", attach_id, compute_id: known.compute_id, branch });
    } else {
      const attached = await this.#call({ op: "attach", id: 0, attach_id, branch, at }) as AttachedCompute;
      lsn = attached.lsn;
      known = this.#backends.get(attached.compute_id);
      if (known === undefined) {
        const backend = new RemoteBackend(
          attached,
          (request) => this.#send(request),
          (request, copy) => this.#exec(request, copy),
        );
        known = { backend, attachments: 0, compute_id: attached.compute_id };
        this.#backends.set(attached.compute_id, known);
      }
      if (at === undefined) this.#running.set(branch, known);
    }
    const attachment = known;
    attachment.attachments++;
    let released = false;
    return {
      compute: attachment.backend,
      lsn,
      release: async () => {
        if (released) return;
        released = true;
        if (--attachment.attachments === 0) {
          this.#backends.delete(attachment.compute_id);
          if (this.#running.get(branch) === attachment) this.#running.delete(branch);
        }
        await this.#call({ op: "release", id: 0, attach_id });
      },
    };
  }

  /** Tests only (`fault_injection`): the next statement on `compute`'s Postgres aborts the engine. */
  async injectFault(compute: SharedBackend): Promise<void> {
    if (!(compute instanceof RemoteBackend)) throw new Error("not a compute of this engine");
    await this.#call({ op: "inject_fault", id: 0, compute_id: compute.compute_id });
  }

  /** The head of `branch` now (a replica's freshness check). */
  headLsn(branch: string): Promise<bigint> {
    return this.#call({ op: "head", id: 0, branch }) as Promise<bigint>;
  }

  /** Each served branch's counters (a compute on a pageserver; none for a data directory). */
  stats(): Promise<BranchStats[]> {
    return this.#call({ op: "stats", id: 0 }) as Promise<BranchStats[]>;
  }

  /** Runs an administration request on the engine's database (`admin.ts`). */
  admin(request: AdminRequest): Promise<unknown> {
    return this.#call({ op: "admin", id: 0, request });
  }

  /** Closes the engine (stopping its computes cleanly) and the Worker. */
  async close(): Promise<void> {
    try {
      if (this.#failure === undefined) await this.#call({ op: "close", id: 0 });
    } finally {
      this.#terminate();
      this.#fail(new Error("the engine is closed"));
    }
  }

  #terminate(): void {
    this.#worker.terminate();
    this.#page_io?.terminate();
  }

  #send(request: EngineRequest): void {
    if (this.#failure !== undefined) throw this.#failure;
    this.#worker.postMessage(request);
    this.#lane.posted();
  }

  /** An exec by the lane when it is free, else by postMessage; a COPY in it streams through `copy`. */
  async #exec(request: ExecRequest, copy?: CopyStream): Promise<ExecResult> {
    const id = this.#next_id++;
    if (copy !== undefined) this.#copies.set(id, { stream: copy, backlog: new Uint8Array(0) });
    try {
      if (this.#failure !== undefined || !this.#lane.available(request.bytes)) {
        return await this.#call({ ...request, id }) as ExecResult;
      }
      const elsewhere = new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
      // An error reply may come (by postMessage) before the lane says to wait for it: handled below, not unhandled.
      elsewhere.catch(() => {});
      const fields = [
        id,
        request.token,
        request.compute_id,
        request.acquire ? 1 : 0,
        request.seq,
        request.copy ? 1 : 0,
        ...request.identity,
      ];
      const reply = await this.#lane.call(fields, request.bytes);
      if (reply === undefined) return await elsewhere as ExecResult;
      this.#pending.delete(id);
      return { bytes: reply.subarray(1), released: reply[0] === 1 };
    } finally {
      this.#copies.delete(id);
    }
  }

  /**
   * A COPY FROM STDIN in exec `id` used up its input: give the client the replies so far, then feed the Worker the
   * client's next bytes (a CopyFail when the client cannot give them).
   */
  async #serveCopy(id: number, asked: number, output: Uint8Array): Promise<void> {
    const copy = this.#copies.get(id);
    let more: Uint8Array;
    try {
      if (copy === undefined) throw new Error("no client stream for this COPY");
      if (output.length > 0) await copy.stream.write(output);
      more = copy.backlog.length > 0 ? copy.backlog : await copy.stream.read();
      copy.backlog = more.subarray(Math.min(more.length, FEED_BYTES));
      more = more.subarray(0, FEED_BYTES);
      if (more.length === 0) throw new Error("the client sent nothing");
    } catch (error) {
      more = copyFail(`COPY ended: ${(error as Error)?.message ?? error}`);
    }
    this.#copy_feed.put(asked, more);
  }

  /** A request by postMessage; `id` 0 takes a new one. */
  #call(request: EngineRequest & { id: number }, transfer: Transferable[] = []): Promise<unknown> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#pending.size >= MAX_PENDING) {
      return Promise.reject(new Error(`more than ${MAX_PENDING} requests wait for the engine`));
    }
    const id = request.id === 0 ? this.#next_id++ : request.id;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ ...request, id }, transfer);
      this.#lane.posted();
    });
  }

  #receive(reply: EngineReply): void {
    if ("lane_wake" in reply) return this.#lane.woken();
    if ("log" in reply) return this.#log(reply.log, reply.fields);
    if ("copy_output" in reply) {
      const { id, asked, bytes } = reply.copy_output;
      this.#serveCopy(id, asked, bytes);
      return;
    }
    const pending = this.#pending.get(reply.id);
    if (pending === undefined) return;
    this.#pending.delete(reply.id);
    if (reply.ok) return pending.resolve(reply.value);
    const error = new Error(reply.error.message);
    error.name = reply.error.name;
    pending.reject(error);
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
  }
}

let next_token = 1;

/** One compute in the Worker, as the server's sessions share it. */
class RemoteBackend implements SharedBackend {
  #attached: AttachedCompute;
  readonly #send: (request: EngineRequest) => void;
  readonly #call: (request: ExecRequest, copy?: CopyStream) => Promise<ExecResult>;
  /** The exec running now: the only one a cancel may reach. */
  #running_seq: number | undefined;
  #next_seq = 1;
  /** Owners take the backend in call order: each waits for the one before to give it back. */
  #owners: Promise<void> = Promise.resolve();

  constructor(
    attached: AttachedCompute,
    send: (request: EngineRequest) => void,
    call: (request: ExecRequest, copy?: CopyStream) => Promise<ExecResult>,
  ) {
    this.#attached = attached;
    this.#send = send;
    this.#call = call;
  }

  /** Waits for the backend, runs `fn` with it (taken in the Worker by the first exec), gives it back. */
  async exclusive<T>(fn: BackendFn<T>, copy?: CopyStream): Promise<T> {
    const previous = this.#owners;
    let handBack!: () => void;
    this.#owners = new Promise((resolve) => handBack = resolve);
    await previous;
    const ownership = { token: next_token++, held: false };
    try {
      // The Worker runs the idle-time policy itself whenever it gives the backend back.
      return await fn((bytes, identity) => this.#exec(ownership, bytes, identity, copy), () => Promise.resolve());
    } finally {
      handBack();
      if (ownership.held) this.#send({ op: "done", token: ownership.token });
    }
  }

  /** The compute's id in the Worker. */
  get compute_id(): number {
    return this.#attached.compute_id;
  }

  async #exec(
    ownership: { token: number; held: boolean },
    bytes: Uint8Array,
    identity: CallIdentity | undefined,
    copy?: CopyStream,
  ): Promise<Uint8Array> {
    const seq = this.#next_seq++;
    const acquire = !ownership.held;
    ownership.held = true;
    this.#running_seq = seq;
    try {
      const { token } = ownership;
      const compute_id = this.#attached.compute_id;
      const request = {
        op: "exec",
        id: 0,
        token,
        compute_id,
        acquire,
        seq,
        copy: copy !== undefined,
        identity: identityCode(identity),
        bytes,
      } as const;
      const result = await this.#call(request, copy);
      if (result.cancel !== undefined) this.#attached.cancel = result.cancel;
      ownership.held = !result.released;
      return result.bytes;
    } finally {
      this.#running_seq = undefined;
    }
  }

  /** Asks Postgres to cancel the statement running now; false when there is none or it cannot be reached. */
  cancel(): boolean {
    const target = this.#attached.cancel;
    if (target === undefined || this.#running_seq === undefined) return false;
    Atomics.store(new Int32Array(target.control), CONTROL_CANCEL_SEQ, this.#running_seq);
    const memory = new Int32Array(target.memory);
    Atomics.store(memory, target.query_cancel_pending >> 2, 1);
    Atomics.store(memory, target.interrupt_pending >> 2, 1);
    return true;
  }
}
