//! A primary that is down or hung: the Worker answers 503 within its
//! database timeout, names the primary in /health, and recovers when the
//! primary is back.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, BlackHole, TestApp, CACHE_FRESH_SECS, DB_TIMEOUT};
use serde_json::Value;

/// Slack for wrangler's own overhead on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(3);

async fn expect_outage(app: &TestApp) {
    let started = Instant::now();
    let r = app.get("/health").send().await.expect("health");
    assert!(
        started.elapsed() < DB_TIMEOUT + SLACK,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["failing"], serde_json::json!(["primary"]), "{body}");
    assert_eq!(body["checks"]["kv"]["ok"], true);
    assert_eq!(body["checks"]["durable_object"]["ok"], true);

    let started = Instant::now();
    let r = app.get("/api/issues").send().await.expect("list");
    assert!(
        started.elapsed() < DB_TIMEOUT + SLACK,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "primary_unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_hung_primary_is_a_503_in_bounded_time() {
    let mut app = TestApp::start().await;
    let list = app.get_json("/api/issues?limit=3").await;
    let id = list["items"][0]["id"].as_str().expect("id").to_owned();
    let cached = format!("/api/issues/{id}");
    let first = app.get(&cached).send().await.expect("prime");
    assert_eq!(first.headers()["x-cache"], "MISS");
    let body = first.text().await.expect("body");

    // Down: the port refuses connections.
    app.stop_primary();
    expect_outage(&app).await;

    // What was cached is still served, fresh and then stale (time passing
    // past the fresh TTL is what this waits for).
    let past_fresh = Duration::from_secs(CACHE_FRESH_SECS) + Duration::from_millis(500);
    tokio::time::sleep(past_fresh).await;
    for _ in 0..2 {
        let r = app.get(&cached).send().await.expect("stale");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["x-cache"], "STALE");
        assert_eq!(r.text().await.expect("body"), body);
    }

    // Hung: the port accepts and never answers; the timeout must cut it.
    let hole = BlackHole::on_port(app.primary_port);
    expect_outage(&app).await;
    drop(hole);

    // Back: everything answers again.
    app.restart_primary();
    let r = app.get("/health").send().await.expect("health");
    assert_eq!(r.status().as_u16(), 200);
    let r = app.get("/api/issues?limit=1").send().await.expect("list");
    assert_eq!(r.status().as_u16(), 200);
    // The stale entry is refreshed (behind one more stale answer at most).
    eventually(
        "the stale entry's refresh after the primary came back",
        Duration::from_secs(10),
        || async {
            let r = app.get(&cached).send().await.expect("refresh");
            match r.headers()["x-cache"].to_str().expect("header") {
                "STALE" => Err("still STALE".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;
}
