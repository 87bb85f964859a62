/**
 * Shared WASM memory for PGlite, so that another thread can set Postgres's interrupt flags
 * (`QueryCancelPending`, `InterruptPending`) while a statement runs: that is how a CancelRequest reaches a
 * backend busy in WASM. PGlite creates its memory and loads its side modules (PL/pgSQL) itself, so the only place
 * to make them shared is WebAssembly's own constructors: {@linkcode shareWasmMemory} wraps them for the whole
 * isolate. Call it only in the isolate (Worker) that runs the engine, before PGlite starts.
 *
 * @module
 */
// deno-lint-ignore-file no-explicit-any -- WebAssembly's constructors are replaced in place.
import { concatBytes } from "./wire.ts";

/** Pages of 64 KiB a shared memory may grow to when its module gives no maximum: PGlite's own maximum (2 GiB). */
const MAXIMUM_PAGES = 32768;
const SECTION_IMPORT = 2;
const IMPORT_KIND_FUNCTION = 0;
const IMPORT_KIND_TABLE = 1;
const IMPORT_KIND_MEMORY = 2;
const IMPORT_KIND_GLOBAL = 3;
const IMPORT_KIND_TAG = 4;
const LIMITS_HAS_MAXIMUM = 1;
const LIMITS_SHARED = 2;

let installed = false;

/** Makes every WASM memory created from now on in this isolate shared, with the module imports to match. */
export function shareWasmMemory(): void {
  if (installed) return;
  installed = true;
  const wasm = WebAssembly as any;
  const OriginalMemory = wasm.Memory;
  const SharedMemory = function (descriptor: WebAssembly.MemoryDescriptor) {
    return new OriginalMemory({ ...descriptor, shared: true, maximum: descriptor.maximum ?? MAXIMUM_PAGES });
  };
  SharedMemory.prototype = OriginalMemory.prototype;
  wasm.Memory = SharedMemory;
  const OriginalModule = wasm.Module;
  const SharedModule: any = function (source: BufferSource) {
    return new OriginalModule(patchSource(source));
  };
  SharedModule.prototype = OriginalModule.prototype;
  for (const name of ["imports", "exports", "customSections"]) SharedModule[name] = OriginalModule[name];
  wasm.Module = SharedModule;
  const compile = wasm.compile;
  wasm.compile = (source: BufferSource) => compile(patchSource(source));
  const instantiate = wasm.instantiate;
  wasm.instantiate = (source: any, imports: any) =>
    instantiate(source instanceof OriginalModule ? source : patchSource(source), imports);
}

function patchSource(source: any): any {
  if (source instanceof ArrayBuffer) return shareMemoryImport(new Uint8Array(source));
  if (ArrayBuffer.isView(source) && source.buffer instanceof ArrayBuffer) {
    return shareMemoryImport(new Uint8Array(source.buffer, source.byteOffset, source.byteLength));
  }
  return source;
}

/**
 * A copy of WASM binary `bytes` whose memory import is marked shared (with a maximum added when it has none), or
 * `bytes` itself when it imports no memory or already shares it.
 */
export function shareMemoryImport(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) return bytes;
  const reader = new ULeb(bytes, 8);
  while (reader.at < bytes.length) {
    const id = bytes[reader.at++];
    const size_at = reader.at;
    const size = reader.next();
    const body_at = reader.at;
    if (id === SECTION_IMPORT) return patchImportSection(bytes, reader, size_at, size, body_at);
    reader.at = body_at + size;
  }
  return bytes;
}

function patchImportSection(
  bytes: Uint8Array<ArrayBuffer>,
  reader: ULeb,
  size_at: number,
  size: number,
  body_at: number,
) {
  const count = reader.next();
  for (let i = 0; i < count; i++) {
    reader.skipName(); // module
    reader.skipName(); // field
    const kind = bytes[reader.at++];
    if (kind === IMPORT_KIND_MEMORY) return shareLimits(bytes, reader, size_at, size, body_at);
    if (kind === IMPORT_KIND_FUNCTION) reader.next();
    else if (kind === IMPORT_KIND_TABLE) {
      reader.at++;
      const flags = bytes[reader.at++];
      reader.next();
      if (flags & LIMITS_HAS_MAXIMUM) reader.next();
    } else if (kind === IMPORT_KIND_GLOBAL) reader.at += 2;
    else if (kind === IMPORT_KIND_TAG) {
      reader.at++;
      reader.next();
    } else throw new Error(`WASM import of unknown kind ${kind}: cannot share this module's memory`);
  }
  return bytes;
}

function shareLimits(bytes: Uint8Array<ArrayBuffer>, reader: ULeb, size_at: number, size: number, body_at: number) {
  const flags_at = reader.at;
  const flags = bytes[flags_at];
  if (flags & LIMITS_SHARED) return bytes;
  if (flags & LIMITS_HAS_MAXIMUM) {
    const copy = bytes.slice();
    copy[flags_at] = flags | LIMITS_SHARED;
    return copy;
  }
  // A shared memory needs a maximum: insert one after the minimum, and grow the section's size to match.
  reader.at = flags_at + 1;
  reader.next();
  const maximum = encodeULeb(MAXIMUM_PAGES);
  const parts = [
    bytes.subarray(0, size_at),
    encodeULeb(size + maximum.length),
    bytes.subarray(body_at, flags_at),
    new Uint8Array([flags | LIMITS_HAS_MAXIMUM | LIMITS_SHARED]),
    bytes.subarray(flags_at + 1, reader.at),
    maximum,
    bytes.subarray(reader.at),
  ];
  return concatBytes(parts);
}

/** Reads unsigned LEB128 numbers from a WASM binary. */
class ULeb {
  constructor(readonly bytes: Uint8Array, public at: number) {}

  next(): number {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const byte = this.bytes[this.at++];
      value |= (byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return value >>> 0;
    }
    throw new Error("WASM binary: LEB128 number longer than 5 bytes");
  }

  skipName(): void {
    const length = this.next();
    this.at += length;
  }
}

function encodeULeb(value: number): Uint8Array {
  const out: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return new Uint8Array(out);
}
