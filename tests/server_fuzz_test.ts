// Thousands of random and mutated protocol messages against the server; afterwards a normal client still works
// and the data is unchanged. Seeded: a failure prints its seed, and TARN_FUZZ_SEED replays it.
import { deepStrictEqual } from "node:assert/strict";
// @ts-types="npm:@types/pg@8.23.1"
import pg from "pg";
import { Tarn } from "../mod.ts";
import { TarnServer } from "../src/server/server.ts";
import { backendMessage, cStrings } from "../src/server/wire.ts";
import { startupPacket } from "./fixtures/startup_packet.ts";
import { prng } from "./fixtures/prng.ts";

const SEED = Number(Deno.env.get("TARN_FUZZ_SEED") ?? Date.now() % 1_000_000);
const CONNECTIONS = 150;
const MESSAGES_PER_CONNECTION = 20;

/** A valid message of a random kind, to mutate. */
function validMessage(random: () => number): Uint8Array {
  const choices = [
    () => backendMessage("Q", cStrings("select 1")),
    () => backendMessage("P", cStrings("s", "select $1::int", "").slice(0, -1)),
    () => backendMessage("P", new Uint8Array([115, 0, 115, 101, 108, 101, 99, 116, 32, 49, 0, 0, 0])),
    () => backendMessage("B", new Uint8Array([0, 115, 0, 0, 0, 0, 0, 0, 0])),
    () => backendMessage("D", cStrings("Ss")),
    () => backendMessage("E", new Uint8Array([0, 0, 0, 0, 0])),
    () => backendMessage("C", cStrings("Ss")),
    () => backendMessage("S"),
    () => backendMessage("H"),
  ];
  return choices[Math.floor(random() * choices.length)]();
}

function fuzzMessage(random: () => number): Uint8Array {
  const roll = random();
  if (roll < 0.3) return crypto.getRandomValues(new Uint8Array(1 + Math.floor(random() * 64)));
  const message = validMessage(random);
  if (roll < 0.5) return message;
  const mutated = message.slice();
  const flips = 1 + Math.floor(random() * 3);
  for (let i = 0; i < flips; i++) mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
  return mutated;
}

Deno.test({
  name: `server fuzz: ${CONNECTIONS * MESSAGES_PER_CONNECTION} random and mutated messages (seed ${SEED})`,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const random = prng(SEED);
    await using tarn = await Tarn.open();
    const server = TarnServer.start(tarn, { port: 0, idle_in_transaction_ms: 200, max_message_bytes: 1024 * 1024 });
    try {
      const good = new pg.Client({ host: "127.0.0.1", port: server.port, user: "postgres" });
      await good.connect();
      await good.query("create table kept (id int primary key, v text)");
      await good.query("insert into kept select g, md5(g::text) from generate_series(1, 100) g");
      const before = (await good.query("select count(*)::int as n, md5(string_agg(v, ',' order by id)) as h from kept"))
        .rows;
      for (let c = 0; c < CONNECTIONS; c++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        const reading = (async () => {
          const sink = new Uint8Array(65536);
          try {
            while ((await conn.read(sink)) !== null);
          } catch {
            // the server closed it: what bad input gets
          }
        })();
        try {
          if (random() < 0.9) await conn.write(startupPacket());
          for (let m = 0; m < MESSAGES_PER_CONNECTION; m++) await conn.write(fuzzMessage(random));
          await conn.write(backendMessage("X"));
        } catch {
          // the server may close the connection as soon as it sees garbage
        }
        await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, 300))]);
        try {
          conn.close();
        } catch {
          // closed already
        }
        await reading;
      }
      const after = (await good.query("select count(*)::int as n, md5(string_agg(v, ',' order by id)) as h from kept"))
        .rows;
      deepStrictEqual(after, before, `data changed (seed ${SEED})`);
      deepStrictEqual((await good.query("select 41 + 1 as answer")).rows, [{ answer: 42 }]);
      await good.end();
    } finally {
      await server.close();
    }
  },
});
