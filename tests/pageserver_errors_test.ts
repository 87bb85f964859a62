// A refused pageserver request gets a typed error reply that names what was wrong (the tenant, branch, timeline,
// LSN range or term), with the id of the request it refuses, and the connection goes on; malformed input gets a
// bad_request with id 0 and the connection closes. The HTTP API answers unknown things with 404 and a JSON error.
import assert from "node:assert/strict";
import { formatLsn, LSN_MAX } from "../src/lsn.ts";
import { encodeMessage, MAX_WAL_READ_BYTES, type Reply, type RequestBody } from "../src/pageserver/messages.ts";
import { PageserverServer } from "../src/pageserver/server.ts";
import { BLOCK_SIZE } from "../src/storage/page_api.ts";
import { httpJson, PageWire } from "./fixtures/page_wire.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const UNKNOWN_TIMELINE = "00112233445566778899aabbccddeeff";

type Setup = { port: number; wire: PageWire; timeline_id: string; wal_start: bigint; wal_end: bigint };

/** Runs `fn` against a fresh pageserver holding tenant "acme", with a connection bound to it. */
function withPageserver(fn: (s: Setup) => Promise<void>): Promise<void> {
  return withTempDir(async (dir) => {
    const server = await PageserverServer.start({ dir, hostname: "127.0.0.1", port: 0 });
    const wire = await PageWire.connect(server.port);
    try {
      assert.equal((await wire.request({ type: "hello", tenant: "acme", create: true })).type, "hello_ok");
      const info = await wire.request({ type: "branch_info", branch: "main" });
      assert.equal(info.type, "branch_info_ok");
      const { timeline_id, wal_start_lsn: wal_start, wal_end_lsn: wal_end } = info.info;
      await fn({ port: server.port, wire, timeline_id, wal_start, wal_end });
    } finally {
      wire.close();
      await server.close();
    }
  });
}

/** Checks that `reply` is an error of `code` answering request `id`, whose message contains every one of `names`. */
function assertError(reply: Reply | "closed", id: number, code: string, ...names: string[]): void {
  assert.notEqual(reply, "closed", `expected a ${code} error, the connection was closed`);
  const r = reply as Reply;
  assert.equal(r.type, "error", `expected a ${code} error, got ${r.type}`);
  if (r.type !== "error") return;
  assert.deepEqual({ id: r.id, code: r.code }, { id, code }, r.message);
  for (const name of names) assert.ok(r.message.includes(name), `"${r.message}" does not name ${name}`);
}

/** Sends `body`, checks the error reply, then checks the connection still answers. */
async function refused(wire: PageWire, body: RequestBody, code: string, ...names: string[]) {
  const id = await wire.post(body);
  assertError(await wire.next(), id, code, ...names);
  assert.equal((await wire.request({ type: "branch_info", branch: "main" })).type, "branch_info_ok");
}

Deno.test("errors: hello for an unknown tenant is unknown_tenant naming it; the connection may hello again", () =>
  withPageserver(async ({ port }) => {
    const wire = await PageWire.connect(port);
    try {
      const id = await wire.post({ type: "hello", tenant: "nope", create: false });
      assertError(await wire.next(), id, "unknown_tenant", `"nope"`);
      const bad = await wire.post({ type: "hello", tenant: "../etc", create: true });
      assertError(await wire.next(), bad, "bad_request", `"../etc"`);
      assert.equal((await wire.request({ type: "hello", tenant: "acme", create: false })).type, "hello_ok");
    } finally {
      wire.close();
    }
  }));

Deno.test("errors: branch_info for an unknown branch is unknown_branch naming it", () =>
  withPageserver(async ({ wire }) => {
    await refused(wire, { type: "branch_info", branch: "no-such-branch" }, "unknown_branch", `"no-such-branch"`);
  }));

Deno.test("errors: every request on an unknown timeline is unknown_timeline naming it", () =>
  withPageserver(async ({ wire }) => {
    const t = UNKNOWN_TIMELINE;
    const keys = [{ path: "global/pg_control", blkno: 0, not_modified_since: 0n }];
    await refused(wire, { type: "get_pages", timeline_id: t, lsn: LSN_MAX, keys }, "unknown_timeline", t);
    await refused(wire, { type: "list_files", timeline_id: t, lsn: LSN_MAX, after: "" }, "unknown_timeline", t);
    await refused(wire, { type: "read_wal", timeline_id: t, lsn_start: 0n, lsn_end: 0n }, "unknown_timeline", t);
    await refused(wire, { type: "stat", timeline_id: t, lsn: LSN_MAX, path: "base" }, "unknown_timeline", t);
    await refused(wire, { type: "readdir", timeline_id: t, lsn: LSN_MAX, path: "" }, "unknown_timeline", t);
    await refused(wire, { type: "attach", timeline_id: t, term: 1n, wal_end_lsn: 0n }, "unknown_timeline", t);
    await refused(wire, { type: "persist", timeline_id: t, term: 1n }, "unknown_timeline", t);
    await refused(wire, { type: "put", timeline_id: t, term: 1n, records: [] }, "unknown_timeline", t);
    const wal: RequestBody = {
      type: "wal",
      timeline_id: t,
      term: 1n,
      lsn_start: 0n,
      commit_lsn: 0n,
      bytes: new Uint8Array(8),
    };
    await refused(wire, wal, "unknown_timeline", t);
  }));

Deno.test("errors: another tenant's timeline is unknown_timeline on this tenant's connection", () =>
  withPageserver(async ({ port, wire, timeline_id }) => {
    const other = await PageWire.connect(port);
    try {
      assert.equal((await other.request({ type: "hello", tenant: "other", create: true })).type, "hello_ok");
      const list: RequestBody = { type: "list_files", timeline_id, lsn: LSN_MAX, after: "" };
      await refused(other, list, "unknown_timeline", timeline_id, `"other"`);
      assert.equal((await wire.request(list)).type, "files");
    } finally {
      other.close();
    }
  }));

Deno.test("errors: read_wal outside the held WAL is lsn_out_of_range naming the range; over 1 MiB, bad_request", () =>
  withPageserver(async ({ wire, timeline_id, wal_start, wal_end }) => {
    const held = [formatLsn(wal_start), formatLsn(wal_end)];
    const past: RequestBody = { type: "read_wal", timeline_id, lsn_start: wal_end, lsn_end: wal_end + 100n };
    await refused(wire, past, "lsn_out_of_range", formatLsn(wal_end + 100n), ...held);
    const backwards: RequestBody = { type: "read_wal", timeline_id, lsn_start: wal_end, lsn_end: wal_start };
    await refused(wire, backwards, "lsn_out_of_range", ...held);
    const below: RequestBody = { type: "read_wal", timeline_id, lsn_start: wal_start - 8n, lsn_end: wal_end };
    await refused(wire, below, "lsn_out_of_range", formatLsn(wal_start - 8n), ...held);
    const huge: RequestBody = {
      type: "read_wal",
      timeline_id,
      lsn_start: 0n,
      lsn_end: BigInt(MAX_WAL_READ_BYTES) + 1n,
    };
    await refused(wire, huge, "bad_request", String(MAX_WAL_READ_BYTES));
    const ok = await wire.request({ type: "read_wal", timeline_id, lsn_start: wal_start, lsn_end: wal_end });
    assert.ok(ok.type === "wal_bytes" && ok.bytes.length === Number(wal_end - wal_start));
  }));

Deno.test("errors: get_pages past the timeline's end, or of writes not yet sent, name the LSN and page", () =>
  withPageserver(async ({ wire, timeline_id, wal_end }) => {
    const key = { path: "global/pg_control", blkno: 0, not_modified_since: 0n };
    const late: RequestBody = { type: "get_pages", timeline_id, lsn: wal_end + 0x1000n, keys: [key] };
    await refused(wire, late, "lsn_out_of_range", formatLsn(wal_end + 0x1000n), timeline_id);
    const unsent = { ...key, not_modified_since: wal_end + 0x2000n };
    const early: RequestBody = { type: "get_pages", timeline_id, lsn: LSN_MAX, keys: [unsent] };
    await refused(wire, early, "not_yet_ingested", "global/pg_control", formatLsn(wal_end + 0x2000n));
  }));

Deno.test("errors: attach with a lower term, and put, wal or persist with a stale term, are fenced", () =>
  withPageserver(async ({ wire, timeline_id, wal_end }) => {
    const attached = await wire.request({ type: "attach", timeline_id, term: 5n, wal_end_lsn: wal_end });
    assert.deepEqual(attached.type === "attach_ok" && attached.term, 5n);
    await refused(wire, { type: "attach", timeline_id, term: 4n, wal_end_lsn: wal_end }, "fenced", "5", timeline_id);
    // A put is answered only when it fails: the error carries the put's own id, the connection goes on.
    const image = { kind: "image" as const, bytes: new Uint8Array(BLOCK_SIZE).fill(0xab) };
    const records = [{ kind: "page" as const, path: "base/1/99999", blkno: 0, lsn: wal_end + 8n, value: image }];
    await refused(wire, { type: "put", timeline_id, term: 4n, records }, "fenced", "5", "4", timeline_id);
    await refused(wire, { type: "put", timeline_id, term: 6n, records }, "fenced", "5", "6", timeline_id);
    const wal: RequestBody = {
      type: "wal",
      timeline_id,
      term: 4n,
      lsn_start: wal_end,
      commit_lsn: wal_end,
      bytes: new Uint8Array(8),
    };
    await refused(wire, wal, "fenced", "5", "4", timeline_id);
    await refused(wire, { type: "persist", timeline_id, term: 3n }, "fenced", "5", "3", timeline_id);
    // The refused put wrote nothing; a put of the owner's term is silent, and its page is read back.
    const key = { path: "base/1/99999", blkno: 0, not_modified_since: 0n };
    const none = await wire.request({ type: "get_pages", timeline_id, lsn: LSN_MAX, keys: [key] });
    assert.deepEqual(none.type === "pages" && none.pages, ["absent"]);
    const create = {
      kind: "event" as const,
      path: "base/1/99999",
      lsn: wal_end + 8n,
      event: { kind: "create" as const },
    };
    const resize = { ...create, event: { kind: "resize" as const, size_bytes: BLOCK_SIZE } };
    await wire.post({ type: "put", timeline_id, term: 5n, records: [create, resize, ...records] });
    const pages = await wire.request({ type: "get_pages", timeline_id, lsn: LSN_MAX, keys: [key] });
    assert.deepEqual(pages.type === "pages" && pages.pages, [image.bytes]);
  }));

Deno.test("errors: malformed input gets bad_request with id 0, then the connection closes", () =>
  withPageserver(async ({ port }) => {
    const cases: [string, Uint8Array][] = [
      ["a request before hello", encodeMessage({ type: "branch_info", id: 9, branch: "main" })],
      ["a reply frame from a client", encodeMessage({ type: "attach_ok", id: 9, term: 1n })],
      ["bytes that are no frame", new TextEncoder().encode("hello pageserver, are you there?")],
      ["a header announcing 4 GiB", new Uint8Array([0x54, 0x50, 0x47, 0x53, 1, 7, 0, 0, 0xff, 0xff, 0xff, 0xff])],
    ];
    for (const [what, bytes] of cases) {
      const wire = await PageWire.connect(port);
      try {
        await wire.send(bytes);
        // No half-close: the server must answer from what it has, without waiting for more bytes.
        const reply = await wire.next();
        assertError(reply, 0, "bad_request");
        assert.equal(await wire.next(), "closed", what);
      } finally {
        wire.close();
      }
    }
  }));

Deno.test("errors: a refused second hello names the tenant and unbinds the connection; an accepted one rebinds it", () =>
  withPageserver(async ({ port, wire, timeline_id }) => {
    // docs/pageserver_protocol.md: a later hello rebinds a connection, and a refused one unbinds it.
    const other = await PageWire.connect(port);
    try {
      const hello = await other.request({ type: "hello", tenant: "other", create: true });
      assert.ok(hello.type === "hello_ok" && hello.tenant_id !== timeline_id);
      const list: RequestBody = { type: "list_files", timeline_id, lsn: LSN_MAX, after: "" };
      assertError(await other.request(list), 2, "unknown_timeline", timeline_id);
      assert.equal((await other.request({ type: "hello", tenant: "acme", create: false })).type, "hello_ok");
      assert.equal((await other.request(list)).type, "files");
    } finally {
      other.close();
    }
    const id = await wire.post({ type: "hello", tenant: "nope", create: false });
    assertError(await wire.next(), id, "unknown_tenant", `"nope"`);
    await wire.post({ type: "branch_info", branch: "main" });
    assertError(await wire.next(), 0, "bad_request", "branch_info", "hello");
    assert.equal(await wire.next(), "closed");
  }));

Deno.test("errors: over HTTP, an unknown tenant, branch or route is 404 with a JSON error naming it", () =>
  withPageserver(async ({ port }) => {
    const tenant = await httpJson(port, "GET", "/v1/tenants/nope/branches");
    assert.equal(tenant.status, 404);
    const error = tenant.body as { ok: boolean; error: { name: string; message: string } };
    assert.equal(error.ok, false);
    assert.equal(error.error.name, "PageserverError");
    assert.ok(error.error.message.includes(`"nope"`), error.error.message);
    const branch = await httpJson(port, "DELETE", "/v1/tenants/acme/branches/ghost");
    assert.equal(branch.status, 404);
    assert.ok(JSON.stringify(branch.body).includes(`\\"ghost\\"`), JSON.stringify(branch.body));
    const deleted = await httpJson(port, "DELETE", "/v1/tenants/nope");
    assert.equal(deleted.status, 404);
    assert.ok(JSON.stringify(deleted.body).includes(`\\"nope\\"`), JSON.stringify(deleted.body));
    const route = await httpJson(port, "GET", "/v2/everything");
    assert.equal(route.status, 404);
    assert.ok((route.body as { error: string }).error.includes("/v2/everything"));
  }));
