//! Writes while the primary is away: each is answered `202` with a status
//! URL, kept by the Outbox object, and replayed in order once the primary
//! is back; every one is then in the primary exactly once, including one
//! whose first attempt had in fact committed.

mod common;

use std::time::Duration;

use common::{eventually, int, TestApp};
use qr_primary::client::text;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const UNKNOWN_ISSUE: &str = "00000000-0000-4000-8000-000000000000";

/// A write that must be kept: 202, its status URL, the id in the body.
async fn kept(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    body: Option<Value>,
) -> (String, Value, Option<String>) {
    let r = app.call(method, path, cookie, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{path}: {}", r.body);
    assert_eq!(r.body["status"], "queued");
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(r.location.as_deref(), Some(&*format!("/api/outbox/{id}")));
    (id, r.body, r.cookie)
}

async fn status_of(app: &TestApp, id: &str) -> Value {
    let r = app
        .get(&format!("/api/outbox/{id}"))
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_while_the_primary_is_away_are_kept_and_replayed_once() {
    let mut app = TestApp::start().await;
    let issue = app.fresh_issue("Outbox issue").await;
    let joined = app
        .call(
            Method::POST,
            &format!("/api/issues/{issue}/join"),
            None,
            None,
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK);
    let member = joined.cookie.expect("session");

    app.stop_primary();
    let mut entries = Vec::new();
    let posts: Vec<String> = (1..=5)
        .map(|n| format!("Kept while the primary was away, number {n}"))
        .collect();
    for content in &posts {
        let path = format!("/api/issues/{issue}/feed");
        let (id, _, _) = kept(
            &app,
            Method::POST,
            &path,
            Some(&member),
            Some(json!({ "content": content })),
        )
        .await;
        entries.push(id);
    }
    // One post whose first attempt "did commit": its row is put in by hand below.
    let (committed, reply, _) = kept(
        &app,
        Method::POST,
        &format!("/api/issues/{issue}/feed"),
        Some(&member),
        Some(json!({ "content": "Committed before the timeout" })),
    )
    .await;
    let committed_row = reply["resource"]["id"].as_str().expect("row id").to_owned();
    entries.push(committed.clone());
    let (doomed, _, _) = kept(
        &app,
        Method::POST,
        &format!("/api/issues/{UNKNOWN_ISSUE}/feed"),
        Some(&member),
        Some(json!({ "content": "to nowhere" })),
    )
    .await;
    // A new visitor joins (and gets a session), the member leaves.
    let (joined, _, visitor) = kept(
        &app,
        Method::POST,
        &format!("/api/issues/{issue}/join"),
        None,
        None,
    )
    .await;
    assert!(
        visitor.is_some(),
        "a new visitor gets a session with the 202"
    );
    let visitor = visitor.expect("session");
    let (left, _, _) = kept(
        &app,
        Method::DELETE,
        &format!("/api/issues/{issue}/join"),
        Some(&member),
        None,
    )
    .await;
    // The visitor leaves again: replayed out of order (the leave before
    // the join), the visitor would stay a member.
    let (visitor_left, _, _) = kept(
        &app,
        Method::DELETE,
        &format!("/api/issues/{issue}/join"),
        Some(&visitor),
        None,
    )
    .await;
    let (created, reply, _) = kept(
        &app,
        Method::POST,
        "/api/issues",
        Some(&member),
        Some(json!({ "name": "Made in the dark", "category": "community" })),
    )
    .await;
    let new_issue = reply["resource"]["id"]
        .as_str()
        .expect("issue id")
        .to_owned();
    entries.extend([joined, left, visitor_left, created]);

    assert_eq!(status_of(&app, &entries[0]).await["status"], "queued");
    let r = app
        .call(Method::GET, "/api/outbox/not-a-uuid", None, None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .call(
            Method::GET,
            &format!("/api/outbox/{UNKNOWN_ISSUE}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    app.restart_primary();
    app.sql(
        "INSERT OR IGNORE INTO feed (id, issue_id, content, created_at) VALUES (?, ?, 'Committed before the timeout', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        vec![text(committed_row.as_str()), text(issue.as_str())],
    )
    .await;

    let mut all = entries.clone();
    all.push(doomed.clone());
    eventually(
        "every kept write's replay",
        Duration::from_secs(90),
        || async {
            let mut pending = 0;
            for id in &all {
                if status_of(&app, id).await["status"] == "queued" {
                    pending += 1;
                }
            }
            if pending == 0 {
                Ok(())
            } else {
                Err(format!("{pending} entries still queued"))
            }
        },
    )
    .await;
    for id in &entries {
        let s = status_of(&app, id).await;
        assert_eq!(s["status"], "applied", "{s}");
    }
    let failed = status_of(&app, &doomed).await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap_or_default().contains("404"),
        "{failed}"
    );

    // Each post exactly once, written in the order they were made (rowid:
    // the order the primary inserted them; the row committed before the
    // timeout was there before the replay began).
    let rows = app
        .sql(
            "SELECT content FROM feed WHERE issue_id = ? ORDER BY rowid",
            vec![text(issue.as_str())],
        )
        .await;
    let contents: Vec<String> = rows
        .iter()
        .map(|r| match &r[0] {
            qr_primary::client::Value::Text { value } => value.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    let mut want = vec!["Committed before the timeout".to_owned()];
    want.extend(posts.iter().cloned());
    assert_eq!(contents, want);
    // The visitor joined and left, the member left: no member, and the
    // count agrees.
    let members = app
        .sql(
            "SELECT count(*) FROM user_issues WHERE issue_id = ?",
            vec![text(issue.as_str())],
        )
        .await;
    assert_eq!(int(&members[0][0]), 0);
    let created = app
        .sql(
            "SELECT count(*) FROM issues WHERE id = ?",
            vec![text(new_issue.as_str())],
        )
        .await;
    assert_eq!(int(&created[0][0]), 1);
}
