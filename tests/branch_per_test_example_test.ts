// The branch-per-test pattern (README, "A branch per test"): the schema and seed data are loaded once on main,
// then every test takes its own fork, writes what it likes, and the fork is deleted when the test ends.
import { deepStrictEqual, rejects } from "node:assert/strict";
import { Tarn } from "../mod.ts";

const tarn = await Tarn.open();
const seed = await tarn.connect();
await seed.exec(`
  create table users (id serial primary key, email text unique not null);
  create table orders (id serial primary key, user_id int not null references users, total numeric not null);
  insert into users (email) select 'user' || g || '@example.com' from generate_series(1, 100) g;
  insert into orders (user_id, total) select 1 + g % 100, g from generate_series(1, 1000) g;
`);

Deno.test("a test deletes every order and sees none", async () => {
  await using db = await tarn.fork();
  await db.query("delete from orders");
  deepStrictEqual((await db.query("select count(*)::int as n from orders")).rows, [{ n: 0 }]);
});

Deno.test("the next test still sees the seed data", async () => {
  await using db = await tarn.fork();
  deepStrictEqual((await db.query("select count(*)::int as n from orders")).rows, [{ n: 1000 }]);
});

Deno.test("constraints hold on a fork", async () => {
  await using db = await tarn.fork();
  await rejects(db.query("insert into users (email) values ('user1@example.com')"), /duplicate key/);
});

Deno.test("forks side by side do not see each other", async () => {
  await using a = await tarn.fork();
  await using b = await tarn.fork();
  await Promise.all([
    a.query("update users set email = 'a@example.com' where id = 1"),
    b.query("update users set email = 'b@example.com' where id = 1"),
  ]);
  deepStrictEqual((await a.sql`select email from users where id = ${1}`).rows, [{ email: "a@example.com" }]);
  deepStrictEqual((await b.sql`select email from users where id = ${1}`).rows, [{ email: "b@example.com" }]);
});

Deno.test("main is untouched after all of that", async () => {
  const { rows } = await seed.query("select count(*)::int as orders, min(email) as first from orders, users");
  deepStrictEqual(rows, [{ orders: 100_000, first: "user100@example.com" }]);
  deepStrictEqual(tarn.branches().map((b) => b.name), ["main"]);
});
