/**
 * Snapshots of an idle PGlite instance, for rewinding it in place: its WASM linear memory up to the heap break,
 * the stack pointer, and the Emscripten file-descriptor table Postgres relies on (open files at the same fds and
 * offsets, the latch self-pipe), cwd and umask. With the compute's storage rewound to the same point, the instance
 * is exactly as it was when the snapshot was taken, in a few milliseconds instead of a restart.
 *
 * This depends on PGlite 0.5.16's internals: {@linkcode checkRewindable} refuses what it cannot restore (a
 * transaction in progress, a library loaded after the snapshot), and the caller falls back to a normal start.
 *
 * @module
 */
// deno-lint-ignore-file no-explicit-any -- Emscripten's module and WASM exports are untyped.

const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_TRUNC = 0o1000;
/** Where PGlite mounts PGDATA in its Emscripten file system. */
const PGDATA_MOUNT = "/pglite/data";
/** Scratch fd numbers, far above what Postgres uses, for moving streams into place. */
const SCRATCH_FD_BASE = 4000;

/** One open Emscripten stream. */
type StreamRecord = {
  fd: number;
  path: string;
  flags: number;
  position: number;
  pipe?: { peer_fd: number; read_end: boolean };
};

/** The unit of a sparse memory copy: most of a fresh instance's heap is still zero. */
const CHUNK_BYTES = 64 * 1024;

/**
 * What a rewind restores. `memory` holds the non-zero chunks of the heap below `heap_break`, in order; `chunks`
 * their indices (chunk i covers [i * 64 KiB, (i + 1) * 64 KiB)); every other byte below the break is zero.
 */
export type WasmSnapshot = {
  memory: Uint8Array;
  chunks: Uint32Array;
  heap_break: number;
  stack_pointer: number;
  table_length: number;
  streams: StreamRecord[];
  cwd: string;
  umask: number;
};

/** The PGlite internals a snapshot needs, captured while the instance starts. */
export class WasmHandles {
  module: any;
  instance: WebAssembly.Instance | undefined;
  imports: any;
  /** The highest heap break seen, so a rewind zeroes everything that was ever used past the snapshot's. */
  dirty_end = 0;

  /** Wraps PGlite's Emscripten options to capture the module, the WASM instance and its imports. */
  capture(options: any): any {
    const instantiate = options.instantiateWasm;
    return {
      ...options,
      preRun: [...(options.preRun ?? []), (module: any) => this.module = module],
      instantiateWasm: (imports: any, done: (instance: WebAssembly.Instance, module: WebAssembly.Module) => void) => {
        this.imports = imports;
        return instantiate(imports, (instance: WebAssembly.Instance, module: WebAssembly.Module) => {
          this.instance = instance;
          done(instance, module);
        });
      },
    };
  }

  get #exports(): any {
    return this.instance!.exports;
  }

  /** The current heap break (end of the malloc arena). */
  heapBreak(): number {
    const heap: Uint8Array = this.module.HEAPU8;
    return new Uint32Array(heap.buffer)[this.#exports.emscripten_get_sbrk_ptr() >> 2];
  }

  /** Whether the handles were captured (an instance PGlite started with these options). */
  get ready(): boolean {
    return this.module !== undefined && this.instance !== undefined && this.imports !== undefined;
  }

  /** Snapshots the idle instance (synchronous: nothing may run in it meanwhile). */
  take(): WasmSnapshot {
    const heap_break = this.heapBreak();
    const env = this.imports.env;
    const umask = env.__syscall_umask(0o077);
    env.__syscall_umask(umask);
    this.dirty_end = Math.max(this.dirty_end, heap_break);
    const { memory, chunks } = copyNonZero(this.module.HEAPU8, heap_break);
    return {
      memory,
      chunks,
      heap_break,
      stack_pointer: this.#exports.__stack_pointer.value,
      table_length: this.#exports.__indirect_function_table.length,
      streams: listStreams(this.module),
      cwd: this.module.FS.cwd(),
      umask,
    };
  }

  /** Why `snapshot` cannot be restored into this instance now, or undefined when it can. */
  checkRewindable(snapshot: WasmSnapshot): string | undefined {
    if (!this.ready) return "the instance's internals were not captured";
    const table_length = this.#exports.__indirect_function_table.length;
    if (table_length !== snapshot.table_length) {
      return `a library was loaded after the snapshot (function table ${snapshot.table_length} -> ${table_length})`;
    }
    const heap: Uint8Array = this.module.HEAPU8;
    if (heap.byteLength < snapshot.heap_break) return "the WASM memory shrank";
    return undefined;
  }

  /** Puts the instance back to `snapshot`: memory, stack pointer, file descriptors, cwd, umask. */
  restore(snapshot: WasmSnapshot): void {
    this.dirty_end = Math.max(this.dirty_end, this.heapBreak());
    purgeNodeCache(this.module);
    const heap: Uint8Array = this.module.HEAPU8;
    heap.fill(0, 0, Math.max(this.dirty_end, snapshot.heap_break));
    for (let i = 0; i < snapshot.chunks.length; i++) {
      const at = snapshot.chunks[i] * CHUNK_BYTES;
      const bytes = Math.min(CHUNK_BYTES, snapshot.heap_break - at);
      heap.set(snapshot.memory.subarray(i * CHUNK_BYTES, i * CHUNK_BYTES + bytes), at);
    }
    this.#exports.__stack_pointer.value = snapshot.stack_pointer;
    restoreStreams(this.module, this.imports.env, this.#exports, snapshot);
    this.module.FS.chdir(snapshot.cwd);
    this.imports.env.__syscall_umask(snapshot.umask);
  }
}

/** The non-zero 64 KiB chunks of `heap` below `end`, packed, and their indices. */
function copyNonZero(heap: Uint8Array, end: number): { memory: Uint8Array; chunks: Uint32Array } {
  const words = new Int32Array(heap.buffer, 0, Math.floor(end / 4));
  const chunks: number[] = [];
  const per_chunk = CHUNK_BYTES / 4;
  for (let chunk = 0; chunk * CHUNK_BYTES < end; chunk++) {
    const last = Math.min(words.length, (chunk + 1) * per_chunk);
    let non_zero = (chunk + 1) * CHUNK_BYTES > words.length * 4; // a tail not a whole word: copied
    for (let w = chunk * per_chunk; w < last && !non_zero; w++) non_zero = words[w] !== 0;
    if (non_zero) chunks.push(chunk);
  }
  const memory = new Uint8Array(chunks.length * CHUNK_BYTES);
  chunks.forEach((chunk, i) => {
    const at = chunk * CHUNK_BYTES;
    memory.set(heap.subarray(at, Math.min(at + CHUNK_BYTES, end)), i * CHUNK_BYTES);
  });
  return { memory, chunks: Uint32Array.from(chunks) };
}

function listStreams(module: any): StreamRecord[] {
  const out: StreamRecord[] = [];
  module.FS.streams.forEach((stream: any, fd: number) => {
    if (!stream || fd <= 2) return;
    const record: StreamRecord = {
      fd,
      path: stream.path ?? module.FS.getPath(stream.node),
      flags: stream.flags,
      position: stream.position,
    };
    const pipe = stream.node?.pipe;
    if (pipe) {
      const read_end = pipe.readNode === stream.node;
      const peer_fd = (read_end ? pipe.writeNode : pipe.readNode).stream?.fd ?? -1;
      record.pipe = { peer_fd, read_end };
    }
    out.push(record);
  });
  return out;
}

/** Closes every stream and re-creates the snapshot's: same fd numbers, files, offsets and flags; the self-pipe. */
function restoreStreams(module: any, env: any, exports: any, snapshot: WasmSnapshot): void {
  const FS = module.FS;
  FS.streams.forEach((stream: any, fd: number) => {
    if (!stream || fd <= 2) return;
    try {
      FS.close(stream);
    } catch {
      FS.streams[fd] = null;
    }
  });
  const move = (stream: any, fd: number) => {
    if (stream.fd === fd) return;
    if (FS.streams[fd]) throw new Error(`rewind: fd ${fd} is taken`);
    FS.streams[stream.fd] = null;
    stream.fd = fd;
    FS.streams[fd] = stream;
  };
  for (const record of snapshot.streams) {
    if (!record.pipe?.read_end) continue;
    const scratch = exports.__stack_pointer.value - 64; // below the stack pointer: unused stack
    if (env.__syscall_pipe2(scratch, 0) !== 0) throw new Error("rewind: pipe2 failed");
    const i32 = new Int32Array(module.HEAPU8.buffer);
    const read_stream = FS.streams[i32[scratch >> 2]];
    const write_stream = FS.streams[i32[(scratch + 4) >> 2]];
    i32[scratch >> 2] = 0;
    i32[(scratch + 4) >> 2] = 0;
    const writer = snapshot.streams.find((s) => s.fd === record.pipe!.peer_fd)!;
    move(read_stream, SCRATCH_FD_BASE + record.fd);
    move(write_stream, SCRATCH_FD_BASE + writer.fd);
    move(read_stream, record.fd);
    move(write_stream, writer.fd);
    read_stream.flags = record.flags;
    write_stream.flags = writer.flags;
  }
  for (const record of snapshot.streams) {
    if (record.pipe) continue;
    const stream = FS.open(record.path, record.flags & ~(O_CREAT | O_EXCL | O_TRUNC));
    move(stream, record.fd);
    stream.position = record.position;
    stream.flags = record.flags;
  }
}

/** Drops Emscripten's cached nodes under PGDATA: they may describe files the rewound storage does not have. */
function purgeNodeCache(module: any): void {
  const table = module.FS.nameTable;
  for (let h = 0; h < table.length; h++) {
    let previous: any = null;
    let node = table[h];
    while (node) {
      const next = node.name_next;
      if (node.mount?.mountpoint === PGDATA_MOUNT && node !== node.mount.root) {
        if (previous) previous.name_next = next;
        else table[h] = next;
      } else {
        previous = node;
      }
      node = next;
    }
  }
}
