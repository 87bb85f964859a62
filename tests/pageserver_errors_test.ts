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
/** A hello that creates a tenant imports initdb's cluster: seconds on a loaded machine. */
const CREATE_MS = 60_000;

type Setup = { port: number; wire: PageWire; timeline_id: string; wal_start: bigint; wal_end: bigint };

/** Runs `fn` against a fresh pageserver holding tenant "acme", with a connection bound to it. */
function withPageserver(fn: (s: Setup) => Promise<void>): Promise<void> {
  return withTempDir(async (dir) => {
    const server = await PageserverServer.start({ dir, hostname: "127.0.0.1", port: 0 });
    const wire = await PageWire.connect(server.port);
    try {
      const hello = await wire.request({ type: "hello", tenant: "acme", create: true }, CREATE_MS);
      assert.equal(hello.type, "hello_ok");
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
      const hello = await other.request({ type: "hello", tenant: "other", create: true }, CREATE_MS);
      assert.equal(hello.type, "hello_ok");
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

/** A new connection to `port` bound to tenant "acme". */
async function acme(port: number, create = false): Promise<PageWire> {
  const wire = await PageWire.connect(port);
  assert.equal((await wire.request({ type: "hello", tenant: "acme", create }, CREATE_MS)).type, "hello_ok");
  return wire;
}

/** A put making `base/1/99999` one block long, filled with `fill`, at `lsn`. */
function putPage(timeline_id: string, term: bigint, lsn: bigint, fill: number): RequestBody {
  const path = "base/1/99999";
  const image = { kind: "image" as const, bytes: new Uint8Array(BLOCK_SIZE).fill(fill) };
  const records = [
    { kind: "event" as const, path, lsn, event: { kind: "create" as const } },
    { kind: "event" as const, path, lsn, event: { kind: "resize" as const, size_bytes: BLOCK_SIZE } },
    { kind: "page" as const, path, blkno: 0, lsn, value: image },
  ];
  return { type: "put", timeline_id, term, records };
}

/** The newest `base/1/99999` block 0: its first byte, or "absent". */
async function pageFill(wire: PageWire, timeline_id: string): Promise<number | string> {
  const keys = [{ path: "base/1/99999", blkno: 0, not_modified_since: 0n }];
  const reply = await wire.request({ type: "get_pages", timeline_id, lsn: LSN_MAX, keys });
  assert.equal(reply.type, "pages");
  const page = reply.type === "pages" ? reply.pages[0] : "absent";
  return typeof page === "string" ? page : page[0];
}

/** The terms `terms.json` of tenant "acme" holds. */
async function storedTerms(dir: string): Promise<unknown> {
  return JSON.parse(await Deno.readTextFile(`${dir}/tenants/acme/terms.json`)).terms;
}

Deno.test("errors: terms survive a restart; a lower attach, or a write its connection did not attach for, is fenced", () =>
  withTempDir(async (dir) => {
    const start = () => PageserverServer.start({ dir, hostname: "127.0.0.1", port: 0 });
    let server = await start();
    let timeline_id = "", wal_end = 0n;
    try {
      const wire = await acme(server.port, true);
      const info = await wire.request({ type: "branch_info", branch: "main" });
      assert.ok(info.type === "branch_info_ok");
      ({ timeline_id, wal_end_lsn: wal_end } = info.info);
      const attached = await wire.request({ type: "attach", timeline_id, term: 5n, wal_end_lsn: wal_end });
      assert.deepEqual(attached.type === "attach_ok" && attached.term, 5n);
      // On disk before attach_ok was sent: a crash right after the answer keeps the fence.
      assert.deepEqual(await storedTerms(dir), { format_version: 1, terms: { [timeline_id]: "5" } });
      wire.close();
    } finally {
      await server.close();
    }

    server = await start();
    try {
      const wire = await acme(server.port);
      const info = await wire.request({ type: "branch_info", branch: "main" });
      assert.deepEqual(info.type === "branch_info_ok" && info.info.term, 5n);
      await refused(wire, { type: "attach", timeline_id, term: 4n, wal_end_lsn: wal_end }, "fenced", "5", "4");
      // Term 5 is the owner's, but this connection did not attach with it (the old connection died with the server).
      const put5 = putPage(timeline_id, 5n, wal_end + 8n, 0xab);
      await refused(wire, put5, "fenced", timeline_id, "5", "did not attach");
      await refused(wire, putPage(timeline_id, 4n, wal_end + 8n, 0xab), "fenced", timeline_id, "5", "4");
      const wal: RequestBody = {
        type: "wal",
        timeline_id,
        term: 5n,
        lsn_start: wal_end,
        commit_lsn: wal_end,
        bytes: new Uint8Array(8),
      };
      await refused(wire, wal, "fenced", timeline_id, "5", "did not attach");
      await refused(wire, { type: "persist", timeline_id, term: 5n }, "fenced", timeline_id, "5", "did not attach");
      assert.equal(await pageFill(wire, timeline_id), "absent");

      // The compute holding term 5 attaches again with it on a new connection (equal term: allowed), and writes.
      const again = await acme(server.port);
      try {
        const reattached = await again.request({ type: "attach", timeline_id, term: 5n, wal_end_lsn: wal_end });
        assert.deepEqual(reattached.type === "attach_ok" && reattached.term, 5n);
        await again.post(put5);
        assert.equal(await pageFill(again, timeline_id), 0xab);
        await refused(wire, put5, "fenced", timeline_id, "did not attach");
        // An equal-term attach drops nothing, not even versions past its WAL end.
        assert.equal(
          (await wire.request({ type: "attach", timeline_id, term: 5n, wal_end_lsn: wal_end })).type,
          "attach_ok",
        );
        assert.equal(await pageFill(wire, timeline_id), 0xab);
        // A new election's term fences term 5 and drops its versions past the new owner's WAL end.
        assert.equal(
          (await wire.request({ type: "attach", timeline_id, term: 6n, wal_end_lsn: wal_end })).type,
          "attach_ok",
        );
        assert.equal(await pageFill(wire, timeline_id), "absent");
        await refused(again, put5, "fenced", timeline_id, "6", "5");
        await refused(again, { type: "attach", timeline_id, term: 5n, wal_end_lsn: wal_end }, "fenced", "6", "5");
      } finally {
        again.close();
      }
      wire.close();
    } finally {
      await server.close();
    }

    server = await start();
    try {
      assert.deepEqual(await storedTerms(dir), { format_version: 1, terms: { [timeline_id]: "6" } });
      const wire = await acme(server.port);
      try {
        await refused(wire, { type: "attach", timeline_id, term: 5n, wal_end_lsn: wal_end }, "fenced", "6", "5");
        await refused(wire, putPage(timeline_id, 5n, wal_end + 8n, 1), "fenced", timeline_id, "6", "5");
      } finally {
        wire.close();
      }
    } finally {
      await server.close();
    }
  }));

Deno.test("errors: term 0 owns nothing: a write on a timeline never attached is fenced, attach with term 0 bad_request", () =>
  withPageserver(async ({ wire, timeline_id, wal_end }) => {
    await refused(wire, putPage(timeline_id, 0n, wal_end + 8n, 0xcd), "fenced", timeline_id, "term 0", "attach");
    await refused(wire, putPage(timeline_id, 1n, wal_end + 8n, 0xcd), "fenced", timeline_id, "term 0", "attach");
    const wal: RequestBody = {
      type: "wal",
      timeline_id,
      term: 0n,
      lsn_start: wal_end,
      commit_lsn: wal_end,
      bytes: new Uint8Array(8),
    };
    await refused(wire, wal, "fenced", timeline_id, "term 0");
    await refused(wire, { type: "persist", timeline_id, term: 0n }, "fenced", timeline_id, "term 0");
    await refused(wire, { type: "attach", timeline_id, term: 0n, wal_end_lsn: wal_end }, "bad_request", "term 0");
    assert.equal(await pageFill(wire, timeline_id), "absent");
    const info = await wire.request({ type: "branch_info", branch: "main" });
    assert.deepEqual(info.type === "branch_info_ok" && info.info.term, 0n);
  }));

Deno.test("errors: a damaged terms.json stops the pageserver from starting, naming the file", () =>
  withTempDir(async (dir) => {
    const start = () => PageserverServer.start({ dir, hostname: "127.0.0.1", port: 0 });
    const server = await start();
    try {
      const wire = await acme(server.port, true);
      const info = await wire.request({ type: "branch_info", branch: "main" });
      assert.ok(info.type === "branch_info_ok");
      const { timeline_id, wal_end_lsn } = info.info;
      assert.equal((await wire.request({ type: "attach", timeline_id, term: 3n, wal_end_lsn })).type, "attach_ok");
      wire.close();
    } finally {
      await server.close();
    }
    // A fence forgotten would let an old compute write again: a damaged file is an error, not "no terms".
    const path = `${dir}/tenants/acme/terms.json`;
    await Deno.writeTextFile(path, (await Deno.readTextFile(path)).replace(`"3"`, `"2"`));
    await assert.rejects(
      start(),
      (error: Error) => error.name === "CorruptDataError" && /terms\.json/.test(error.message),
    );
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

Deno.test("errors: a second hello is bad_request and the connection stays bound to its first tenant", () =>
  withPageserver(async ({ port, wire, timeline_id }) => {
    // docs/pageserver_protocol.md, "Fencing": a connection's attachments belong to its tenant, so it never rebinds.
    await refused(wire, { type: "hello", tenant: "other", create: true }, "bad_request", "a second hello", `"acme"`);
    await refused(wire, { type: "hello", tenant: "acme", create: false }, "bad_request", "a second hello");
    await refused(wire, { type: "hello", tenant: "nope", create: false }, "bad_request", "a second hello");
    // Still bound to "acme": its timeline answers; the refused hello created no tenant "other".
    assert.equal((await wire.request({ type: "list_files", timeline_id, lsn: LSN_MAX, after: "" })).type, "files");
    const tenants = await httpJson(port, "GET", "/v1/tenants");
    assert.deepEqual((tenants.body as { name: string }[]).map((t) => t.name), ["acme"]);
    // A connection whose hello was refused is unbound, and may say hello again (once it succeeds, for good).
    const other = await PageWire.connect(port);
    try {
      assertError(await other.request({ type: "hello", tenant: "nope", create: false }), 1, "unknown_tenant");
      const hello = await other.request({ type: "hello", tenant: "other", create: true }, CREATE_MS);
      assert.ok(hello.type === "hello_ok" && hello.tenant_id !== timeline_id);
      await refused(other, { type: "hello", tenant: "acme", create: false }, "bad_request", "a second hello");
      const list: RequestBody = { type: "list_files", timeline_id, lsn: LSN_MAX, after: "" };
      assertError(await other.request(list), 5, "unknown_timeline", timeline_id);
    } finally {
      other.close();
    }
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
