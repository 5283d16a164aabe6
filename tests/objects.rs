//! Every Durable Object across an eviction and a restart of the stack on
//! its data: the answers go on as if nothing happened.
//!
//! - RateLimiter: a client's remaining write allowance continues (not
//!   reset, not broken) after its object was evicted, and after workerd was
//!   killed and started again.
//! - IssueCounter: an issue's live count continues exactly.
//! - Outbox: entries queued while the primary is away survive an eviction
//!   and a kill of workerd, and are replayed once and in order.
//!
//! And every saved shape loads in the runtime: with the stack stopped, the
//! objects' storage is put back to the first saved shape (the limiter's
//! old `bucket` table with an INTEGER nanosecond TAT, the counter's and the
//! outbox's JSON without a version), or made unreadable, and the stack
//! started again goes on from it (an unreadable limiter bucket starts half
//! used, an unreadable count is taken again from `user_issues`).

mod common;

use std::time::Duration;

use common::{eventually, int, TestApp, CLIENT_IP_HEADER, RATE_LIMITS};
use libsql_sys::rusqlite::{self, Connection};
use qr_primary::client::text;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Writes per IP in this app: a window so long that nothing refills while
/// the test waits for evictions, so the allowance is exact.
const WRITES: u32 = 20;

struct Reply {
    status: StatusCode,
    /// `r` of the `RateLimit` header.
    remaining: Option<u32>,
    cookie: Option<String>,
    body: Value,
}

async fn write(
    app: &TestApp,
    ip: &str,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut rb = app.request(method, path).header(CLIENT_IP_HEADER, ip);
    if let Some(c) = cookie {
        rb = rb.header("Cookie", c);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("send");
    let remaining = r
        .headers()
        .get("ratelimit")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(";r=").nth(1))
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.parse().ok());
    Reply {
        status: r.status(),
        remaining,
        cookie: common::session_cookie(r.headers()),
        body: r.json().await.unwrap_or(Value::Null),
    }
}

fn join(issue: &str) -> String {
    format!("/api/issues/{issue}/join")
}

/// A new visitor from IP 203.0.113.`n` joins `issue` (200).
async fn new_member(app: &TestApp, n: u8, issue: &str) -> Reply {
    let ip = format!("203.0.113.{n}");
    let r = write(app, &ip, Method::POST, &join(issue), None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r
}

/// The limiter's client writes once more: admitted (200, or 202 while the
/// primary is away) with one token fewer than `before` left.
async fn limiter_continues(app: &TestApp, issue: &str, session: &str, before: u32, when: &str) {
    let r = write(
        app,
        LIMITED_IP,
        Method::POST,
        &join(issue),
        Some(session),
        None,
    )
    .await;
    assert!(
        [StatusCode::OK, StatusCode::ACCEPTED].contains(&r.status),
        "{when}: {} {}",
        r.status,
        r.body
    );
    assert_eq!(
        r.remaining,
        Some(before - 1),
        "{when}: the allowance goes on from where it was (not reset, not broken)"
    );
}

const LIMITED_IP: &str = "198.51.100.77";
/// A client whose limiter state is made unreadable.
const RECOVERED_IP: &str = "198.51.100.78";

/// Puts the stopped stack's objects back to their first saved shapes, and
/// makes two of them unreadable.
fn rewrite_storage(app: &TestApp, counted: &str, recounted: &str) -> rusqlite::Result<()> {
    let open = |class: &str, name: &str| Connection::open(app.object_storage(class, name));

    // The limiter, version 1: table `bucket`, the TAT an INTEGER of ns.
    let db = open("RateLimiter", &format!("writes:{LIMITED_IP}"))?;
    let state: String = db.query_row("SELECT state FROM limiter WHERE id = 1", [], |r| r.get(0))?;
    let state: Value = serde_json::from_str(&state).expect("limiter state");
    let tat: i64 = state["tat_ns"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("tat_ns");
    assert!(tat > 1 << 53, "a TAT no JavaScript number holds exactly");
    db.execute_batch(
        "DROP TABLE limiter; \
         CREATE TABLE bucket (id INTEGER PRIMARY KEY CHECK (id = 1), tat_ns INTEGER NOT NULL)",
    )?;
    db.execute("INSERT INTO bucket (id, tat_ns) VALUES (1, ?1)", [tat])?;

    let db = open("RateLimiter", &format!("writes:{RECOVERED_IP}"))?;
    db.execute(
        "UPDATE limiter SET state = '{\"v\": 2, \"tat_ns\": \"soon\"}'",
        [],
    )?;

    // The counter, version 1: the same JSON without `v` and `recovered`.
    let db = open("IssueCounter", counted)?;
    let state: String = db.query_row("SELECT state FROM counter WHERE id = 1", [], |r| r.get(0))?;
    let mut state: Value = serde_json::from_str(&state).expect("counter state");
    assert_eq!(state["v"], 2);
    let fields = state.as_object_mut().expect("an object");
    fields.remove("v");
    fields.remove("recovered");
    db.execute("UPDATE counter SET state = ?1", [state.to_string()])?;

    let db = open("IssueCounter", recounted)?;
    db.execute("UPDATE counter SET state = 'not json'", [])?;

    // The outbox's queued entries, version 1: payloads without `v`, a
    // write kept as its path and body.
    let db = open("Outbox", "outbox")?;
    let mut rows = Vec::new();
    {
        let mut q = db.prepare("SELECT seq, payload FROM entries WHERE status = 'queued'")?;
        let mut r = q.query([])?;
        while let Some(row) = r.next()? {
            rows.push((row.get::<_, i64>(0)?, row.get::<_, String>(1)?));
        }
    }
    assert!(!rows.is_empty(), "entries to rewrite");
    for (seq, payload) in rows {
        let mut payload: Value = serde_json::from_str(&payload).expect("payload");
        assert_eq!(payload["v"], 3);
        let fields = payload.as_object_mut().expect("object");
        fields.remove("v");
        // Version 1 kept a write as its route's path and body.
        if let Some(write) = fields.remove("write") {
            let path = match (write["kind"].as_str(), write["issue_id"].as_str()) {
                (Some("issue"), _) => "/api/issues".to_owned(),
                (Some("post"), Some(id)) => format!("/api/issues/{id}/feed"),
                (Some("synonym"), Some(id)) => format!("/api/issues/{id}/synonyms"),
                (Some("action"), Some(id)) => format!("/api/issues/{id}/actions"),
                other => panic!("a kept write of an unknown kind: {other:?}"),
            };
            fields.insert("path".into(), Value::from(path));
            fields.insert("body".into(), write["body"].clone());
        }
        db.execute(
            "UPDATE entries SET payload = ?1 WHERE seq = ?2",
            rusqlite::params![payload.to_string(), seq],
        )?;
    }
    Ok(())
}

/// Members of `issue` in the primary.
async fn members(app: &TestApp, issue: &str) -> i64 {
    int(&app
        .sql(
            "SELECT count(*) FROM user_issues WHERE issue_id = ?",
            vec![text(issue)],
        )
        .await[0][0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_goes_on_across_an_eviction_and_a_restart() {
    let limits = RATE_LIMITS.replace("writes=100000/60", &format!("writes={WRITES}/86400"));
    assert_ne!(limits, RATE_LIMITS, "the writes policy to override");
    let mut app = TestApp::builder().var("RATE_LIMITS", &limits).start().await;
    let limited_issue = app.fresh_issue("Limiter across evictions").await;
    let counted = app.fresh_issue("Counter across evictions").await;

    // The limiter's client: three writes.
    let first = write(
        &app,
        LIMITED_IP,
        Method::POST,
        &join(&limited_issue),
        None,
        None,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.remaining, Some(WRITES - 1));
    let limited = first.cookie.expect("a session");
    let mut left = WRITES - 1;
    for method in [Method::DELETE, Method::POST] {
        let r = write(
            &app,
            LIMITED_IP,
            method,
            &join(&limited_issue),
            Some(&limited),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        left -= 1;
        assert_eq!(r.remaining, Some(left));
    }

    // The client whose bucket is made unreadable later: three writes.
    let mut recovered_session = None;
    for method in [Method::POST, Method::DELETE, Method::POST] {
        let r = write(
            &app,
            RECOVERED_IP,
            method,
            &join(&limited_issue),
            recovered_session.as_deref(),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        recovered_session = recovered_session.or(r.cookie);
    }
    let recovered_session = recovered_session.expect("a session");

    // The issue whose count is made unreadable later: two members.
    let recounted = app.fresh_issue("Counter counted again").await;
    for n in 21..=22u8 {
        new_member(&app, n, &recounted).await;
    }

    // The counter: five members, each from an IP of its own.
    let mut sessions = Vec::new();
    for n in 1..=5u8 {
        let r = new_member(&app, n, &counted).await;
        assert_eq!(r.body["rioter_count"], i64::from(n));
        sessions.push(r.cookie.expect("a session"));
    }

    // 1. Every object evicted.
    app.evict_objects().await;
    limiter_continues(&app, &limited_issue, &limited, left, "after an eviction").await;
    left -= 1;
    let r = new_member(&app, 6, &counted).await;
    assert_eq!(
        r.body["rioter_count"], 6,
        "the live count goes on exactly after an eviction"
    );
    sessions.push(r.cookie.expect("a session"));

    // 2. The primary goes away; writes are kept in the outbox, in an order
    // that only a replay in order leaves right: member 3 leaves and joins
    // again (a member at the end), member 2 leaves, a post, another post.
    app.stop_primary();
    let mut queued = Vec::new();
    let outage_writes: Vec<(usize, Method, String, Option<Value>)> = vec![
        (2, Method::DELETE, join(&counted), None),
        (2, Method::POST, join(&counted), None),
        (1, Method::DELETE, join(&counted), None),
        (
            0,
            Method::POST,
            format!("/api/issues/{counted}/feed"),
            Some(json!({ "content": "Kept across a restart, first" })),
        ),
        (
            0,
            Method::POST,
            format!("/api/issues/{counted}/feed"),
            Some(json!({ "content": "Kept across a restart, second" })),
        ),
    ];
    for (member, method, path, body) in outage_writes {
        let ip = format!("203.0.113.{}", member + 1);
        let r = write(&app, &ip, method, &path, Some(&sessions[member]), body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{path}: {}", r.body);
        queued.push(r.body["id"].as_str().expect("outbox id").to_owned());
    }

    // 3. Evicted again while entries wait, then workerd killed and started
    // again on the same state: still queued, the limiter goes on.
    app.evict_objects().await;
    app.restart_worker(true).await;
    limiter_continues(
        &app,
        &limited_issue,
        &limited,
        left,
        "after workerd was killed",
    )
    .await;
    left -= 1;
    for id in &queued {
        let status = app.get_json(&format!("/api/outbox/{id}")).await;
        assert_eq!(status["status"], "queued", "{status}");
    }

    // 3b. Stopped again; storage put back to the first saved shapes and two
    // states made unreadable; started again.
    app.stop_worker(false);
    rewrite_storage(&app, &counted, &recounted).expect("rewrite the objects' storage");
    app.start_worker().await;
    limiter_continues(
        &app,
        &limited_issue,
        &limited,
        left,
        "after loading its version 1 state",
    )
    .await;
    left -= 1;
    let r = write(
        &app,
        RECOVERED_IP,
        Method::POST,
        &join(&limited_issue),
        Some(&recovered_session),
        None,
    )
    .await;
    assert!(
        [StatusCode::OK, StatusCode::ACCEPTED].contains(&r.status),
        "an unreadable bucket never refuses: {} {}",
        r.status,
        r.body
    );
    assert_eq!(
        r.remaining,
        Some(WRITES - WRITES / 2 - 1),
        "an unreadable bucket starts half used"
    );
    let health = app.get_json_any("/health").await;
    assert_eq!(health["rate_limiter"]["buckets_recovered"], 1, "{health}");
    assert_eq!(health["rate_limiter"]["failures"], 0, "{health}");

    // 4. The primary is back: every entry is replayed, once, in order.
    app.restart_primary();
    let statuses = eventually(
        "every kept write's replay",
        Duration::from_secs(90),
        || async {
            let mut statuses = Vec::new();
            for id in &queued {
                let s = app.get_json(&format!("/api/outbox/{id}")).await;
                if s["status"] != "queued" {
                    statuses.push(s);
                }
            }
            if statuses.len() == queued.len() {
                Ok(statuses)
            } else {
                Err(format!("replayed so far: {statuses:?}"))
            }
        },
    )
    .await;
    for s in &statuses {
        assert_eq!(s["status"], "applied", "{s}");
    }
    assert_eq!(
        members(&app, &counted).await,
        5,
        "6 members, one left; the one who left and joined again is a member"
    );
    for content in [
        "Kept across a restart, first",
        "Kept across a restart, second",
    ] {
        let n = int(&app
            .sql(
                "SELECT count(*) FROM feed WHERE issue_id = ? AND content = ?",
                vec![text(counted.as_str()), text(content)],
            )
            .await[0][0]);
        assert_eq!(n, 1, "{content:?} is in the feed once");
    }

    // 5. The counter goes on exactly from the replayed changes.
    let r = new_member(&app, 7, &counted).await;
    assert_eq!(
        r.body["rioter_count"], 6,
        "the live count goes on exactly (from its version 1 state)"
    );
    assert_eq!(members(&app, &counted).await, 6);
    let r = new_member(&app, 23, &recounted).await;
    assert_eq!(
        r.body["rioter_count"], 3,
        "an unreadable count is taken again from user_issues"
    );

    // 6. A graceful restart too, and nothing the limiter saved was lost or
    // unreadable on the way.
    app.restart_worker(false).await;
    limiter_continues(&app, &limited_issue, &limited, left, "after a restart").await;
    let health = app.get_json("/health").await;
    assert_eq!(health["rate_limiter"]["failures"], 0, "{health}");
    assert_eq!(health["rate_limiter"]["buckets_recovered"], 0, "{health}");
}

/// A counter object that starts again trusts no saved count: a group in
/// flight when the last instance stopped may have committed without being
/// recorded (nothing is saved before a group goes out). Here a membership
/// the object never saw is written straight to the primary, workerd is
/// killed and started again on its state, and the next join's count takes
/// that membership in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_counter_counts_again() {
    let mut app = TestApp::start().await;
    let issue = app.fresh_issue("Counter started again").await;
    for n in 31..=32u8 {
        new_member(&app, n, &issue).await;
    }
    app.insert_members(&issue, 1, None).await;
    // The running object does not know: it moves its own count.
    let r = new_member(&app, 33, &issue).await;
    assert_eq!(r.body["rioter_count"], 3, "{}", r.body);

    app.restart_worker(true).await;
    let r = new_member(&app, 34, &issue).await;
    assert_eq!(
        r.body["rioter_count"], 5,
        "the first join after a start counts user_issues again: {}",
        r.body
    );
}
