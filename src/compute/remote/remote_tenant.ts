/**
 * The computes of one tenant on a pageserver, for `tarn compute`: a branch's compute starts on first use (its
 * timeline opened with `remote_timeline.ts`) and keeps running. One connection to the pageserver serves them all;
 * when it is lost, every compute is declared failed (its sessions end) and, at its next use, reconnects, is elected
 * again by the safekeepers and restarts Postgres from what the pageserver holds and the WAL. Nothing acknowledged
 * is lost: the WAL of every acknowledged commit is on a majority of safekeepers.
 *
 * @module
 */
import type { AdminRequest, BranchRow } from "../../branch_admin.ts";
import { Compute, type ComputeOptions, type TimelineStorage } from "../compute.ts";
import { ConfigurationError } from "../../errors.ts";
import type { Logger } from "../../logger.ts";
import { type BranchAt, READ_ONLY_HEAD } from "../../replication/branch_point.ts";
import { parseSafekeeperAddress, type SafekeeperAddress } from "../../replication/safekeeper_client.ts";
import { closeStorage } from "../../timelines.ts";
import { loadArtifacts } from "../engine.ts";
import { pageserverAdmin, pageserverLease } from "../../pageserver/http_client.ts";

/** The lease a replica's read-only compute holds on the point it reads, and how often it is renewed. */
const READER_LEASE = "60s";
const READER_LEASE_RENEW_MS = 30_000;
import type { PageCacheStats } from "../page_cache.ts";
import { formatLsn, type Lsn } from "../../lsn.ts";
import type { RemotePageStats } from "./remote_pages.ts";
import { ComputeFencedError } from "./compute_fenced_error.ts";
import { IdleSuspender } from "./idle_suspender.ts";
import { PageChannel, type PageIo, startPageIoWorker } from "./page_channel.ts";
import { openReaderTimeline, openRemoteTimeline, type RemoteTimeline } from "./remote_timeline.ts";

/** Reconnecting to a lost pageserver tries this often (ms), for at most {@linkcode RECONNECT_LIMIT_MS}. */
const RECONNECT_EVERY_MS = 250;
const RECONNECT_LIMIT_MS = 120_000;

/** One served branch, for `/status` and `/metrics`. */
export type BranchStats = {
  branch: string;
  timeline_id: string;
  term: number;
  /** Times its Postgres failed and restarted from storage. */
  restarts: number;
  page_cache: PageCacheStats;
  /** Requests to the pageserver for pages, the pages they carried, read-ahead pages used, time waited (ms). */
  getpage: RemotePageStats;
  /** The WAL: written and committed ends, and the commits that waited for a majority, how long in all (ms). */
  wal: { end_lsn: string; commit_lsn: string; flushes: number; flush_wait_ms: number };
  /** Why a newer compute took it over, once one has. */
  fenced: string | undefined;
};

/** Options of {@linkcode RemoteTenant.open}. */
export type RemoteTenantOptions = {
  /** The pageserver, `HOST:PORT`. */
  pageserver: string;
  /** The tenant's name on the pageserver (created when missing). */
  tenant: string;
  /** Safekeepers, `HOST:PORT` each: the WAL's durability. */
  safekeepers: string[];
  /** How a compute runs (page cache, checkpoints). */
  compute: Omit<ComputeOptions, "segment_size" | "read_only" | "reopen_storage" | "log">;
  election_timeout_ms?: number;
  /** A branch's compute with no connection for this long is suspended (ms; 0: never). */
  suspend_after_ms?: number;
  /**
   * A bootstrap port of a page I/O Worker started on the main thread ({@linkcode pageIoPort}); without it the
   * tenant starts its own Worker (slow to start when this thread is itself a Worker).
   */
  io?: MessagePort;
  log: Logger;
};

/** A tenant's computes over a pageserver. */
export class RemoteTenant {
  readonly #options: RemoteTenantOptions;
  readonly #address: { hostname: string; port: number };
  readonly #safekeepers: SafekeeperAddress[];
  #channel: PageChannel;
  #tenant_id = "";
  #segment_size = 0;
  readonly #computes = new Map<string, Promise<Compute>>();
  readonly #idle: IdleSuspender;
  readonly #storages = new Set<RemoteTimeline>();
  #reconnecting: Promise<PageChannel> | undefined;
  readonly #io: PageIo;
  readonly #own_io: Worker | undefined;

  private constructor(options: RemoteTenantOptions, channel: PageChannel, io: PageIo, own_io: Worker | undefined) {
    this.#options = options;
    this.#idle = new IdleSuspender(options.suspend_after_ms ?? 0, (branch) => this.#suspendBranch(branch));
    this.#io = io;
    this.#own_io = own_io;
    this.#address = parsePageserver(options.pageserver);
    this.#safekeepers = options.safekeepers.map(parseSafekeeperAddress);
    this.#channel = channel;
  }

  /** Connects to the pageserver and says hello (creating the tenant there when it is new). */
  static async open(options: RemoteTenantOptions): Promise<RemoteTenant> {
    if (options.safekeepers.length === 0) {
      throw new ConfigurationError("a compute on a pageserver needs --safekeepers: they make its WAL durable");
    }
    // Compiling PGlite's WASM takes tens of ms: overlap it with connecting (its error surfaces where it is awaited).
    loadArtifacts().catch(() => {});
    const { hostname, port } = parsePageserver(options.pageserver);
    const own_io = options.io === undefined ? startPageIoWorker() : undefined;
    const io = options.io ?? own_io!;
    let channel: PageChannel | undefined;
    try {
      channel = await PageChannel.open(io, hostname, port);
      const tenant = new RemoteTenant(options, channel, io, own_io);
      await tenant.#hello(channel);
      return tenant;
    } catch (error) {
      channel?.close();
      own_io?.terminate();
      throw error;
    }
  }

  async #hello(channel: PageChannel): Promise<void> {
    const reply = await channel.request({ type: "hello", tenant: this.#options.tenant, create: true });
    if (reply.type !== "hello_ok") throw new Error(`hello answered with ${reply.type}`);
    this.#tenant_id = reply.tenant_id;
    this.#segment_size = reply.segment_size;
    channel.on_failure = (error) => this.#lost(error);
    channel.on_fenced = (timeline_id, error) => this.#fenced(timeline_id, error.message);
  }

  /** A newer compute took `timeline_id` over: its compute fails, and stays failed (`ComputeFencedError`). */
  #fenced(timeline_id: string, reason: string): void {
    for (const storage of this.#storages) {
      if (storage.remote.timeline_id !== timeline_id || storage.remote.fenced !== undefined) continue;
      storage.remote.fenced = reason;
      this.#options.log("fenced", { branch: storage.branch, timeline_id, reason });
      const error = new ComputeFencedError(storage.branch, reason);
      this.#computes.get(storage.branch)?.then((c) => c.failStorage(error), () => {});
    }
  }

  /** The connection was lost: every compute fails now, and reopens its storage at its next use. */
  #lost(error: Error): void {
    this.#options.log("pageserver_lost", { error: error.message });
    for (const compute of this.#computes.values()) compute.then((c) => c.failStorage(error), () => {});
  }

  /** The head of `branch` as the pageserver has it: the WAL it has received from the safekeepers. */
  async headLsn(branch: string): Promise<Lsn> {
    const channel = this.#channel.failure === undefined ? this.#channel : await this.#reconnect();
    const reply = await channel.request({ type: "branch_info", branch });
    if (reply.type !== "branch_info_ok") throw new Error(`branch_info answered with ${reply.type}`);
    return reply.info.wal_end_lsn;
  }

  /**
   * A branch's compute, started on first use (or again after a suspension); once its last user released it, it is
   * suspended after `suspend_after_ms`.
   */
  async attachCompute(
    branch: string,
    at?: BranchAt,
  ): Promise<{ compute: Compute; release: () => Promise<void>; lsn?: Lsn }> {
    if (at === READ_ONLY_HEAD) return await this.#startReader(branch);
    if (at !== undefined) {
      throw new ConfigurationError("a compute on a pageserver serves branch heads; make a branch at that point");
    }
    await this.#idle.attach(branch);
    let released = false;
    const release = () => {
      if (!released) this.#idle.release(branch);
      released = true;
      return Promise.resolve();
    };
    let compute = this.#computes.get(branch);
    if (compute === undefined) {
      compute = this.#start(branch);
      this.#computes.set(branch, compute);
      compute.catch(() => this.#computes.delete(branch));
    }
    try {
      return { compute: await compute, release };
    } catch (error) {
      await release();
      throw error;
    }
  }

  /** Stops a branch's compute (what is committed reaches the pageserver) and lets go of its storage. */
  async #suspendBranch(branch: string): Promise<void> {
    const compute = this.#computes.get(branch);
    if (compute === undefined) return;
    this.#computes.delete(branch);
    const started_ms = performance.now();
    try {
      await (await compute).stop();
    } catch (error) {
      this.#options.log("compute_suspend_failed", { branch, error: String(error) });
    }
    for (const storage of [...this.#storages]) if (storage.branch === branch) await this.#closeTimeline(storage);
    this.#options.log("compute_suspended", { branch, stop_ms: Math.round(performance.now() - started_ms) });
  }

  /** A read-only compute at the branch's head (a replica's next generation), and its release. */
  async #startReader(branch: string): Promise<{ compute: Compute; release: () => Promise<void>; lsn: Lsn }> {
    const channel = this.#channel.failure === undefined ? this.#channel : await this.#reconnect();
    const { storage, lsn, pages_lsn } = await openReaderTimeline({ channel, branch, segment_size: this.#segment_size });
    // GC keeps what the reader reads for as long as it lives: a lease, renewed at half its term.
    const lease = () =>
      pageserverLease(this.#options.pageserver, this.#options.tenant, branch, formatLsn(pages_lsn), READER_LEASE);
    let renewal: ReturnType<typeof setInterval> | undefined;
    try {
      await lease();
      renewal = setInterval(() => {
        lease().catch((error) => this.#options.log("replica_lease_failed", { branch, error: String(error) }));
      }, READER_LEASE_RENEW_MS);
      Deno.unrefTimer(renewal);
      const compute = await Compute.start(storage, {
        ...this.#options.compute,
        segment_size: this.#segment_size,
        read_only: true,
        log: this.#options.log,
        settings: [...this.#options.compute.settings ?? [], `tarn.replay_lsn=${formatLsn(lsn)}`],
      });
      const release = async () => {
        clearInterval(renewal);
        await compute.stop();
        await closeStorage(storage);
      };
      return { compute, release, lsn };
    } catch (error) {
      clearInterval(renewal);
      await closeStorage(storage);
      throw error;
    }
  }

  async #start(branch: string): Promise<Compute> {
    const storage = await this.#openTimeline(branch);
    return await Compute.start(storage, {
      ...this.#options.compute,
      segment_size: this.#segment_size,
      read_only: false,
      log: this.#options.log,
      reopen_storage: async (failed) => {
        const fenced = (failed as RemoteTimeline).fenced();
        await this.#closeTimeline(failed);
        if (fenced !== undefined) throw new ComputeFencedError(branch, fenced);
        return await this.#openTimeline(branch);
      },
    });
  }

  async #openTimeline(branch: string): Promise<RemoteTimeline> {
    const channel = this.#channel.failure === undefined ? this.#channel : await this.#reconnect();
    const storage = await openRemoteTimeline({
      channel,
      branch,
      tenant_id: this.#tenant_id,
      segment_size: this.#segment_size,
      safekeepers: this.#safekeepers,
      election_timeout_ms: this.#options.election_timeout_ms ?? 30_000,
      log: this.#options.log,
    });
    this.#storages.add(storage);
    return storage;
  }

  async #closeTimeline(storage: TimelineStorage): Promise<void> {
    this.#storages.delete(storage as RemoteTimeline);
    await closeStorage(storage).catch(() => {});
  }

  #reconnect(): Promise<PageChannel> {
    this.#reconnecting ??= (async () => {
      const deadline_ms = performance.now() + RECONNECT_LIMIT_MS;
      for (;;) {
        try {
          const channel = await PageChannel.open(this.#io, this.#address.hostname, this.#address.port);
          await this.#hello(channel);
          this.#channel.close();
          this.#channel = channel;
          this.#options.log("pageserver_reconnected", { pageserver: this.#options.pageserver });
          return channel;
        } catch (error) {
          if (performance.now() > deadline_ms) throw error;
          await new Promise((resolve) => setTimeout(resolve, RECONNECT_EVERY_MS));
        }
      }
    })().finally(() => this.#reconnecting = undefined);
    return this.#reconnecting;
  }

  /** What `/status` and `/metrics` show of each branch this compute serves. */
  async stats(): Promise<BranchStats[]> {
    const out: BranchStats[] = [];
    for (const storage of this.#storages) {
      const compute = await this.#computes.get(storage.branch)?.catch(() => undefined);
      const { quorum, remote } = storage;
      out.push({
        branch: storage.branch,
        timeline_id: remote.timeline_id,
        term: Number(quorum.term),
        restarts: compute?.restarts ?? 0,
        page_cache: compute?.page_cache ?? { hits: 0, misses: 0, evictions: 0 },
        getpage: { ...remote.stats },
        wal: {
          end_lsn: formatLsn(quorum.end_lsn),
          commit_lsn: formatLsn(quorum.flush_lsn),
          flushes: quorum.stats.flushes,
          flush_wait_ms: quorum.stats.flush_wait_ms,
        },
        fenced: storage.fenced(),
      });
    }
    return out;
  }

  /** Branch administration runs on the pageserver, through its HTTP API. */
  admin(request: AdminRequest): Promise<BranchRow[]> {
    return pageserverAdmin(this.#options.pageserver, this.#options.tenant, request);
  }

  /** Stops every compute cleanly (what is committed reaches the pageserver) and closes the connection. */
  async close(): Promise<void> {
    await this.#idle.close();
    for (const compute of this.#computes.values()) await (await compute.catch(() => undefined))?.stop().catch(() => {});
    this.#computes.clear();
    for (const storage of [...this.#storages]) await this.#closeTimeline(storage);
    this.#channel.close();
    this.#own_io?.terminate();
  }
}

function parsePageserver(text: string): { hostname: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s]+)):(\d{1,5})$/.exec(text);
  if (match === null || Number(match[3]) > 65535) {
    throw new ConfigurationError(`--pageserver ${text} is not HOST:PORT`);
  }
  return { hostname: match[1] ?? match[2], port: Number(match[3]) };
}
