/**
 * TarnFS: the file system PostgreSQL (PGlite) runs on. Nothing it writes stays in the compute: WAL goes to a
 * {@linkcode WalSink} as LSN ranges, durable files go to a {@linkcode PageSink} as page versions tagged with the WAL
 * end observed at that moment, and ephemeral files stay in memory (see `file_class.ts`). Reads go through a bounded
 * {@linkcode PageCache} to the page store.
 *
 * @module
 */
import { BaseFilesystem, ERRNO_CODES, type FsStats } from "@electric-sql/pglite/basefs";
import { type Lsn, LSN_MAX, parseSegmentFileName } from "../lsn.ts";
import type { WalSink, WalSource } from "../replication/wal_api.ts";
import { BLOCK_SIZE, type PageSink, type PageSource } from "../storage/page_api.ts";
import { computeDelta } from "../storage/page_delta.ts";
import { EphemeralFile } from "./ephemeral_files.ts";
import { classifyFile, type FileClass, normalizePath } from "./file_class.ts";
import { PageCache } from "./page_cache.ts";
import { WalShipper } from "./wal_shipper.ts";
import { WasmHandles } from "./wasm_snapshot.ts";

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

/** What a {@linkcode TarnFS} writes to and reads from. */
export type TarnFsOptions = {
  /** The page store (versioned durable files). */
  pages: PageSource & PageSink;
  /** The WAL log (or quorum). */
  wal: WalSink & WalSource;
  /** WAL segment size in bytes, from pg_control. */
  segment_size: number;
  /** Names of the WAL segment files present at start (the ones recovery reads). */
  wal_segments: Iterable<string>;
  /** Pages the compute's cache holds. */
  page_cache_pages: number;
  /** The durability barrier: resolves when all WAL written so far is durable. */
  on_sync: () => Promise<void>;
};

/** An error Emscripten turns into an errno for Postgres. */
class FsError extends Error {
  readonly code: number;
  constructor(code: keyof typeof ERRNO_CODES, path: string) {
    super(`${code}: ${path}`);
    this.code = ERRNO_CODES[code];
  }
}

type OpenFile = { path: string; file_class: FileClass };

/** What a rewind puts back in a {@linkcode TarnFS}: the compute-local files. */
export type TarnFsState = { ephemeral: Map<string, EphemeralFile>; wal_segments: Set<string> };

/**
 * PGlite's file system for a Tarn compute. It may be made before its storage is known (a parked engine,
 * `engine_pool.ts`): PGlite then waits in {@linkcode TarnFS.initialSyncFs} until {@linkcode TarnFS.bind} names it.
 */
export class TarnFS extends BaseFilesystem {
  #pages!: PageSource & PageSink;
  #wal!: WalSink & WalSource;
  #segment_size!: number;
  #on_sync!: () => Promise<void>;
  #shipper!: WalShipper;
  #wal_segments!: Set<string>;
  readonly #ephemeral = new Map<string, EphemeralFile>();
  readonly #sizes = new Map<string, number>();
  readonly #fds = new Map<number, OpenFile>();
  readonly #mtime_ms = Date.now();
  #next_fd = 1;
  #bound = false;
  readonly #binding = Promise.withResolvers<void>();
  readonly #waiting = Promise.withResolvers<void>();
  /** The compute's page cache (exposed for metrics). */
  cache!: PageCache;
  /** PGlite's internals, captured at start, for snapshots (`wasm_snapshot.ts`). */
  readonly wasm = new WasmHandles();

  /** @param options where WAL and pages go; without them, PGlite waits for {@linkcode TarnFS.bind} */
  constructor(options?: TarnFsOptions) {
    super("/pgdata");
    if (options !== undefined) this.bind(options);
  }

  /** Names the storage: PGlite, waiting in {@linkcode TarnFS.initialSyncFs}, goes on to start Postgres on it. */
  bind(options: TarnFsOptions): void {
    if (this.#bound) throw new Error("TarnFS.bind: the file system already has its storage");
    this.#bound = true;
    this.#pages = options.pages;
    this.#wal = options.wal;
    this.#segment_size = options.segment_size;
    this.#on_sync = options.on_sync;
    this.#shipper = new WalShipper(options.wal);
    this.#wal_segments = new Set([...options.wal_segments].map((name) => "pg_wal/" + name));
    this.cache = new PageCache(options.page_cache_pages);
    this.#binding.resolve();
  }

  /** Resolves when PGlite has made its runtime and unpacked its files, and waits for the storage. */
  get waiting(): Promise<void> {
    return this.#waiting.promise;
  }

  /** PGlite calls this once its runtime is ready, before it reads the data directory. */
  override initialSyncFs(): Promise<void> {
    this.#waiting.resolve();
    return this.#binding.promise;
  }

  /** Lets {@linkcode WasmHandles} capture the instance PGlite creates. */
  // deno-lint-ignore no-explicit-any -- PGlite's Emscripten options are untyped.
  override async init(pg: any, emscripten_options: any): Promise<{ emscriptenOpts: any }> {
    const { emscriptenOpts } = await super.init(pg, emscripten_options);
    return { emscriptenOpts: this.wasm.capture(emscriptenOpts) };
  }

  /** The compute-local files, copied, for a later {@linkcode restoreState}. */
  saveState(): TarnFsState {
    const ephemeral = new Map([...this.#ephemeral].map(([path, file]) => [path, file.clone()]));
    return { ephemeral, wal_segments: new Set(this.#wal_segments) };
  }

  /** Puts back the compute-local files of `state` and forgets what the rewound storage no longer has. */
  restoreState(state: TarnFsState): void {
    this.#ephemeral.clear();
    for (const [path, file] of state.ephemeral) this.#ephemeral.set(path, file.clone());
    this.#wal_segments.clear();
    for (const name of state.wal_segments) this.#wal_segments.add(name);
    this.#sizes.clear();
    this.cache.clear();
    this.#shipper.reset();
  }

  /** Postgres's only durability barrier: awaited after every query unless durability is relaxed. */
  override async syncToFs(_relaxed?: boolean): Promise<void> {
    await this.#on_sync();
  }

  /** The WAL end the compute has sent: the LSN tag of page versions written now. */
  get #lsn(): Lsn {
    return this.#wal.end_lsn;
  }

  chmod(path: string, _mode: number): void {
    this.lstat(path);
  }

  close(fd: number): void {
    this.#fds.delete(fd);
  }

  fstat(fd: number): FsStats {
    return this.lstat(this.#fd(fd).path);
  }

  lstat(path: string): FsStats {
    const p = normalizePath(path);
    const ephemeral = this.#ephemeral.get(p);
    if (ephemeral !== undefined) return this.#stats(S_IFREG | 0o600, ephemeral.size_bytes);
    if (this.#wal_segments.has(p)) return this.#stats(S_IFREG | 0o600, this.#segment_size);
    if (p === "") return this.#stats(S_IFDIR | 0o700, 4096);
    const meta = this.#pages.stat(p, LSN_MAX);
    if (meta === undefined) throw new FsError("ENOENT", p);
    if (meta.kind === "dir") return this.#stats(S_IFDIR | 0o700, 4096);
    return this.#stats(S_IFREG | 0o600, this.#sizeOf(p));
  }

  mkdir(path: string, options?: { recursive?: boolean; mode?: number }): void {
    const p = normalizePath(path);
    if (this.#exists(p)) {
      if (options?.recursive) return;
      throw new FsError("EEXIST", p);
    }
    const parent = parentOf(p);
    if (!this.#exists(parent)) {
      if (!options?.recursive) throw new FsError("ENOENT", parent);
      this.mkdir(parent, options);
    }
    this.#pages.putEvent(p, this.#lsn, { kind: "mkdir" });
  }

  open(path: string, _flags?: string, _mode?: number): number {
    const p = normalizePath(path);
    const stats = this.lstat(p);
    if ((stats.mode & S_IFDIR) === S_IFDIR) throw new FsError("EISDIR", p);
    const fd = this.#next_fd++;
    this.#fds.set(fd, { path: p, file_class: classifyFile(p) });
    return fd;
  }

  readdir(path: string): string[] {
    const p = normalizePath(path);
    const names = new Set(this.#pages.readdir(p, LSN_MAX));
    const prefix = p === "" ? "" : p + "/";
    for (const file of [...this.#ephemeral.keys(), ...this.#wal_segments]) {
      if (file.startsWith(prefix) && !file.slice(prefix.length).includes("/")) names.add(file.slice(prefix.length));
    }
    return [...names];
  }

  read(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number {
    const { path, file_class } = this.#fd(fd);
    if (file_class === "ephemeral") return this.#ephemeralFile(path).read(buffer, offset, length, position);
    if (file_class === "wal") return this.#readWal(path, buffer, offset, length, position);
    return this.#readDurable(path, buffer, offset, length, position);
  }

  rename(oldPath: string, newPath: string): void {
    const from = normalizePath(oldPath);
    const to = normalizePath(newPath);
    const from_class = classifyFile(from);
    const to_class = classifyFile(to);
    if (from_class === "ephemeral" && to_class === "ephemeral") {
      this.#ephemeral.set(to, this.#ephemeralFile(from));
      this.#ephemeral.delete(from);
    } else if (to_class === "wal" && (from_class === "wal" || this.#ephemeralFile(from).isAllZero())) {
      // A new (or, with wal_recycle=on, recycled) segment: its bytes are whatever the WAL log holds.
      this.#wal_segments.add(to);
      this.unlink(from);
    } else {
      const bytes = this.#readAll(from);
      this.writeFile(to, bytes);
      this.unlink(from);
    }
    for (const open of this.#fds.values()) {
      if (open.path === from) Object.assign(open, { path: to, file_class: to_class });
    }
  }

  rmdir(path: string): void {
    const p = normalizePath(path);
    if (this.readdir(p).length > 0) throw new FsError("ENOTEMPTY", p);
    this.#pages.putEvent(p, this.#lsn, { kind: "rmdir" });
  }

  truncate(path: string, len = 0): void {
    const p = normalizePath(path);
    const file_class = classifyFile(p);
    if (file_class === "ephemeral") return this.#ephemeralFile(p).truncate(len);
    if (file_class === "wal") return; // segments are virtual: their size is always the segment size
    const size = this.#sizeOf(p);
    if (len === size) return;
    if (len < size) {
      const partial = len % BLOCK_SIZE;
      const last = Math.floor(len / BLOCK_SIZE);
      // Zero the tail of a partial last block, so that growing the file again reads zeros there.
      if (partial !== 0) this.#writeDurable(p, new Uint8Array(BLOCK_SIZE - partial), len, false);
      this.cache.dropFile(p, partial === 0 ? last : last + 1);
    }
    this.#resize(p, len);
  }

  unlink(path: string): void {
    const p = normalizePath(path);
    const file_class = classifyFile(p);
    if (file_class === "ephemeral") {
      if (!this.#ephemeral.delete(p)) throw new FsError("ENOENT", p);
    } else if (file_class === "wal") {
      // The WAL log keeps the bytes for as long as its retention says; the compute just forgets the file.
      this.#wal_segments.delete(p);
    } else {
      if (this.#pages.stat(p, LSN_MAX)?.kind !== "file") throw new FsError("ENOENT", p);
      this.#pages.putEvent(p, this.#lsn, { kind: "unlink" });
      this.cache.dropFile(p);
      this.#sizes.delete(p);
    }
  }

  utimes(path: string, _atime: number, _mtime: number): void {
    this.lstat(path);
  }

  writeFile(path: string, data: string | Uint8Array, _options?: { encoding?: string; mode?: number; flag?: string }) {
    const p = normalizePath(path);
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    if (!this.#exists(parentOf(p))) throw new FsError("ENOENT", parentOf(p));
    const file_class = classifyFile(p);
    if (file_class === "ephemeral") {
      const file = new EphemeralFile();
      file.write(bytes, 0);
      this.#ephemeral.set(p, file);
    } else if (file_class === "wal") {
      this.#wal_segments.add(p);
      if (bytes.length > 0) this.#shipper.write(this.#segmentStart(p), bytes);
    } else {
      const exists = this.#pages.stat(p, LSN_MAX)?.kind === "file";
      if (!exists) {
        this.#pages.putEvent(p, this.#lsn, { kind: "create" });
        this.#sizes.set(p, 0);
      } else if (this.#sizeOf(p) > 0) {
        this.truncate(p, 0);
      }
      this.cache.dropFile(p);
      if (bytes.length > 0) this.#writeDurable(p, bytes, 0, true);
    }
  }

  write(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number {
    const { path, file_class } = this.#fd(fd);
    // PGlite hands over the WASM heap's ArrayBuffer here, not a Uint8Array.
    const heap: ArrayBufferLike = buffer instanceof Uint8Array ? buffer.buffer : buffer;
    const base = buffer instanceof Uint8Array ? buffer.byteOffset : 0;
    const bytes = new Uint8Array(heap, base + offset, length);
    if (file_class === "ephemeral") this.#ephemeralFile(path).write(bytes, position);
    else if (file_class === "wal") this.#shipper.write(this.#segmentStart(path) + BigInt(position), bytes);
    else this.#writeDurable(path, bytes, position, true);
    return length;
  }

  #writeDurable(path: string, bytes: Uint8Array, position: number, grow: boolean): void {
    const lsn = this.#lsn;
    const size = this.#sizeOf(path);
    for (let done = 0; done < bytes.length;) {
      const at = position + done;
      const blkno = Math.floor(at / BLOCK_SIZE);
      const within = at - blkno * BLOCK_SIZE;
      const n = Math.min(BLOCK_SIZE - within, bytes.length - done);
      const cached = this.cache.get(path, blkno);
      let next: Uint8Array;
      if (n === BLOCK_SIZE) {
        next = bytes.slice(done, done + n);
      } else {
        next = (cached ?? this.#page(path, blkno, size)).slice();
        next.set(bytes.subarray(done, done + n), within);
      }
      if (cached === undefined) {
        this.#pages.putPage(path, blkno, lsn, { kind: "image", bytes: next });
      } else {
        const ranges = computeDelta(cached, next);
        if (ranges.length > 0) this.#pages.putPage(path, blkno, lsn, { kind: "delta", ranges });
      }
      this.cache.set(path, blkno, next);
      done += n;
    }
    if (grow && position + bytes.length > size) this.#resize(path, position + bytes.length);
  }

  #resize(path: string, size_bytes: number): void {
    this.#pages.putEvent(path, this.#lsn, { kind: "resize", size_bytes });
    this.#sizes.set(path, size_bytes);
  }

  #readDurable(path: string, target: Uint8Array, offset: number, length: number, position: number): number {
    const size = this.#sizeOf(path);
    const end = Math.min(position + length, size);
    let done = 0;
    for (let at = position; at < end;) {
      const blkno = Math.floor(at / BLOCK_SIZE);
      const within = at - blkno * BLOCK_SIZE;
      const n = Math.min(BLOCK_SIZE - within, end - at);
      const page = this.#page(path, blkno, size);
      target.set(page.subarray(within, within + n), offset + done);
      at += n;
      done += n;
    }
    return done;
  }

  /** The newest version of a page: cache, else the page store; zeros past the file's end. */
  #page(path: string, blkno: number, size_bytes: number): Uint8Array {
    const cached = this.cache.get(path, blkno);
    if (cached !== undefined) return cached;
    if (blkno * BLOCK_SIZE >= size_bytes) return new Uint8Array(BLOCK_SIZE);
    const page = this.#pages.getPage(path, blkno, LSN_MAX) ?? new Uint8Array(BLOCK_SIZE);
    this.cache.set(path, blkno, page);
    return page;
  }

  #readWal(path: string, target: Uint8Array, offset: number, length: number, position: number): number {
    const n = Math.max(0, Math.min(length, this.#segment_size - position));
    if (n === 0) return 0;
    const lsn_start = this.#segmentStart(path) + BigInt(position);
    const held_from = this.#wal.start_lsn;
    const lsn_end = lsn_start + BigInt(n);
    if (lsn_end <= held_from || this.#wal.end_lsn === 0n) {
      target.fill(0, offset, offset + n);
    } else {
      const from = lsn_start < held_from ? held_from : lsn_start;
      const skip = Number(from - lsn_start);
      target.fill(0, offset, offset + skip);
      target.set(this.#wal.read(from, lsn_end), offset + skip);
    }
    return n;
  }

  #readAll(path: string): Uint8Array {
    const fd = this.open(path);
    try {
      const size = this.fstat(fd).size;
      const bytes = new Uint8Array(size);
      this.read(fd, bytes, 0, size, 0);
      return bytes;
    } finally {
      this.close(fd);
    }
  }

  #sizeOf(path: string): number {
    let size = this.#sizes.get(path);
    if (size === undefined) {
      const meta = this.#pages.stat(path, LSN_MAX);
      if (meta?.kind !== "file") throw new FsError("ENOENT", path);
      size = meta.size_bytes;
      this.#sizes.set(path, size);
    }
    return size;
  }

  #exists(path: string): boolean {
    if (path === "") return true;
    return this.#ephemeral.has(path) || this.#wal_segments.has(path) || this.#pages.stat(path, LSN_MAX) !== undefined;
  }

  #segmentStart(path: string): Lsn {
    const parsed = parseSegmentFileName(path.slice("pg_wal/".length), this.#segment_size);
    if (parsed === undefined) throw new FsError("EINVAL", path);
    return parsed.segno * BigInt(this.#segment_size);
  }

  #ephemeralFile(path: string): EphemeralFile {
    const file = this.#ephemeral.get(path);
    if (file === undefined) throw new FsError("ENOENT", path);
    return file;
  }

  #fd(fd: number): OpenFile {
    const open = this.#fds.get(fd);
    if (open === undefined) throw new FsError("EBADF", String(fd));
    return open;
  }

  #stats(mode: number, size: number): FsStats {
    const t = this.#mtime_ms;
    return {
      dev: 0,
      ino: 0,
      mode,
      nlink: 1,
      uid: 0,
      gid: 0,
      rdev: 0,
      size,
      blksize: 4096,
      blocks: Math.ceil(size / 512),
      atime: t,
      mtime: t,
      ctime: t,
    };
  }
}

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}
