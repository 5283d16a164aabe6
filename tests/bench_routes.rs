//! The benchmark switches (`/__bench/...`, `src/bench/`, in the build with
//! the `bench` feature): they do what the benchmarks rely on in
//! development, and are 404 anywhere else.

mod common;

use common::{int, run_cases, Case, TestApp};
use qr_primary::client::text;
use reqwest::Method;

const SWITCHES: [(&str, &str); 7] = [
    ("GET", "/__bench/constant"),
    ("GET", "/__bench/per-statement/api/issues"),
    ("GET", "/__bench/libsql-client/api/issues"),
    ("GET", "/__bench/no-limit/api/issues"),
    ("POST", "/__bench/counter-update/api/issues/{id}/join"),
    ("POST", "/__bench/per-statement/api/issues/{id}/join"),
    ("POST", "/__bench/elsewhere/api/admin/cache/invalidate"),
];

async fn some_issue(app: &TestApp) -> String {
    let rows = app.sql("SELECT id FROM issues LIMIT 1", vec![]).await;
    match &rows[0][0] {
        qr_primary::client::Value::Text { value } => value.to_string(),
        other => panic!("not an id: {other:?}"),
    }
}

async fn status(app: &TestApp, method: &str, path: &str) -> u16 {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    app.request(method, path)
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test]
async fn bench_switches_exist_only_in_development() {
    let app = TestApp::builder()
        .var("ENVIRONMENT", "staging")
        .var(
            "SESSION_SECRET",
            "a-staging-secret-of-at-least-32-characters",
        )
        .start()
        .await;
    let id = some_issue(&app).await;
    for (method, path) in SWITCHES {
        let path = path.replace("{id}", &id);
        assert_eq!(status(&app, method, &path).await, 404, "{method} {path}");
    }
    let members = app
        .sql(
            "SELECT count(*) FROM user_issues WHERE issue_id = ?",
            vec![text(id.as_str())],
        )
        .await;
    assert_eq!(status(&app, "GET", "/api/issues").await, 200);
    let after = app
        .sql(
            "SELECT count(*) FROM user_issues WHERE issue_id = ?",
            vec![text(id.as_str())],
        )
        .await;
    assert_eq!(
        int(&members[0][0]),
        int(&after[0][0]),
        "no join got through"
    );
}

#[tokio::test]
async fn bench_switches_in_development() {
    let app = TestApp::start().await;
    let cases: Vec<Case> = vec![
        // Before any join through the counter object, whose flush would
        // count as a counter UPDATE too.
        (
            "counter_update_joins_update_the_issue_row",
            Box::pin(counter_update(&app)),
        ),
        (
            "per_statement_and_libsql_client_reads_cost_two_round_trips_each",
            Box::pin(per_statement(&app)),
        ),
        ("no_limit_skips_the_limiter", Box::pin(no_limit(&app))),
        ("unknown_switches_are_404", Box::pin(unknown(&app))),
    ];
    run_cases(cases).await;
}

async fn per_statement(app: &TestApp) {
    let id = some_issue(app).await;
    let send = |path: String, rid: &'static str| app.get(&path).header("X-Request-Id", rid).send();
    let r = send(
        format!("/__bench/per-statement/api/issues/{id}"),
        "bench-ps-1",
    )
    .await
    .expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["id"], id.as_str());
    // One statement: a describe, then the statement through the cursor.
    assert_eq!(app.round_trips("bench-ps-1").await, 2);

    // The client itself sends no request id: count what the primary served.
    let served = |s: serde_json::Value| s["hrana_requests"]["total"].as_u64().expect("total");
    let before = served(app.primary_stats().await);
    let r = app
        .get(&format!("/__bench/libsql-client/api/issues/{id}/actions"))
        .send()
        .await
        .expect("send");
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    let after = served(app.primary_stats().await);
    // Two statements (the issue exists, its actions): describe + cursor each.
    assert_eq!(after - before, 4);

    let issue = app.fresh_issue("per-statement join").await;
    let r = app
        .request(
            Method::POST,
            &format!("/__bench/per-statement/api/issues/{issue}/join"),
        )
        .header("X-Request-Id", "bench-ps-2")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["rioter_count"], 1);
    assert_eq!(body["changed"], true);
    // BEGIN, describe + execute for each of the 6 statements (intent,
    // user, membership, daily, check, count), COMMIT.
    assert_eq!(app.round_trips("bench-ps-2").await, 14);
}

async fn counter_update(app: &TestApp) {
    let issue = app.fresh_issue("counter-update join").await;
    let before = app.primary_stats().await["counter_updates"]
        .as_u64()
        .expect("counter_updates");
    let path = format!("/__bench/counter-update/api/issues/{issue}/join");
    let r = app.request(Method::POST, &path).send().await.expect("send");
    assert_eq!(r.status(), 200);
    let cookie = common::session_cookie(r.headers()).expect("a session");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (body["changed"].clone(), body["rioter_count"].clone()),
        (true.into(), 1.into())
    );
    // Joining again changes nothing, the count included.
    let r = app
        .request(Method::POST, &path)
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("send");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (body["changed"].clone(), body["rioter_count"].clone()),
        (false.into(), 1.into())
    );
    let rows = app
        .sql(
            "SELECT rioter_count FROM issues WHERE id = ?",
            vec![text(issue.as_str())],
        )
        .await;
    assert_eq!(int(&rows[0][0]), 1, "written at once, not by a flush");
    let after = app.primary_stats().await["counter_updates"]
        .as_u64()
        .expect("counter_updates");
    // Each join's transaction runs its UPDATE (conditioned on the change).
    assert_eq!(after - before, 2);
}

async fn no_limit(app: &TestApp) {
    let limited = app.get("/api/issues").send().await.expect("send");
    assert!(limited.headers().get("ratelimit").is_some());
    let free = app
        .get("/__bench/no-limit/api/issues")
        .send()
        .await
        .expect("send");
    assert_eq!(free.status(), 200);
    assert!(free.headers().get("ratelimit").is_none());
}

async fn unknown(app: &TestApp) {
    for path in [
        "/__bench/other/api/issues",
        "/__bench/no-limit/health",
        "/__bench/per-statement",
    ] {
        assert_eq!(status(app, "GET", path).await, 404, "{path}");
    }
}
