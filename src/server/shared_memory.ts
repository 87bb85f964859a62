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
import { encodeULeb, LIMITS, SECTION, type SectionPlace, sections, WasmReader } from "../compute/wasm_binary.ts";

/** Pages of 64 KiB a shared memory may grow to when its module gives no maximum: PGlite's own maximum (2 GiB). */
const MAXIMUM_PAGES = 32768;

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
  const imports = sections(bytes).find((place) => place.id === SECTION.import);
  if (imports === undefined) return bytes;
  const reader = new WasmReader(bytes, imports.body_at);
  for (let count = reader.next(), i = 0; i < count; i++) {
    reader.name(); // module
    reader.name(); // field
    const kind = bytes[reader.at++];
    if (!reader.skipImportDescription(kind)) return shareLimits(bytes, reader, imports);
  }
  return bytes;
}

function shareLimits(bytes: Uint8Array<ArrayBuffer>, reader: WasmReader, imports: SectionPlace) {
  const flags_at = reader.at;
  const flags = bytes[flags_at];
  if (flags & LIMITS.shared) return bytes;
  if (flags & LIMITS.has_maximum) {
    const copy = bytes.slice();
    copy[flags_at] = flags | LIMITS.shared;
    return copy;
  }
  // A shared memory needs a maximum: insert one after the minimum, and grow the section's size to match.
  reader.at = flags_at + 1;
  reader.next();
  const maximum = encodeULeb(MAXIMUM_PAGES);
  const parts = [
    bytes.subarray(0, imports.size_at),
    encodeULeb(imports.size + maximum.length),
    bytes.subarray(imports.body_at, flags_at),
    new Uint8Array([flags | LIMITS.has_maximum | LIMITS.shared]),
    bytes.subarray(flags_at + 1, reader.at),
    maximum,
    bytes.subarray(reader.at),
  ];
  return concatBytes(parts);
}
