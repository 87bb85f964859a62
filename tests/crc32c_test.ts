import { strictEqual } from "node:assert/strict";
import { crc32c as reference } from "@aws-crypto/crc32c";
import { crc32c } from "../src/crc32c.ts";

Deno.test("crc32c: the standard check value and agreement with a reference implementation", () => {
  strictEqual(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  strictEqual(crc32c(new Uint8Array(0)), 0);
  for (let length = 0; length < 300; length += 7) {
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    strictEqual(crc32c(bytes), reference(bytes) >>> 0, `length ${length}`);
  }
});

Deno.test("crc32c: continuing over parts equals one pass", () => {
  const bytes = crypto.getRandomValues(new Uint8Array(1000));
  strictEqual(crc32c(bytes.subarray(333), crc32c(bytes.subarray(0, 333))), crc32c(bytes));
});
