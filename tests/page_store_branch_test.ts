import { deepStrictEqual } from "node:assert/strict";
import { BLOCK_SIZE } from "../src/storage/page_api.ts";
import { PageStore } from "../src/storage/page_store.ts";

const id = (n: number) => n.toString(16).padStart(32, "0");
const page = (fill: number) => new Uint8Array(BLOCK_SIZE).fill(fill);
const first = (bytes: Uint8Array | undefined) => bytes?.[0];

async function parentWithHistory(): Promise<PageStore> {
  const parent = await PageStore.open({ timeline_id: id(1) });
  parent.putEvent("base", 10n, { kind: "mkdir" });
  parent.putEvent("base/a", 10n, { kind: "create" });
  parent.putPage("base/a", 0, 10n, { kind: "image", bytes: page(1) });
  parent.putEvent("base/a", 10n, { kind: "resize", size_bytes: 2 * BLOCK_SIZE });
  parent.putPage("base/a", 1, 20n, { kind: "image", bytes: page(2) });
  parent.putPage("base/a", 0, 30n, { kind: "delta", ranges: [{ offset: 0, bytes: new Uint8Array([3]) }] });
  parent.putEvent("base/b", 40n, { kind: "create" });
  return parent;
}

Deno.test("page store branch: reads fall through to the ancestor at the branch LSN", async () => {
  const parent = await parentWithHistory();
  const child = await PageStore.open({ timeline_id: id(2), ancestor: { source: parent, branch_lsn: 25n } });
  deepStrictEqual(first(child.getPage("base/a", 0, 100n)), 1, "parent's write at 30 is after the branch point");
  deepStrictEqual(first(child.getPage("base/a", 1, 100n)), 2);
  deepStrictEqual(first(child.getPage("base/a", 1, 15n)), 0, "reads below the branch point see the past too");
  deepStrictEqual(child.stat("base/b", 100n), undefined, "created in the parent after the branch point");
  deepStrictEqual(child.readdir("base", 100n), ["a"]);
  deepStrictEqual(child.stat("base/a", 100n), { kind: "file", size_bytes: 2 * BLOCK_SIZE });
});

Deno.test("page store branch: the child's own writes win and stay invisible to the parent", async () => {
  const parent = await parentWithHistory();
  const child = await PageStore.open({ timeline_id: id(2), ancestor: { source: parent, branch_lsn: 25n } });
  child.putPage("base/a", 0, 50n, { kind: "delta", ranges: [{ offset: 1, bytes: new Uint8Array([9]) }] });
  const bytes = child.getPage("base/a", 0, 100n)!;
  deepStrictEqual([bytes[0], bytes[1], bytes[2]], [1, 9, 1], "a delta applies on the ancestor's page");
  child.putEvent("base/c", 50n, { kind: "create" });
  child.putEvent("base/a", 60n, { kind: "unlink" });
  deepStrictEqual(child.readdir("base", 100n), ["c"]);
  deepStrictEqual(child.readdir("base", 55n), ["a", "c"]);
  deepStrictEqual(child.stat("base/a", 100n), undefined);
  deepStrictEqual(first(parent.getPage("base/a", 0, 100n)), 3);
  deepStrictEqual(parent.readdir("base", 100n), ["a", "b"]);
  const grandchild = await PageStore.open({ timeline_id: id(3), ancestor: { source: child, branch_lsn: 55n } });
  deepStrictEqual(grandchild.getPage("base/a", 0, 100n)![1], 9, "a branch of a branch reads through both");
  deepStrictEqual(grandchild.readdir("base", 100n), ["a", "c"]);
});

Deno.test("page store branch: a truncation in the child hides the ancestor's blocks past it", async () => {
  const parent = await parentWithHistory();
  const child = await PageStore.open({ timeline_id: id(2), ancestor: { source: parent, branch_lsn: 25n } });
  child.putEvent("base/a", 50n, { kind: "resize", size_bytes: BLOCK_SIZE });
  child.putEvent("base/a", 51n, { kind: "resize", size_bytes: 2 * BLOCK_SIZE });
  deepStrictEqual(first(child.getPage("base/a", 1, 100n)), 0);
  deepStrictEqual(first(child.getPage("base/a", 0, 100n)), 1);
});
