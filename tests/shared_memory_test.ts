import { deepStrictEqual, equal, throws } from "node:assert/strict";
import { shareMemoryImport } from "../src/server/shared_memory.ts";

/** `(module (import "env" "memory" (memory 1)))`, preceded by a function type and a function import. */
function moduleImportingMemory(limits: number[]): Uint8Array<ArrayBuffer> {
  const type_section = [0x01, 0x04, 0x01, 0x60, 0x00, 0x00];
  const name = (text: string) => [text.length, ...new TextEncoder().encode(text)];
  const imports = [
    0x02,
    ...[...name("env"), ...name("f"), 0x00, 0x00],
    ...[...name("env"), ...name("memory"), 0x02, ...limits],
  ];
  const import_section = [0x02, imports.length, ...imports];
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...type_section, ...import_section]);
}

const imports = (memory: WebAssembly.Memory) => ({ env: { f: () => {}, memory } });

Deno.test("shared memory: a memory import without a maximum gets one and is marked shared", () => {
  const original = moduleImportingMemory([0x00, 0x01]);
  const patched = shareMemoryImport(original);
  const shared = new WebAssembly.Memory({ initial: 1, maximum: 32768, shared: true });
  throws(() => new WebAssembly.Instance(new WebAssembly.Module(original), imports(shared)));
  new WebAssembly.Instance(new WebAssembly.Module(patched), imports(shared));
  equal(shared.buffer instanceof SharedArrayBuffer, true);
});

Deno.test("shared memory: a memory import with a maximum is only flagged; shared or no memory is unchanged", () => {
  const bounded = moduleImportingMemory([0x01, 0x01, 0x02]);
  const patched = shareMemoryImport(bounded);
  equal(patched.length, bounded.length);
  new WebAssembly.Instance(
    new WebAssembly.Module(patched),
    imports(new WebAssembly.Memory({ initial: 1, maximum: 2, shared: true })),
  );
  const already = moduleImportingMemory([0x03, 0x01, 0x02]);
  equal(shareMemoryImport(already), already);
  const no_imports = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
  equal(shareMemoryImport(no_imports), no_imports);
  deepStrictEqual(shareMemoryImport(new Uint8Array([1, 2, 3])), new Uint8Array([1, 2, 3]));
});
