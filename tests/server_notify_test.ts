// LISTEN/NOTIFY across the sessions of `tarn start`'s server, with node-postgres and postgres.js: a notification
// committed by one connection reaches every connection listening to its channel, and nobody else.
import { deepEqual, equal, ok } from "node:assert/strict";
import type pg from "pg";
import postgres from "postgres";
import { listenCommands } from "../src/server/notifications.ts";
import { withPgServer } from "./fixtures/pg_server.ts";

type Notice = { channel: string; payload?: string; processId: number };

const withServer = (fn: (port: number, connect: () => Promise<pg.Client>) => Promise<void>) =>
  withPgServer({}, (port, connect) => fn(port, () => connect()));

/** Collects a client's notifications. */
function collect(client: pg.Client): Notice[] {
  const seen: Notice[] = [];
  client.on("notification", (n: Notice) => seen.push(n));
  return seen;
}

/** Waits until `done` holds, for at most `timeout_ms`. */
async function until(done: () => boolean, timeout_ms = 5000): Promise<void> {
  const deadline_ms = performance.now() + timeout_ms;
  while (!done() && performance.now() < deadline_ms) await new Promise((resolve) => setTimeout(resolve, 10));
}

const serverTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });

serverTest(
  "notify: a committed NOTIFY reaches every listening connection, with the notifier's pid, and no other",
  () =>
    withServer(async (_port, connect) => {
      const [a, b, c, d] = [await connect(), await connect(), await connect(), await connect()];
      const [seen_a, seen_b, seen_c] = [collect(a), collect(b), collect(c)];
      await a.query("LISTEN jobs");
      await b.query('LISTEN "Jobs"; LISTEN jobs');
      const notifier = (await d.query("select pg_backend_pid() as pid")).rows[0].pid;
      await d.query("NOTIFY jobs, 'first'");
      await d.query("BEGIN; NOTIFY jobs, 'rolled back'; ROLLBACK");
      await d.query(`NOTIFY "Jobs", 'capital'`);
      await until(() => seen_a.length >= 1 && seen_b.length >= 2);
      await new Promise((resolve) => setTimeout(resolve, 100));
      deepEqual(seen_a.map((n) => [n.channel, n.payload]), [["jobs", "first"]]);
      deepEqual(seen_b.map((n) => [n.channel, n.payload]), [["jobs", "first"], ["Jobs", "capital"]]);
      deepEqual(seen_c, [], "c listens to nothing");
      ok(typeof notifier === "number");
      const d_pid = (d as unknown as { processID: number }).processID;
      ok(seen_a.every((n) => n.processId === d_pid), `the notifier's pid ${d_pid}: ${JSON.stringify(seen_a)}`);
      // One session's UNLISTEN leaves the others listening.
      await a.query("UNLISTEN jobs");
      await d.query("NOTIFY jobs, 'second'");
      await until(() => seen_b.length >= 3);
      equal(seen_b.at(-1)?.payload, "second");
      equal(seen_a.length, 1, "a no longer listens");
      // A listener that leaves takes its channels with it; a notification to a channel nobody hears goes nowhere.
      await b.end();
      await d.query("NOTIFY jobs, 'to nobody'");
      await c.query("select 1");
      deepEqual(seen_c, []);
    }),
);

serverTest(
  "notify: a session notified while it runs a statement gets the notification after its reply",
  () =>
    withServer(async (_port, connect) => {
      const [a, b] = [await connect(), await connect()];
      const seen = collect(a);
      await a.query("LISTEN busy");
      const long = a.query("select pg_sleep(0.3)");
      await new Promise((resolve) => setTimeout(resolve, 50));
      await b.query("NOTIFY busy, 'while sleeping'");
      await long;
      await until(() => seen.length >= 1);
      deepEqual(seen.map((n) => n.payload), ["while sleeping"]);
    }),
);

serverTest("notify: postgres.js listen() and notify() across two connections", () =>
  withServer(async (port) => {
    const url = `postgresql://postgres@127.0.0.1:${port}/postgres`;
    const listener = postgres(url, { max: 1, onnotice: () => {} });
    const sender = postgres(url, { max: 1, onnotice: () => {} });
    try {
      const received: string[] = [];
      await listener.listen("updates", (payload) => received.push(payload));
      await sender.notify("updates", "hello");
      await until(() => received.length > 0);
      deepEqual(received, ["hello"]);
    } finally {
      await Promise.all([listener.end(), sender.end()]);
    }
  }));

Deno.test("notify: LISTEN and UNLISTEN commands are read as Postgres reads them", () => {
  deepEqual(listenCommands(`LISTEN a; listen "Mixed ""Q"""; UNLISTEN *; discard all; select 'listen x'`), [
    { op: "listen", channel: "a" },
    { op: "listen", channel: 'Mixed "Q"' },
    { op: "unlisten", channel: "*" },
    { op: "unlisten", channel: "*" },
  ]);
  deepEqual(listenCommands("listen all_jobs"), [{ op: "listen", channel: "all_jobs" }]);
});
