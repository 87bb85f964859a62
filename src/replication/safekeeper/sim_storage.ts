/**
 * {@linkcode SafekeeperStorage} for the deterministic simulation: a {@linkcode SimDisk} holds only what was synced
 * (or persisted), survives crashes, and a crash keeps a PRNG-chosen outcome of the writes in flight, as a real disk
 * may. Faults (a disk-full write, a failed fsync or state write) are injected by the simulation.
 *
 * @module
 */
import assert from "node:assert/strict";
import { formatLsn, type Lsn, LSN_MAX } from "../../lsn.ts";
import type { Prng } from "./prng.ts";
import { EMPTY_STATE, type SafekeeperState, type SafekeeperStorage } from "./storage.ts";
import { minLsn } from "./term_history.ts";

/** An injected storage failure (disk full, fsync error). */
export class StorageFault extends Error {
  /** @param operation the operation that failed */
  constructor(operation: string) {
    super(`injected fault: ${operation} failed`);
    this.name = "StorageFault";
  }
}

/** WAL bytes from `start_lsn`, in a buffer grown by doubling. */
class WalImage {
  start_lsn: Lsn = 0n;
  end_lsn: Lsn = 0n;
  bytes = new Uint8Array(256);

  /** Copies [lsn_start, lsn_end) of `from` over this image, which must reach `lsn_start` (or be empty). */
  copyRange(from: WalImage, lsn_start: Lsn, lsn_end: Lsn): void {
    if (this.start_lsn === this.end_lsn) this.start_lsn = this.end_lsn = lsn_start;
    assert(lsn_start <= this.end_lsn && lsn_start >= from.start_lsn && lsn_end <= from.end_lsn);
    this.#reserve(Number(lsn_end - this.start_lsn));
    this.bytes.set(from.slice(lsn_start, lsn_end), Number(lsn_start - this.start_lsn));
    this.end_lsn = lsn_end;
  }

  /** Cuts the image at `lsn`, or moves an empty one there. */
  cut(lsn: Lsn): void {
    if (this.start_lsn === this.end_lsn) this.start_lsn = lsn;
    assert(lsn >= this.start_lsn && lsn <= this.end_lsn || this.start_lsn === lsn, `cut at ${formatLsn(lsn)}`);
    this.end_lsn = lsn;
  }

  /** Drops the bytes below `lsn` (within the image). */
  dropBefore(lsn: Lsn): void {
    assert(lsn >= this.start_lsn && lsn <= this.end_lsn, `drop below ${formatLsn(lsn)}`);
    this.bytes = this.bytes.slice(Number(lsn - this.start_lsn));
    this.start_lsn = lsn;
  }

  slice(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    return this.bytes.subarray(Number(lsn_start - this.start_lsn), Number(lsn_end - this.start_lsn));
  }

  write(lsn_start: Lsn, data: Uint8Array): void {
    assert(lsn_start === this.end_lsn);
    this.#reserve(Number(lsn_start - this.start_lsn) + data.length);
    this.bytes.set(data, Number(lsn_start - this.start_lsn));
    this.end_lsn = lsn_start + BigInt(data.length);
  }

  #reserve(size_bytes: number): void {
    if (size_bytes <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(size_bytes, this.bytes.length * 2));
    grown.set(this.bytes);
    this.bytes = grown;
  }
}

/** What one simulated safekeeper's disk holds durably: it outlives every {@linkcode SimStorage} opened on it. */
export class SimDisk {
  /** The state persisted last. */
  state: SafekeeperState = EMPTY_STATE;
  /** The durable WAL. */
  readonly wal = new WalImage();
  /** The lowest LSN whose durable byte changed since the simulation last looked (LSN_MAX when none). */
  changed_from_lsn: Lsn = LSN_MAX;
  /** Storage operations left before one fails; negative when no fault is armed. */
  fault_countdown = -1;
  /** The storage open on this disk, whose unsynced writes a crash may or may not keep. */
  open_storage: SimStorage | undefined;

  /** @param prng decides what faults and crashes keep */
  constructor(readonly prng: Prng) {}

  /** The durable WAL of [lsn_start, lsn_end), which must be held. */
  readWal(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    assert(lsn_start >= this.wal.start_lsn && lsn_end <= this.wal.end_lsn, "durable read out of range");
    return this.wal.slice(lsn_start, lsn_end);
  }

  /** The end of the durable WAL. */
  get wal_end_lsn(): Lsn {
    return this.wal.end_lsn;
  }

  /** Opens the disk as a safekeeper process does after a (re)start. */
  open(): SimStorage {
    this.open_storage = new SimStorage(this);
    return this.open_storage;
  }

  /**
   * The process dies: of the writes since the last sync, keeps none, or a prefix of the new WAL, or (where a
   * truncation was pending) a prefix of the old WAL that still reaches the truncation point.
   */
  crash(): string {
    const prng = this.prng;
    const storage = this.open_storage;
    this.open_storage = undefined;
    if (storage === undefined) return "was down";
    const volatile = storage.volatile;
    const empty = this.wal.start_lsn === this.wal.end_lsn;
    const low_lsn = empty ? volatile.start_lsn : minLsn(storage.lowest_cut_lsn, this.wal.end_lsn);
    const outcome = prng.int(3);
    if (outcome === 1 && !empty && low_lsn < this.wal.end_lsn) {
      this.wal.cut(prng.between(low_lsn, this.wal.end_lsn));
      this.changed_from_lsn = minLsn(this.changed_from_lsn, this.wal.end_lsn);
      return `kept the old WAL up to ${formatLsn(this.wal.end_lsn)}`;
    }
    if (outcome === 2 && volatile.end_lsn > low_lsn) {
      const end_lsn = prng.between(low_lsn, volatile.end_lsn);
      this.wal.cut(low_lsn);
      this.wal.copyRange(volatile, low_lsn, end_lsn);
      this.changed_from_lsn = minLsn(this.changed_from_lsn, low_lsn);
      return `kept the new WAL up to ${formatLsn(end_lsn)}`;
    }
    return "kept what was synced";
  }

  /** Counts an operation down to an armed fault. */
  maybeFail(operation: string): void {
    if (this.fault_countdown < 0) return;
    if (this.fault_countdown-- === 0) throw new StorageFault(operation);
  }

  /** Persists `state` atomically, or fails leaving the old state or the new one (by coin: rename is atomic). */
  persist(state: SafekeeperState): void {
    if (this.fault_countdown === 0 && this.prng.chance(0.5)) this.state = state;
    this.maybeFail("state write");
    this.state = state;
  }
}

/** A safekeeper process's view of its {@linkcode SimDisk}: writes land in memory until synced. */
export class SimStorage implements SafekeeperStorage {
  readonly #disk: SimDisk;
  /** The WAL as the process sees it, synced or not. */
  readonly volatile = new WalImage();
  /** The lowest truncation point since the last sync (LSN_MAX when none). */
  lowest_cut_lsn: Lsn = LSN_MAX;
  #flush_lsn: Lsn;

  /** @param disk the disk this process reads at start */
  constructor(disk: SimDisk) {
    this.#disk = disk;
    const wal = disk.wal;
    // Like WalLog, an empty log keeps no position across a restart.
    if (wal.end_lsn > wal.start_lsn) this.volatile.copyRange(wal, wal.start_lsn, wal.end_lsn);
    this.#flush_lsn = this.volatile.end_lsn;
  }

  /** The persisted state. */
  loadState(): Promise<SafekeeperState> {
    return Promise.resolve(this.#disk.state);
  }

  /** Persists atomically. */
  persistState(state: SafekeeperState): Promise<void> {
    this.#disk.persist(state);
    return Promise.resolve();
  }

  /** The first LSN held. */
  get wal_start_lsn(): Lsn {
    return this.volatile.start_lsn;
  }

  /** The end of the WAL written. */
  get wal_end_lsn(): Lsn {
    return this.volatile.end_lsn;
  }

  /** The end of the durable WAL. */
  get wal_flush_lsn(): Lsn {
    return this.#flush_lsn;
  }

  /** Writes at the end, in memory. */
  writeWal(lsn_start: Lsn, bytes: Uint8Array): void {
    this.#disk.maybeFail("WAL write");
    this.volatile.write(lsn_start, bytes);
  }

  /** Cuts the WAL in memory; the cut reaches the disk at the next sync. */
  truncateWal(lsn: Lsn): void {
    if (this.volatile.start_lsn === this.volatile.end_lsn) {
      this.volatile.cut(lsn);
      this.#flush_lsn = lsn;
      return;
    }
    this.volatile.cut(lsn);
    this.lowest_cut_lsn = minLsn(this.lowest_cut_lsn, lsn);
    this.#flush_lsn = minLsn(this.#flush_lsn, lsn);
  }

  /** Drops the WAL below `lsn` in memory and on the disk. */
  removeWalBefore(lsn: Lsn): void {
    assert(lsn <= this.#flush_lsn, "removing WAL that is not durable");
    if (lsn > this.volatile.start_lsn) this.volatile.dropBefore(lsn);
    if (lsn > this.#disk.wal.start_lsn && lsn <= this.#disk.wal.end_lsn) this.#disk.wal.dropBefore(lsn);
  }

  /** Copies what changed since the last sync to the disk. */
  syncWal(): Promise<Lsn> {
    this.#disk.maybeFail("fsync");
    const disk = this.#disk.wal;
    const from_lsn = disk.start_lsn === disk.end_lsn
      ? this.volatile.start_lsn
      : minLsn(this.lowest_cut_lsn, disk.end_lsn);
    disk.cut(from_lsn);
    disk.copyRange(this.volatile, from_lsn, this.volatile.end_lsn);
    this.#disk.changed_from_lsn = minLsn(this.#disk.changed_from_lsn, from_lsn);
    this.lowest_cut_lsn = LSN_MAX;
    this.#flush_lsn = this.volatile.end_lsn;
    return Promise.resolve(this.#flush_lsn);
  }

  /** Reads the WAL as the process sees it. */
  readWal(lsn_start: Lsn, lsn_end: Lsn): Uint8Array {
    assert(lsn_start >= this.volatile.start_lsn && lsn_end <= this.volatile.end_lsn, "read out of range");
    return this.volatile.slice(lsn_start, lsn_end).slice();
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
