/**
 * Reading a WebAssembly binary's structure: sections, imports, exports and function bodies. Enough to patch
 * PGlite's memory import (`shared_memory.ts`) and to find where Postgres keeps a few variables it does not export
 * (`engine_identity.ts`); nothing here decodes instructions in general.
 *
 * @module
 */

/** Section ids (WebAssembly core specification, 5.5.2). */
export const SECTION = { import: 2, export: 7, code: 10 } as const;
/** Import and export kinds. */
export const KIND = { function: 0, table: 1, memory: 2, global: 3, tag: 4 } as const;
/** Flags of a limits field. */
export const LIMITS = { has_maximum: 1, shared: 2 } as const;

/** A WASM binary could not be read as this module expects. */
export class WasmFormatError extends Error {
  /** @param message what was found */
  constructor(message: string) {
    super(`WASM binary: ${message}`);
    this.name = "WasmFormatError";
  }
}

/** Reads LEB128 numbers and names from a WASM binary, from `at` on. */
export class WasmReader {
  /** @param bytes the binary @param at where reading starts */
  constructor(readonly bytes: Uint8Array, public at: number) {}

  /** An unsigned LEB128 number (at most 32 bits). */
  next(): number {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const byte = this.bytes[this.at++];
      value |= (byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return value >>> 0;
    }
    throw new WasmFormatError("LEB128 number longer than 5 bytes");
  }

  /** A name: its length, then UTF-8 bytes. */
  name(): string {
    const length = this.next();
    const text = new TextDecoder().decode(this.bytes.subarray(this.at, this.at + length));
    this.at += length;
    return text;
  }

  /** Skips one import's description after its kind byte; returns false for a memory import, left unread. */
  skipImportDescription(kind: number): boolean {
    if (kind === KIND.memory) return false;
    if (kind === KIND.function) this.next();
    else if (kind === KIND.table) {
      this.at++;
      const flags = this.bytes[this.at++];
      this.next();
      if (flags & LIMITS.has_maximum) this.next();
    } else if (kind === KIND.global) this.at += 2;
    else if (kind === KIND.tag) {
      this.at++;
      this.next();
    } else throw new WasmFormatError(`import of unknown kind ${kind}`);
    return true;
  }
}

/** Where a section is: the offset of its size field, its size and the offset of its body. */
export type SectionPlace = { id: number; size_at: number; size: number; body_at: number };

/** The sections of `bytes`, in order; empty when it is not a WASM binary. */
export function sections(bytes: Uint8Array): SectionPlace[] {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) return [];
  const reader = new WasmReader(bytes, 8);
  const found: SectionPlace[] = [];
  while (reader.at < bytes.length) {
    const id = bytes[reader.at++];
    const size_at = reader.at;
    const size = reader.next();
    found.push({ id, size_at, size, body_at: reader.at });
    reader.at += size;
  }
  return found;
}

/**
 * The bodies (bytes after the local declarations) of the exported functions named in `names`, by name; a name
 * that is not an exported function is left out.
 */
export function exportedFunctionBodies(bytes: Uint8Array, names: readonly string[]): Map<string, Uint8Array> {
  const places = sections(bytes);
  const find = (id: number) => places.find((place) => place.id === id);
  const exports = find(SECTION.export);
  const code = find(SECTION.code);
  if (exports === undefined || code === undefined) return new Map();
  const imported = importedFunctionCount(bytes, find(SECTION.import));
  const wanted = new Map<number, string>();
  const reader = new WasmReader(bytes, exports.body_at);
  for (let count = reader.next(), i = 0; i < count; i++) {
    const name = reader.name();
    const kind = bytes[reader.at++];
    const index = reader.next();
    if (kind === KIND.function && names.includes(name)) wanted.set(index - imported, name);
  }
  const bodies = new Map<string, Uint8Array>();
  reader.at = code.body_at;
  for (let count = reader.next(), i = 0; i < count && bodies.size < wanted.size; i++) {
    const size = reader.next();
    const end = reader.at + size;
    const name = wanted.get(i);
    if (name !== undefined) {
      for (let groups = reader.next(), g = 0; g < groups; g++) {
        reader.next();
        reader.at++;
      }
      bodies.set(name, bytes.subarray(reader.at, end));
    }
    reader.at = end;
  }
  return bodies;
}

/** The code section's body, where function bodies are; empty when there is none. */
export function codeSection(bytes: Uint8Array): Uint8Array {
  const code = sections(bytes).find((place) => place.id === SECTION.code);
  return code === undefined ? new Uint8Array(0) : bytes.subarray(code.body_at, code.body_at + code.size);
}

function importedFunctionCount(bytes: Uint8Array, imports: SectionPlace | undefined): number {
  if (imports === undefined) return 0;
  const reader = new WasmReader(bytes, imports.body_at);
  let functions = 0;
  for (let count = reader.next(), i = 0; i < count; i++) {
    reader.name();
    reader.name();
    const kind = bytes[reader.at++];
    if (kind === KIND.function) functions++;
    if (!reader.skipImportDescription(kind)) {
      reader.at++; // a memory's limits: flags, minimum, maximum when flagged
      const flags = bytes[reader.at - 1];
      reader.next();
      if (flags & LIMITS.has_maximum) reader.next();
    }
  }
  return functions;
}

/** `value` as a signed LEB128 number, as `i32.const` encodes it. */
export function encodeSLeb(value: number): Uint8Array {
  const out: number[] = [];
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    const done = (value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return new Uint8Array(out);
  }
}

/** `value` as an unsigned LEB128 number. */
export function encodeULeb(value: number): Uint8Array {
  const out: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return new Uint8Array(out);
}

/** Reads a signed LEB128 number at `at`: its value and the offset after it. */
export function readSLeb(bytes: Uint8Array, at: number): { value: number; end: number } {
  let value = 0;
  let shift = 0;
  for (; shift < 35; shift += 7) {
    const byte = bytes[at++];
    value |= (byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) {
      if (shift + 7 < 32 && (byte & 0x40) !== 0) value |= -1 << (shift + 7);
      return { value, end: at };
    }
  }
  throw new WasmFormatError("LEB128 number longer than 5 bytes");
}
