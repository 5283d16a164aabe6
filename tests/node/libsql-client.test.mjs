// Conformance: @libsql/client (what the original Next.js app used) against the
// local primary over http://, which makes it speak Hrana 2 on /v2/pipeline.
//
// Starts its own primary (QR_PRIMARY_BIN, default target/debug/qr-primary) on
// a free port with a fresh database, and stops it at the end.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createClient, LibsqlError } from "@libsql/client";

const bin = process.env.QR_PRIMARY_BIN ?? "target/debug/qr-primary";
let server;
let dir;
let client;
let serverUrl;

before(async () => {
  if (!existsSync(bin)) {
    throw new Error(`${bin} not found: build it first (cargo build -p qr-primary) or set QR_PRIMARY_BIN`);
  }
  dir = mkdtempSync(join(tmpdir(), "qr-node-"));
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--db", join(dir, "node.db")], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("primary did not start within 10 s")), 10_000);
    server.once("exit", (code) => reject(new Error(`primary exited early with ${code}`)));
    createInterface({ input: server.stdout }).once("line", (line) => {
      clearTimeout(timer);
      const match = /^listening: (\S+)/.exec(line);
      match ? resolve(match[1]) : reject(new Error(`unexpected output: ${line}`));
    });
  });
  serverUrl = url;
  client = createClient({ url, intMode: "bigint" });
  await client.execute("CREATE TABLE v (k INTEGER PRIMARY KEY, x)");
});

after(() => {
  client?.close();
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("values of every type round-trip", async () => {
  const blob = new Uint8Array([0, 1, 2, 253, 254, 255]);
  const values = [null, 9223372036854775807n, -9223372036854775808n, 2.5, "Zoë ✊ 日本", blob.buffer];
  for (const [i, x] of values.entries()) {
    const r = await client.execute({ sql: "INSERT INTO v (k, x) VALUES (?, ?)", args: [i, x] });
    assert.equal(r.rowsAffected, 1);
    assert.equal(r.lastInsertRowid, BigInt(i));
  }
  const { rows, columns } = await client.execute("SELECT x FROM v ORDER BY k");
  assert.deepEqual(columns, ["x"]);
  assert.equal(rows[0].x, null);
  assert.equal(rows[1].x, 9223372036854775807n);
  assert.equal(rows[2].x, -9223372036854775808n);
  assert.equal(rows[3].x, 2.5);
  assert.equal(rows[4].x, "Zoë ✊ 日本");
  assert.deepEqual(new Uint8Array(rows[5].x), blob);
});

test("named parameters", async () => {
  const r = await client.execute({ sql: "SELECT :a * @b AS p, $c AS c", args: { a: 6n, b: 7n, c: "x" } });
  assert.equal(r.rows[0].p, 42n);
  assert.equal(r.rows[0].c, "x");
});

test("a batch applies whole or not at all", async () => {
  await client.batch(["CREATE TABLE b (k TEXT PRIMARY KEY)", { sql: "INSERT INTO b VALUES (?)", args: ["one"] }], "write");
  await assert.rejects(
    client.batch(
      [
        { sql: "INSERT INTO b VALUES (?)", args: ["two"] },
        { sql: "INSERT INTO b VALUES (?)", args: ["one"] },
      ],
      "write",
    ),
    (e) => e instanceof LibsqlError && e.code.startsWith("SQLITE_CONSTRAINT"),
  );
  const { rows } = await client.execute("SELECT count(*) AS n FROM b");
  assert.equal(rows[0].n, 1n);
});

test("interactive transactions commit and roll back", async () => {
  await client.execute("CREATE TABLE t (n INTEGER)");
  const tx = await client.transaction("write");
  await tx.execute("INSERT INTO t VALUES (1)");
  const inside = await tx.execute("SELECT count(*) AS n FROM t");
  assert.equal(inside.rows[0].n, 1n);
  await tx.commit();
  const rb = await client.transaction("write");
  await rb.execute("DELETE FROM t");
  await rb.rollback();
  const { rows } = await client.execute("SELECT count(*) AS n FROM t");
  assert.equal(rows[0].n, 1n);
});

test("errors carry SQLite codes", async () => {
  await assert.rejects(client.execute("SELEKT 1"), (e) => e instanceof LibsqlError && /syntax error/.test(e.message));
  await assert.rejects(
    client.execute("INSERT INTO b VALUES ('one')"),
    (e) => e instanceof LibsqlError && e.code.startsWith("SQLITE_CONSTRAINT") && /UNIQUE/.test(e.message),
  );
  const ok = await client.execute("SELECT 1 AS one");
  assert.equal(ok.rows[0].one, 1n);
});

test("a fresh client sees no other client's last rowid or changes", async () => {
  await client.execute("CREATE TABLE r (k INTEGER PRIMARY KEY, x)");
  const inserted = await client.execute("INSERT INTO r (x) VALUES ('a'), ('b')");
  assert.equal(inserted.lastInsertRowid, 2n);
  // A client of its own: its stream may get the pooled connection the
  // insert ran on; nothing of that insert may show.
  const fresh = createClient({ url: serverUrl, intMode: "bigint" });
  try {
    const one = await fresh.execute("SELECT 1 AS one");
    assert.equal(one.lastInsertRowid, undefined);
    assert.equal(one.rowsAffected, 0);
    const counters = await fresh.execute("SELECT last_insert_rowid() AS r, changes() AS c, total_changes() AS t");
    assert.deepEqual([counters.rows[0].r, counters.rows[0].c, counters.rows[0].t], [0n, 0n, 0n]);
  } finally {
    fresh.close();
  }
});
