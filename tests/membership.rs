//! Identity and membership against the real stack: session cookies created
//! on first write, tampered cookies refused, the legacy cookie upgraded
//! once, join/leave idempotent through the IssueCounter object, exact counts
//! under 200 concurrent joins, the flush to the primary, `/api/me`,
//! `/api/logout`, one round trip to the primary per join, and a steady
//! stream of joins on one issue (the primary slowed down) answered group
//! by group rather than when the stream ends, with a recount let in
//! between two of its groups.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::{eventually, int, run_cases, Reply, TestApp, ADMIN_TOKEN};
use qr_primary::client::{text, Value as Hv};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// How long the primary holds each request in the steady-stream case.
const HOLD_MS: u64 = 150;

fn string(v: &Hv) -> String {
    match v {
        Hv::Text { value } => value.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

/// A new organisation linked to `issue`.
async fn fresh_organisation(app: &TestApp, issue: &str) -> String {
    let org = app.fresh_organisation("Test council").await;
    app.link_organisation(issue, &org).await;
    org
}

async fn join(app: &TestApp, issue: &str, cookie: Option<&str>) -> Reply {
    app.call(
        Method::POST,
        &format!("/api/issues/{issue}/join"),
        cookie,
        None,
    )
    .await
}

async fn leave(app: &TestApp, issue: &str, cookie: Option<&str>) -> Reply {
    app.call(
        Method::DELETE,
        &format!("/api/issues/{issue}/join"),
        cookie,
        None,
    )
    .await
}

async fn primary_count(app: &TestApp, issue: &str) -> (i64, i64) {
    let rows = app
        .sql(
            "SELECT rioter_count, (SELECT count(*) FROM user_issues WHERE issue_id = ?1) \
             FROM issues WHERE id = ?1",
            vec![text(issue)],
        )
        .await;
    (int(&rows[0][0]), int(&rows[0][1]))
}

/// Waits (bounded) until the primary's `rioter_count` is `want`.
async fn flushed(app: &TestApp, issue: &str, want: i64) {
    eventually(
        "the counter's flush to the primary",
        Duration::from_secs(15),
        || async {
            let (stored, members) = primary_count(app, issue).await;
            assert_eq!(members, want, "user_issues rows");
            if stored == want {
                Ok(())
            } else {
                Err(format!("rioter_count is {stored}, not {want}"))
            }
        },
    )
    .await
}

async fn join_and_leave_are_idempotent(app: &TestApp) {
    let issue = app.fresh_issue("Idempotent joins").await;
    let first = join(app, &issue, None).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["changed"], true);
    assert_eq!(first.body["member"], true);
    assert_eq!(first.body["rioter_count"], 1);
    let cookie = first
        .cookie
        .expect("a session is created on the first write");
    let attrs = first
        .set_cookies
        .iter()
        .find(|c| c.starts_with("qr_session="))
        .expect("set-cookie");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Max-Age=31536000",
        "Path=/",
    ] {
        assert!(attrs.contains(attr), "{attr} missing: {attrs}");
    }

    let again = join(app, &issue, Some(&cookie)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body["changed"], false,
        "a repeated join changes nothing"
    );
    assert_eq!(again.body["rioter_count"], 1);
    assert!(again.cookie.is_none(), "a valid session is kept");

    // The writer sees its own count at once, through the cache.
    let detail = app.get_json(&format!("/api/issues/{issue}")).await;
    assert_eq!(detail["rioter_count"], 1, "{detail}");

    let other = join(app, &issue, None).await;
    assert_eq!(other.body["rioter_count"], 2);

    let left = leave(app, &issue, Some(&cookie)).await;
    assert_eq!(left.status, StatusCode::OK, "{}", left.body);
    assert_eq!(
        (&left.body["changed"], &left.body["member"]),
        (&json!(true), &json!(false))
    );
    assert_eq!(left.body["rioter_count"], 1);
    let left_again = leave(app, &issue, Some(&cookie)).await;
    assert_eq!(left_again.body["changed"], false);
    assert_eq!(left_again.body["rioter_count"], 1);

    flushed(app, &issue, 1).await;
    let daily = app
        .sql(
            "SELECT sum(joins), sum(leaves) FROM issue_daily WHERE issue_id = ?",
            vec![text(issue.as_str())],
        )
        .await;
    assert_eq!(
        (int(&daily[0][0]), int(&daily[0][1])),
        (2, 1),
        "only real changes count"
    );
}

async fn two_hundred_concurrent_joins_count_exactly(app: &TestApp) {
    let issue = app.fresh_issue("A hot issue").await;
    let org = fresh_organisation(app, &issue).await;
    let joins = (0..200).map(|i| {
        let issue = issue.clone();
        let body = (i % 2 == 0).then(|| json!({ "organisation_id": org }));
        async move {
            app.call(
                Method::POST,
                &format!("/api/issues/{issue}/join"),
                None,
                body,
            )
            .await
        }
    });
    let replies = futures::future::join_all(joins).await;
    for r in &replies {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["changed"], true);
    }
    let mut seen: Vec<i64> = replies
        .iter()
        .map(|r| r.body["rioter_count"].as_i64().expect("count"))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen.last(),
        Some(&200),
        "the live count reaches exactly 200"
    );
    flushed(app, &issue, 200).await;
    let org_count = app
        .sql(
            "SELECT rioter_count FROM issue_organisation WHERE issue_id = ? AND organisation_id = ?",
            vec![text(issue.as_str()), text(org.as_str())],
        )
        .await;
    assert_eq!(int(&org_count[0][0]), 100, "per organisation too");
    // Flushes are coalesced: far fewer counter writes than joins.
    let detail = app.get_json(&format!("/api/issues/{issue}")).await;
    assert_eq!(detail["rioter_count"], 200);
}

async fn bad_joins_are_refused_whole(app: &TestApp) {
    let issue = app.fresh_issue("Refusals").await;
    let r = join(app, UNKNOWN, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(r.cookie.is_none(), "nothing is created for a failed write");
    let r = join(app, "not-a-uuid", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .call(
            Method::POST,
            &format!("/api/issues/{issue}/join"),
            None,
            Some(json!({ "organisation_id": UNKNOWN })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["details"]["field"], "organisation_id");
    let r = app
        .call(
            Method::POST,
            &format!("/api/issues/{issue}/join"),
            None,
            Some(json!({ "organisation": "x" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["details"]["field"], "organisation");
    let (stored, members) = primary_count(app, &issue).await;
    assert_eq!((stored, members), (0, 0), "nothing half-written");
}

async fn tampered_cookies_are_never_trusted(app: &TestApp) {
    let issue = app.fresh_issue("Cookies").await;
    let first = join(app, &issue, None).await;
    let cookie = first.cookie.expect("cookie");
    let me = app.call(Method::GET, "/api/me", Some(&cookie), None).await;
    let user = me.body["user"]["id"].as_str().expect("user id").to_owned();
    assert_eq!(me.body["issues"][0]["id"], issue.as_str());

    let value = cookie.strip_prefix("qr_session=").expect("value");
    let mut flipped: Vec<char> = value.chars().collect();
    let at = flipped.len() / 2;
    flipped[at] = if flipped[at] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    let (head, _mac) = value.rsplit_once('.').expect("signed");
    let forged = format!("{head}.{}", "A".repeat(43));
    for bad in [
        flipped,
        value[..value.len() - 5].to_owned(),
        forged,
        "v1.k1.e30.AAAA".to_owned(),
    ] {
        let cookie = format!("qr_session={bad}");
        let me = app.call(Method::GET, "/api/me", Some(&cookie), None).await;
        assert_eq!(me.body["user"], Value::Null, "{bad} was trusted");
        let r = join(app, &issue, Some(&cookie)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["changed"], true, "a new user, not {user}");
        assert!(r.cookie.is_some(), "a fresh session replaces the bad one");
    }

    let out = app
        .call(Method::POST, "/api/logout", Some(&cookie), None)
        .await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(
        out.set_cookies
            .iter()
            .any(|c| c.starts_with("qr_session=;") && c.contains("Max-Age=0")),
        "{:?}",
        out.set_cookies
    );
}

/// A seed-era user whose legacy id was never upgraded, as its cookie.
async fn legacy_cookie(app: &TestApp) -> (String, String) {
    let rows = app
        .sql(
            "SELECT id FROM users WHERE NOT EXISTS (SELECT 1 FROM user_identities \
             WHERE provider = 'cookie' AND subject = users.id) LIMIT 1",
            vec![],
        )
        .await;
    let user = string(&rows[0][0]);
    let cookie = format!("qr_user_id={user}");
    (user, cookie)
}

/// The signed session an upgrade handed over; the legacy cookie cleared.
fn upgraded_session(reply: &Reply) -> String {
    assert!(
        reply
            .set_cookies
            .iter()
            .any(|c| c.starts_with("qr_user_id=;") && c.contains("Max-Age=0")),
        "{:?}",
        reply.set_cookies
    );
    reply
        .cookie
        .clone()
        .expect("a signed session replaces the legacy cookie")
}

async fn the_legacy_cookie_is_upgraded_once(app: &TestApp) {
    let issue = app.fresh_issue("Legacy").await;
    let (legacy_user, legacy) = legacy_cookie(app).await;
    let first = join(app, &issue, Some(&legacy)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let upgraded = upgraded_session(&first);
    let me = app
        .call(Method::GET, "/api/me", Some(&upgraded), None)
        .await;
    assert_eq!(me.body["user"]["id"], legacy_user.as_str());

    // The same legacy id again is not that user any more.
    let second = join(app, &issue, Some(&legacy)).await;
    let replay = second.cookie.expect("a new session");
    let me = app.call(Method::GET, "/api/me", Some(&replay), None).await;
    assert_ne!(me.body["user"]["id"], legacy_user.as_str());
    assert_eq!(second.body["changed"], true, "joined as a new user");
}

/// The upgrade commits before the write runs; a write that then fails
/// must still hand over the session, or the legacy user is lost.
async fn a_failed_write_still_hands_over_the_upgraded_session(app: &TestApp) {
    let (legacy_user, legacy) = legacy_cookie(app).await;
    let missing = "00000000-0000-4000-8000-0000000000aa";
    let failed = join(app, missing, Some(&legacy)).await;
    assert_eq!(failed.status, StatusCode::NOT_FOUND, "{}", failed.body);
    let session = upgraded_session(&failed);
    let me = app.call(Method::GET, "/api/me", Some(&session), None).await;
    assert_eq!(me.body["user"]["id"], legacy_user.as_str());
    // A new visitor's failed first write sets no session.
    let stranger = join(app, missing, None).await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    assert!(stranger.cookie.is_none(), "{:?}", stranger.set_cookies);
}

async fn a_join_is_one_round_trip(app: &TestApp) {
    let issue = app.fresh_issue("Round trips").await;
    let first = join(app, &issue, None).await;
    let cookie = first.cookie.expect("cookie");
    let other = app.fresh_issue("Round trips 2").await;
    for (method, id) in [(Method::POST, "rt-join-1"), (Method::DELETE, "rt-leave-1")] {
        let r = app
            .request(method, &format!("/api/issues/{other}/join"))
            .header("Cookie", &cookie)
            .header("X-Request-Id", id)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK);
        // The first change of an issue also takes its count: still one
        // transaction, one round trip.
        assert_eq!(app.round_trips(id).await, 1, "{id}");
    }
}

/// How often a stream of joins sends one.
const EVERY: Duration = Duration::from_millis(50);

/// `n` new visitors join `issue`, one every [`EVERY`] from `start`, each
/// whatever the earlier ones are doing; when each was sent and answered
/// (since `start`), and its reply, in the order sent.
async fn stream_of_joins(
    app: &TestApp,
    issue: &str,
    n: usize,
    start: Instant,
) -> Vec<(Duration, Duration, Reply)> {
    futures::future::join_all((0..n).map(|i| async move {
        tokio::time::sleep_until(start + EVERY * i as u32).await;
        let sent = start.elapsed();
        let reply = join(app, issue, None).await;
        (sent, start.elapsed(), reply)
    }))
    .await
}

/// Joins on one issue arriving faster than its transactions finish (the
/// primary holds each request `HOLD_MS`): the queue never empties while the
/// stream lasts. Each join must still be answered with its own group or the
/// next one, not when the stream ends: the object that sent a group hands
/// the queue on instead of sending until it is empty.
async fn a_steady_stream_holds_no_join_until_it_ends(app: &TestApp) {
    const JOINS: usize = 40;
    let issue = app.fresh_issue("A steady stream").await;
    let done = stream_of_joins(app, &issue, JOINS, Instant::now()).await;
    for (sent, answered, reply) in &done {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["changed"], true);
        // Answered before the join 20 places later (a second on) was sent.
        assert!(
            *answered < *sent + EVERY * 20,
            "a join sent at {sent:?} was answered at {answered:?}, behind the joins after it"
        );
    }
    let first_answered = done[0].1;
    let last_sent = done[JOINS - 1].0;
    assert!(
        first_answered < last_sent,
        "the first join was answered at {first_answered:?}, after the last was sent at {last_sent:?}"
    );
    flushed(app, &issue, JOINS as i64).await;
}

/// A recount asked for while a stream of joins keeps the object busy (the
/// reconcile job, after a member was added behind the object's back) goes
/// between two groups instead of waiting for the stream to end, and its
/// count is exact.
async fn a_recount_goes_between_a_streams_groups(app: &TestApp) {
    const JOINS: usize = 150;
    let issue = app.fresh_issue("Recounted mid-stream").await;
    let start = Instant::now();
    let joins = stream_of_joins(app, &issue, JOINS, start);
    let job = async {
        tokio::time::sleep_until(start + Duration::from_secs(1)).await;
        // A member the counter object never saw.
        app.insert_members(&issue, 1, None).await;
        let r = app
            .request(Method::POST, "/api/admin/jobs/reconcile_counts")
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("send");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (start.elapsed(), status, body)
    };
    let (joins, (job_done, status, body)) = tokio::join!(joins, job);
    for (_, _, reply) in &joins {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["changed"], true);
    }
    assert_eq!(status, StatusCode::OK, "{body}");
    let details = &body["run"]["details"];
    assert_eq!(details["counter_failures"], 0, "{body}");
    let corrected = details["corrections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["issue_id"] == issue.as_str() && c.get("counter").is_some())
        .unwrap_or_else(|| panic!("no counter correction for the stream's issue: {body}"));
    let was = corrected["counter"]["was"].as_i64().expect("was");
    assert_eq!(corrected["counter"]["now"], was + 1, "{corrected}");
    let last_sent = joins[JOINS - 1].0;
    eprintln!("  the job answered at {job_done:.1?}; the last join was sent at {last_sent:.1?}");
    assert!(
        job_done < last_sent,
        "the job's recount waited for the stream: answered at {job_done:?}, the last join sent at {last_sent:?}"
    );
    flushed(app, &issue, JOINS as i64 + 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_and_membership() {
    let mut app = TestApp::start().await;
    run_cases(vec![
        (
            "join and leave are idempotent",
            Box::pin(join_and_leave_are_idempotent(&app)),
        ),
        (
            "200 concurrent joins",
            Box::pin(two_hundred_concurrent_joins_count_exactly(&app)),
        ),
        ("bad joins", Box::pin(bad_joins_are_refused_whole(&app))),
        (
            "tampered cookies",
            Box::pin(tampered_cookies_are_never_trusted(&app)),
        ),
        (
            "legacy cookie",
            Box::pin(the_legacy_cookie_is_upgraded_once(&app)),
        ),
        (
            "a failed write keeps the upgrade",
            Box::pin(a_failed_write_still_hands_over_the_upgraded_session(&app)),
        ),
        ("one round trip", Box::pin(a_join_is_one_round_trip(&app))),
    ])
    .await;
    // Last: every transaction from here on is slow.
    app.restart_primary_with(&["--delay-ms", &HOLD_MS.to_string()]);
    run_cases(vec![
        (
            "a steady stream",
            Box::pin(a_steady_stream_holds_no_join_until_it_ends(&app)),
        ),
        (
            "a recount in a stream",
            Box::pin(a_recount_goes_between_a_streams_groups(&app)),
        ),
    ])
    .await;
}
