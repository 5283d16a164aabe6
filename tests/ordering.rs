//! The latest intent wins across the outbox: a leave kept while the primary
//! was away, replayed after the same user joined again directly, changes
//! nothing (its status ends `superseded`), and the user stays the member
//! the newer answer said.

mod common;

use std::time::Duration;

use common::{eventually, int, TestApp};
use qr_primary::client::text;
use reqwest::{Method, StatusCode};

/// Members of `issue` with the user of `cookie` (via `/api/me`).
async fn is_member(app: &TestApp, cookie: &str, issue: &str) -> bool {
    let me = app.me(cookie).await;
    let user = me["user"]["id"].as_str().expect("a user").to_owned();
    int(&app
        .sql(
            "SELECT count(*) FROM user_issues WHERE user_id = ? AND issue_id = ?",
            vec![text(user.as_str()), text(issue)],
        )
        .await[0][0])
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_queued_leave_does_not_undo_a_newer_join() {
    let mut app = TestApp::start().await;
    let issue = app.fresh_issue("Overtaken leave").await;
    let path = format!("/api/issues/{issue}/join");

    let joined = app.call(Method::POST, &path, None, None).await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    let cookie = joined.cookie.expect("a session");

    // The primary goes away; the leave is kept.
    app.stop_primary();
    let left = app.call(Method::DELETE, &path, Some(&cookie), None).await;
    assert_eq!(left.status, StatusCode::ACCEPTED, "{}", left.body);
    let entry = left.body["id"].as_str().expect("outbox id").to_owned();

    // The outbox tries again after 1, 2, 4, 8 s... while the primary is
    // away; back after 9 s, its next try is several seconds off, so the
    // user's new join comes first. (Time passing is what this waits for.)
    let outbox_backs_off = Duration::from_secs(9);
    tokio::time::sleep(outbox_backs_off).await;
    app.restart_primary();
    let again = app.call(Method::POST, &path, Some(&cookie), None).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["member"], true);

    let status = eventually(
        "the kept leave's replay",
        Duration::from_secs(90),
        || async {
            let s = app.get_json(&format!("/api/outbox/{entry}")).await;
            if s["status"] != "queued" {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    assert_eq!(status["status"], "superseded", "{status}");
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.contains("newer")),
        "{status}"
    );
    assert!(
        is_member(&app, &cookie, &issue).await,
        "the newer join stands"
    );
    let detail = app.get_json(&format!("/api/issues/{issue}")).await;
    assert_eq!(detail["rioter_count"], 1, "{detail}");
}
