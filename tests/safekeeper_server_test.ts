import assert from "node:assert/strict";
import { encodeMessage } from "../src/replication/safekeeper/codec.ts";
import { FrameReader } from "../src/replication/safekeeper/frame_reader.ts";
import type { Message, ProposerMessage } from "../src/replication/safekeeper/messages.ts";
import { SafekeeperServer, type SafekeeperServerOptions } from "../src/replication/safekeeper/server.ts";
import { withTempDir } from "./fixtures/temp_dir.ts";

const MIB = 1024 * 1024;
const START_LSN = 0x100_0000n;
const HISTORY = [{ term: 1n, start_lsn: START_LSN }];
/** Part of the WAL is committed, so flush and commit differ. */
const COMMIT_LSN = START_LSN + 100n;
const WAL = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 0xff);

type Event = { event: string; fields: Record<string, unknown> };

/** A server on 127.0.0.1 with its log kept. */
async function startServer(dir: string, opts: Partial<SafekeeperServerOptions> = {}) {
  const events: Event[] = [];
  const server = await SafekeeperServer.start({
    dir,
    hostname: "127.0.0.1",
    port: 0,
    node_id: 7,
    // Through JSON, as `--log-format json` writes it: a field JSON cannot hold fails the test.
    log: (event, fields) => events.push(JSON.parse(JSON.stringify({ event, fields }))),
    ...opts,
  });
  return { server, events };
}

/** A raw protocol client. */
class Client {
  readonly #reader = new FrameReader();
  readonly #ready: Message[] = [];
  private constructor(readonly conn: Deno.TcpConn) {}

  static async connect(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.length;) done += await this.conn.write(bytes.subarray(done));
  }

  async ask(msg: Message): Promise<Message> {
    await this.send(encodeMessage(msg));
    return await this.receive();
  }

  async receive(): Promise<Message> {
    const buffer = new Uint8Array(64 * 1024);
    while (this.#ready.length === 0) {
      const n = await this.conn.read(buffer);
      if (n === null) throw new Error("the safekeeper closed the connection");
      this.#ready.push(...this.#reader.push(buffer.subarray(0, n)));
    }
    return this.#ready.shift()!;
  }

  /**
   * Reads until the server closes the connection (EOF or reset) and returns the bytes received meanwhile; -1 when it
   * did not close it within 5 s.
   */
  async bytesUntilClosed(): Promise<number> {
    const timer = setTimeout(() => this.conn.close(), 5000);
    let received = 0;
    try {
      for (let n: number | null = 0; n !== null; n = await this.conn.read(new Uint8Array(1024))) received += n;
      return received;
    } catch (error) {
      return error instanceof Deno.errors.ConnectionReset ? received : -1;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed by the timeout of bytesUntilClosed.
    }
  }
}

async function hello(port: number, tenant_id: string, timeline_id: string): Promise<[Client, Message]> {
  const client = await Client.connect(port);
  return [client, await client.ask({ type: "hello", tenant_id, timeline_id, segment_size: MIB })];
}

/** Vote, elected and one append of {@linkcode WAL} in term 1, committing up to COMMIT_LSN; returns the append's answer. */
async function writeTerm1(client: Client): Promise<Message> {
  const vote = await client.ask({ type: "vote_request", term: 1n, proposer_id: 42n });
  assert.deepEqual(vote, {
    type: "vote_response",
    term: 1n,
    granted: true,
    flush_lsn: 0n,
    commit_lsn: 0n,
    last_log_term: 0n,
    term_history: [],
  });
  const elected = await client.ask({ type: "elected", term: 1n, term_start_lsn: START_LSN, term_history: HISTORY });
  assert.deepEqual(elected, {
    type: "append_response",
    term: 1n,
    status: "ok",
    flush_lsn: START_LSN,
    commit_lsn: 0n,
  });
  return await client.ask({
    type: "append_request",
    term: 1n,
    begin_lsn: START_LSN,
    commit_lsn: COMMIT_LSN,
    bytes: WAL,
  });
}

async function getText(port: number, path: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: response.status, body: await response.text() };
}

Deno.test("hello, vote, elected and append over TCP; the WAL is there after a restart", async () => {
  await withTempDir(async (dir) => {
    const first = await startServer(dir);
    const [client, answer] = await hello(first.server.port, "tenant1", "timeline1");
    assert.deepEqual(answer, { type: "hello_response", node_id: 7, term: 0n, flush_lsn: 0n, commit_lsn: 0n });
    const end_lsn = START_LSN + BigInt(WAL.length);
    const appended = await writeTerm1(client);
    assert.deepEqual(appended, {
      type: "append_response",
      term: 1n,
      status: "ok",
      flush_lsn: end_lsn,
      commit_lsn: COMMIT_LSN,
    });
    client.close();
    await first.server.close();

    const second = await startServer(dir);
    try {
      const [again, answer2] = await hello(second.server.port, "tenant1", "timeline1");
      assert.deepEqual(answer2, {
        type: "hello_response",
        node_id: 7,
        term: 1n,
        flush_lsn: end_lsn,
        commit_lsn: COMMIT_LSN,
      });
      const read = await again.ask({ type: "read_request", term: 1n, lsn_start: START_LSN, lsn_end: end_lsn });
      assert.equal(read.type, "read_response");
      assert.deepEqual(read.type === "read_response" && read.bytes, WAL);
      again.close();
      assert.ok(second.events.some((e) => e.event === "timeline_opened" && e.fields.flush_lsn === "0/10003E8"));
    } finally {
      await second.server.close();
    }
  });
});

Deno.test("two timelines are isolated; two connections to one timeline share it", async () => {
  await withTempDir(async (dir) => {
    const { server, events } = await startServer(dir);
    try {
      const [a1] = await hello(server.port, "tenant1", "a");
      const [b] = await hello(server.port, "tenant1", "b");
      await writeTerm1(a1);
      const b_vote = await b.ask({ type: "vote_request", term: 1n, proposer_id: 9n });
      assert.ok(b_vote.type === "vote_response" && b_vote.granted && b_vote.flush_lsn === 0n);
      const [a2, a2_hello] = await hello(server.port, "tenant1", "a");
      assert.ok(a2_hello.type === "hello_response" && a2_hello.term === 1n && a2_hello.flush_lsn === 0x10003e8n);
      const a2_vote = await a2.ask({ type: "vote_request", term: 1n, proposer_id: 9n });
      assert.ok(a2_vote.type === "vote_response" && !a2_vote.granted, "term 1 of timeline a went to proposer 42");
      const other = await Client.connect(server.port);
      await other.send(encodeMessage({ type: "hello", tenant_id: "tenant1", timeline_id: "a", segment_size: 2 * MIB }));
      assert.equal(await other.bytesUntilClosed(), 0, "a hello with another segment size is refused");
      assert.ok(events.some((e) => e.event === "hello_refused" && String(e.fields.error).includes("tenant1/a")));
      for (const client of [a1, a2, b, other]) client.close();
    } finally {
      await server.close();
    }
  });
});

const HEADER_ONLY = (() => {
  const frame = encodeMessage({ type: "status_request" });
  new DataView(frame.buffer).setUint32(8, 0xffff_fff0, true); // declares a body of ~4 GiB
  return frame.subarray(0, 12);
})();
const BAD_INPUTS: [string, Uint8Array, string][] = [
  ["garbage", new TextEncoder().encode("SSH-2.0-OpenSSH_9.6\r\n"), "magic"],
  [
    "a truncated frame",
    encodeMessage({ type: "hello", tenant_id: "t", timeline_id: "x", segment_size: MIB }).subarray(0, 20),
    "inside a frame",
  ],
  ["a first frame that is not hello", encodeMessage({ type: "status_request" }), "expected hello"],
  ["an oversized frame", HEADER_ONLY, "over the limit"],
  [
    "a safekeeper message after hello",
    concat(
      encodeMessage({ type: "hello", tenant_id: "t", timeline_id: "x", segment_size: MIB }),
      encodeMessage({ type: "hello", tenant_id: "t", timeline_id: "x", segment_size: MIB }),
    ),
    "hello frame after the hello",
  ],
];

Deno.test("bad input closes only its own connection; the server carries on", async () => {
  await withTempDir(async (dir) => {
    const { server, events } = await startServer(dir, { hello_timeout_ms: 300 });
    try {
      const [bystander] = await hello(server.port, "t", "y");
      for (const [what, bytes, reason] of BAD_INPUTS) {
        const bad = await Client.connect(server.port);
        await bad.send(bytes);
        await bad.conn.closeWrite();
        assert.ok(await bad.bytesUntilClosed() >= 0, `${what} closes the connection`);
        bad.close();
        const logged = events.find((e) => e.event === "protocol_error" && String(e.fields.error).includes(reason));
        assert.ok(logged, `${what} is logged with "${reason}": ${Deno.inspect(events)}`);
        const status = await bystander.ask({ type: "status_request" });
        assert.equal(status.type, "status_response", `the bystander is served after ${what}`);
      }
      const silent = await Client.connect(server.port);
      await silent.send(HEADER_ONLY.subarray(0, 5)); // a partial frame, then nothing
      assert.equal(await silent.bytesUntilClosed(), 0, "a connection that never completes its hello is dropped");
      assert.ok(events.some((e) => e.event === "hello_timeout"));
      silent.close();
      const [late, answer] = await hello(server.port, "t", "z");
      assert.equal(answer.type, "hello_response");
      late.close();
      bystander.close();
    } finally {
      await server.close();
    }
  });
});

Deno.test("a storage failure stops the timeline: no acknowledgement, connections closed, hellos refused", async () => {
  await withTempDir(async (dir) => {
    const { server, events } = await startServer(dir);
    try {
      const [client] = await hello(server.port, "t", "doomed");
      await writeTerm1(client);
      // Open files keep working without their directory, but the next segment file cannot be created.
      await Deno.remove(`${dir}/tenants/t/timelines/doomed/wal`, { recursive: true });
      const end_lsn = START_LSN + BigInt(WAL.length);
      const big: ProposerMessage = {
        type: "append_request",
        term: 1n,
        begin_lsn: end_lsn,
        commit_lsn: end_lsn,
        bytes: new Uint8Array(MIB),
      };
      await client.send(encodeMessage(big));
      assert.equal(await client.bytesUntilClosed(), 0, "the append is not acknowledged");
      client.close();
      assert.ok(events.some((e) => e.event === "timeline_failed" && e.fields.tenant_id === "t"));
      const again = await Client.connect(server.port);
      await again.send(encodeMessage({ type: "hello", tenant_id: "t", timeline_id: "doomed", segment_size: MIB }));
      assert.equal(await again.bytesUntilClosed(), 0, "the failed timeline refuses hellos");
      again.close();
      const status = JSON.parse((await getText(server.port, "/status")).body);
      assert.deepEqual(status.timelines, []);
      assert.equal(status.failed.length, 1);
      assert.equal(status.failed[0].timeline_id, "doomed");
      assert.match((await getText(server.port, "/metrics")).body, /^tarn_safekeeper_timelines_failed 1$/m);
    } finally {
      await server.close();
    }
  });
});

Deno.test("GET /status and /metrics on the protocol port, timelines on disk included", async () => {
  await withTempDir(async (dir) => {
    const first = await startServer(dir);
    const [client] = await hello(first.server.port, "tenant1", "timeline1");
    await writeTerm1(client);
    await client.ask({
      type: "append_request",
      term: 1n,
      begin_lsn: START_LSN,
      commit_lsn: START_LSN + 200n,
      bytes: new Uint8Array(0),
    });
    client.close();
    await first.server.close();

    const { server } = await startServer(dir, { node_id: 3 });
    try {
      const status = await getText(server.port, "/status?verbose");
      assert.equal(status.status, 200);
      assert.deepEqual(JSON.parse(status.body), {
        node_id: 3,
        connections: 1,
        timelines: [{
          tenant_id: "tenant1",
          timeline_id: "timeline1",
          term: 1,
          flush_lsn: "0/10003E8",
          // The commit LSN is persisted lazily (advisory): the restart forgot the heartbeat's 0/10000C8.
          commit_lsn: "0/1000064",
          lag_bytes: 900,
          last_log_term: 1,
          wal_start_lsn: "0/1000000",
        }],
        failed: [],
      });
      const metrics = await getText(server.port, "/metrics");
      assert.equal(metrics.status, 200);
      const labels = '{tenant_id="tenant1",timeline_id="timeline1"}';
      for (
        const line of [
          "# TYPE tarn_safekeeper_term gauge",
          `tarn_safekeeper_term${labels} 1`,
          "# HELP tarn_safekeeper_flush_lsn_bytes The end of the durable WAL.",
          `tarn_safekeeper_flush_lsn_bytes${labels} ${0x10003e8}`,
          `tarn_safekeeper_commit_lsn_bytes${labels} ${0x1000064}`,
          `tarn_safekeeper_lag_bytes${labels} 900`,
          "tarn_safekeeper_connections 1",
        ]
      ) assert.ok(metrics.body.split("\n").includes(line), `${line} in\n${metrics.body}`);
      assert.equal((await getText(server.port, "/nothing")).status, 404);
    } finally {
      await server.close();
    }
  });
});

Deno.test("tarn safekeeper: --help, bad flags, and a process that serves /status and stops on SIGTERM", async () => {
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", "main.ts", ...args] }).output();
  const help = await run(["safekeeper", "--help"]);
  assert.equal(help.code, 0);
  assert.match(new TextDecoder().decode(help.stdout), /--listen HOST:PORT/);
  for (
    const args of [["--bogus"], ["--data", "x", "--listen", "nowhere", "--id", "1"], [
      "--data",
      "x",
      "--listen",
      "127.0.0.1:0",
    ]]
  ) {
    const bad = await run(["safekeeper", ...args]);
    assert.equal(bad.code, 2, args.join(" "));
    assert.match(
      new TextDecoder().decode(bad.stderr),
      /tarn safekeeper: (unknown flag --bogus|--listen needs|--id is required)/,
    );
  }
  await withTempDir(async (dir) => {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "main.ts",
        "safekeeper",
        "--data",
        dir,
        "--listen",
        "127.0.0.1:0",
        "--id",
        "12",
        "--log-format",
        "json",
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    try {
      let port = 0;
      while (port === 0) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`tarn safekeeper exited before listening:\n${text}`);
        text += value;
        port = Number(/"event":"listening"[^\n]*"port":(\d+)/.exec(text)?.[1] ?? 0);
      }
      const status = JSON.parse((await getText(port, "/status")).body);
      assert.deepEqual(status, { node_id: 12, connections: 1, timelines: [], failed: [] });
    } finally {
      child.kill("SIGTERM");
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += r.value;
    }
    assert.equal((await child.status).code, 0);
    assert.match(text, /"event":"stopped"/);
  });
});

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
