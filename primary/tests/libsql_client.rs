//! Conformance: the `libsql` crate's remote client (what Turso users run)
//! against this primary.

mod common;

use std::time::Duration;

use common::{Options, TestPrimary};
use libsql::{named_params, params, Value};

async fn single(conn: &libsql::Connection, sql: &str) -> Value {
    let mut rows = conn.query(sql, ()).await.expect("query");
    let row = rows.next().await.expect("next").expect("a row");
    row.get_value(0).expect("value")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_value_type_round_trips() {
    let primary = TestPrimary::start().await;
    let conn = primary.libsql().await;
    conn.execute("CREATE TABLE v (k INTEGER PRIMARY KEY, x)", ())
        .await
        .expect("create");
    let values = vec![
        Value::Null,
        Value::Integer(0),
        Value::Integer(i64::MAX),
        Value::Integer(i64::MIN),
        Value::Real(std::f64::consts::PI),
        Value::Real(-0.000_001_5),
        Value::Text(String::new()),
        Value::Text("Zoë ✊ 日本語 \"quotes\" \\ \n tab\t".into()),
        Value::Blob(vec![]),
        Value::Blob((0..=255u8).collect()),
    ];
    for (i, v) in values.iter().enumerate() {
        let n = conn
            .execute(
                "INSERT INTO v (k, x) VALUES (?1, ?2)",
                params![i as i64, v.clone()],
            )
            .await
            .expect("insert");
        assert_eq!(n, 1);
    }
    let mut rows = conn
        .query("SELECT x FROM v ORDER BY k", ())
        .await
        .expect("select");
    let mut got = Vec::new();
    while let Some(row) = rows.next().await.expect("next") {
        got.push(row.get_value(0).expect("value"));
    }
    assert_eq!(got, values);
}

#[tokio::test(flavor = "multi_thread")]
async fn positional_and_named_parameters() {
    let primary = TestPrimary::start().await;
    let conn = primary.libsql().await;
    assert_eq!(
        single(&conn, "SELECT 40 + 2").await,
        Value::Integer(42),
        "no parameters"
    );
    let mut rows = conn
        .query("SELECT ?1 || ?2, ?2", params!["a", "b"])
        .await
        .expect("positional");
    let row = rows.next().await.expect("next").expect("row");
    assert_eq!(row.get_value(0).expect("v"), Value::Text("ab".into()));
    let mut rows = conn
        .query(
            "SELECT :x * @y + $z",
            named_params! { ":x": 6, "@y": 7, "$z": 0 },
        )
        .await
        .expect("named");
    let row = rows.next().await.expect("next").expect("row");
    assert_eq!(row.get_value(0).expect("v"), Value::Integer(42));
}

#[tokio::test(flavor = "multi_thread")]
async fn affected_rows_and_last_insert_rowid() {
    let primary = TestPrimary::start().await;
    let conn = primary.libsql().await;
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)", ())
        .await
        .expect("create");
    for n in 0..5 {
        conn.execute("INSERT INTO t (n) VALUES (?)", params![n])
            .await
            .expect("insert");
    }
    assert_eq!(conn.last_insert_rowid(), 5);
    let changed = conn
        .execute("UPDATE t SET n = n + 1 WHERE n >= 2", ())
        .await
        .expect("update");
    assert_eq!(changed, 3);
    let changed = conn
        .execute("DELETE FROM t WHERE n > 100", ())
        .await
        .expect("delete");
    assert_eq!(changed, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_run_whole_or_roll_back() {
    let primary = TestPrimary::start().await;
    let conn = primary.libsql().await;
    conn.execute_batch(
        "CREATE TABLE b (k TEXT PRIMARY KEY); INSERT INTO b VALUES ('one'); INSERT INTO b VALUES ('two');",
    )
    .await
    .expect("batch");
    assert_eq!(
        single(&conn, "SELECT count(*) FROM b").await,
        Value::Integer(2)
    );
    let failed = conn
        .execute_transactional_batch(
            "INSERT INTO b VALUES ('three'); INSERT INTO b VALUES ('one'); INSERT INTO b VALUES ('four');",
        )
        .await;
    assert!(failed.is_err(), "duplicate key must fail the batch");
    assert_eq!(
        single(&conn, "SELECT count(*) FROM b").await,
        Value::Integer(2),
        "a failed transactional batch leaves nothing behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_transactions_commit_and_roll_back() {
    let primary = TestPrimary::start().await;
    let conn = primary.libsql().await;
    conn.execute("CREATE TABLE acct (id TEXT PRIMARY KEY, bal INTEGER)", ())
        .await
        .expect("create");
    conn.execute("INSERT INTO acct VALUES ('a', 100), ('b', 0)", ())
        .await
        .expect("seed");

    let tx = conn.transaction().await.expect("begin");
    tx.execute("UPDATE acct SET bal = bal - 30 WHERE id = 'a'", ())
        .await
        .expect("debit");
    tx.execute("UPDATE acct SET bal = bal + 30 WHERE id = 'b'", ())
        .await
        .expect("credit");
    // Another connection does not see uncommitted work.
    let other = primary.libsql().await;
    assert_eq!(
        single(&other, "SELECT bal FROM acct WHERE id = 'b'").await,
        Value::Integer(0)
    );
    tx.commit().await.expect("commit");
    assert_eq!(
        single(&other, "SELECT bal FROM acct WHERE id = 'b'").await,
        Value::Integer(30)
    );

    let tx = conn.transaction().await.expect("begin");
    tx.execute("DELETE FROM acct", ()).await.expect("delete");
    tx.rollback().await.expect("rollback");
    assert_eq!(
        single(&other, "SELECT count(*) FROM acct").await,
        Value::Integer(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_sqlite_codes_and_the_stream_goes_on() {
    let primary = TestPrimary::start().await;
    let conn = primary.libsql().await;
    conn.execute("CREATE TABLE u (k TEXT PRIMARY KEY NOT NULL)", ())
        .await
        .expect("create");
    conn.execute("INSERT INTO u VALUES ('x')", ())
        .await
        .expect("insert");
    let dup = conn
        .execute("INSERT INTO u VALUES ('x')", ())
        .await
        .expect_err("duplicate");
    let text = dup.to_string();
    assert!(text.contains("SQLITE_CONSTRAINT"), "{text}");
    assert!(text.contains("UNIQUE constraint failed"), "{text}");
    let syntax = conn.execute("SELEKT 1", ()).await.expect_err("syntax");
    assert!(syntax.to_string().contains("syntax error"), "{syntax}");
    let missing = conn
        .execute("INSERT INTO nowhere VALUES (1)", ())
        .await
        .expect_err("no table");
    assert!(missing.to_string().contains("no such table"), "{missing}");
    assert_eq!(
        single(&conn, "SELECT count(*) FROM u").await,
        Value::Integer(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_and_readers() {
    let primary = TestPrimary::start().await;
    let setup = primary.libsql().await;
    setup
        .execute(
            "CREATE TABLE c (id INTEGER PRIMARY KEY, writer INTEGER, n INTEGER)",
            (),
        )
        .await
        .expect("create");
    let writers = 16;
    let per_writer = 40;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let conn = primary.libsql().await;
        tasks.push(tokio::spawn(async move {
            for n in 0..per_writer {
                conn.execute("INSERT INTO c (writer, n) VALUES (?, ?)", params![w, n])
                    .await
                    .expect("insert under contention");
            }
        }));
    }
    for _ in 0..4 {
        let conn = primary.libsql().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                let mut rows = conn
                    .query("SELECT count(*) FROM c", ())
                    .await
                    .expect("read");
                rows.next().await.expect("next").expect("row");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        single(&setup, "SELECT count(*) FROM c").await,
        Value::Integer(writers * per_writer)
    );
    assert_eq!(
        single(&setup, "SELECT count(DISTINCT writer || '/' || n) FROM c").await,
        Value::Integer(writers * per_writer)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_transaction_expires_and_rolls_back() {
    let primary = TestPrimary::start_with(Options {
        limits: Some(common::short_expiry()),
        ..Options::default()
    })
    .await;
    let conn = primary.libsql().await;
    conn.execute("CREATE TABLE e (x)", ())
        .await
        .expect("create");
    let tx = conn.transaction().await.expect("begin");
    tx.execute("INSERT INTO e VALUES (1)", ())
        .await
        .expect("insert");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = tx.commit().await;
    assert!(late.is_err(), "commit on an expired stream must fail");
    assert_eq!(
        primary.running.streams.open_count(),
        0,
        "the idle stream was reaped"
    );
    let other = primary.libsql().await;
    assert_eq!(
        single(&other, "SELECT count(*) FROM e").await,
        Value::Integer(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_required_when_configured() {
    let primary = TestPrimary::start_with(Options {
        token: Some("s3cret-token".into()),
        ..Options::default()
    })
    .await;
    let good = primary.libsql().await;
    assert_eq!(single(&good, "SELECT 1").await, Value::Integer(1));
    let db = libsql::Builder::new_remote(primary.url(), "wrong".into())
        .build()
        .await
        .expect("build");
    let bad = db.connect().expect("connect");
    let err = bad
        .execute("SELECT 1", ())
        .await
        .expect_err("must be refused");
    assert!(err.to_string().contains("401"), "{err}");
}

/// Hrana requests the primary has served: (`/v3/pipeline`, `/v3/cursor`).
async fn served(primary: &TestPrimary) -> (u64, u64) {
    let stats: serde_json::Value = reqwest::get(format!("{}/stats", primary.url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    let count = |name: &str| stats["hrana_requests"][name].as_u64().expect("count");
    (count("v3_pipeline"), count("v3_cursor"))
}

/// The request pattern the Worker's `/__bench/per-statement` switch rebuilds
/// (`src/bench/client_pattern.rs`), checked against the client's own code
/// where its remote connection shares it with the wasm one: a read is a
/// describe and then the statement through the cursor. A transaction here
/// is BEGIN, an execute per statement, COMMIT; the wasm client's
/// `Transaction::execute` also sends a describe before each statement
/// (`libsql::wasm::Transaction`, through `hrana::Statement::new`), which
/// this native connection cannot show.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_sends_a_describe_and_then_each_read() {
    let primary = TestPrimary::start().await;
    let conn = primary.libsql().await;
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, x)", ())
        .await
        .expect("create");

    let before = served(&primary).await;
    for _ in 0..2 {
        let mut rows = conn
            .query("SELECT count(*) FROM t", ())
            .await
            .expect("query");
        while rows.next().await.expect("next").is_some() {}
    }
    let after = served(&primary).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (2, 2));

    let before = served(&primary).await;
    let tx = conn
        .transaction_with_behavior(libsql::TransactionBehavior::Immediate)
        .await
        .expect("begin");
    for k in 0..3 {
        tx.execute("INSERT INTO t (k, x) VALUES (?1, 'x')", params![k])
            .await
            .expect("insert");
    }
    tx.commit().await.expect("commit");
    let after = served(&primary).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (1 + 3 + 1, 0));
}
