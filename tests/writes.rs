//! The issue write routes against the real stack: create an issue, post to
//! its feed, add synonyms and actions; validation naming the field, 404s,
//! nothing half-written; `Idempotency-Key` replays (also under concurrent
//! duplicates) and 422 for another body; the writer reading its write at
//! once through the cache; `issue_daily` counts; round trips to the primary.

mod common;

use common::{int, run_cases, session_cookie, TestApp};
use qr_primary::client::{text, Value as Hv};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

/// One integer from the primary.
async fn count(app: &TestApp, sql: &str, args: Vec<Hv>) -> i64 {
    let rows = app.sql(sql, args).await;
    int(&rows[0][0])
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `name=value` of the session cookie set, if any.
    fn session(&self) -> Option<String> {
        session_cookie(&self.headers)
    }

    fn field(&self) -> &str {
        self.body["error"]["details"]["field"]
            .as_str()
            .unwrap_or_default()
    }
}

#[derive(Default, Clone, Copy)]
struct With<'a> {
    cookie: Option<&'a str>,
    key: Option<&'a str>,
    request_id: Option<&'a str>,
}

async fn post(app: &TestApp, path: &str, body: Value, with: With<'_>) -> Reply {
    let mut rb = app.request(Method::POST, path).json(&body);
    if let Some(c) = with.cookie {
        rb = rb.header("Cookie", c);
    }
    if let Some(k) = with.key {
        rb = rb.header("Idempotency-Key", k);
    }
    if let Some(id) = with.request_id {
        rb = rb.header("X-Request-Id", id);
    }
    let r = rb.send().await.expect("send");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// A session of its own: the cookie a first write starts.
async fn session(app: &TestApp) -> String {
    let issue = app.fresh_issue("Session starter").await;
    let r = post(
        app,
        &format!("/api/issues/{issue}/feed"),
        json!({"content": "hello"}),
        With::default(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.session().expect("a first write starts a session")
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn a_new_issue_is_readable_and_searchable_at_once(app: &TestApp) {
    let org = app.fresh_organisation("Quokkaville council").await;
    // Cached before the write: the write must invalidate these.
    let search = "/api/issues?q=quokkaville";
    assert!(names(&app.get_json(search).await).is_empty());
    let newest = "/api/issues?sort=new&limit=5";
    app.get_json(newest).await;
    let org_path = format!("/api/organisations/{org}");
    assert_eq!(app.get_json(&org_path).await["issues"], json!([]));

    let r = post(
        app,
        "/api/issues",
        json!({
            "name": "  Zebra crossing missing in Quokkaville ",
            "category": "Safety",
            "description": "Children cross the high street\nwithout one.",
            "organisation_ids": [org.to_uppercase()],
        }),
        With::default(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(r.header("location"), Some(&*format!("/api/issues/{id}")));
    assert!(r.session().is_some(), "a new caller gets a session");
    assert_eq!(r.header("idempotent-replayed"), None);
    assert_eq!(r.body["name"], "Zebra crossing missing in Quokkaville");
    assert_eq!(r.body["category"], "safety");
    assert_eq!(r.body["rioter_count"], 0);
    assert_eq!(r.body["organisation_ids"], json!([org]));

    let detail = app.get_json(&format!("/api/issues/{id}")).await;
    assert_eq!(detail["name"], r.body["name"]);
    assert_eq!(detail["created_at"], r.body["created_at"]);
    assert_eq!(detail["organisations"][0]["id"], org.as_str());
    assert_eq!(
        names(&app.get_json(search).await),
        ["Zebra crossing missing in Quokkaville"],
        "searchable at once"
    );
    assert!(names(&app.get_json(newest).await)
        .contains(&r.body["name"].as_str().unwrap_or_default().to_owned()));
    assert_eq!(
        app.get_json(&org_path).await["issues"][0]["id"],
        id.as_str()
    );
    // The new caller's user row was written with the issue.
    let cookie = r.session().unwrap_or_default();
    let me = app.me(&cookie).await;
    assert!(me["user"]["created_at"].is_string(), "{me}");
}

async fn each_validation_error_names_its_field(app: &TestApp) {
    let issue = app.fresh_issue("Validation").await;
    let org = app.fresh_organisation("Validation council").await;
    let cases = [
        (
            "/api/issues".to_owned(),
            json!({"name": " ", "category": "health"}),
            "name",
        ),
        (
            "/api/issues".to_owned(),
            json!({"category": "health"}),
            "name",
        ),
        (
            "/api/issues".to_owned(),
            json!({"name": "\u{200B}\u{200B}\u{200B}", "category": "health"}),
            "name",
        ),
        (
            "/api/issues".to_owned(),
            json!({"name": "Potholes \u{202E}gnikcah", "category": "health"}),
            "name",
        ),
        (
            format!("/api/issues/{issue}/feed"),
            json!({"content": "\u{FEFF}\u{2060}"}),
            "content",
        ),
        (
            format!("/api/issues/{issue}/actions"),
            json!({"title": "Sign\u{2028}here", "type": "idea"}),
            "title",
        ),
        (
            "/api/issues".to_owned(),
            json!({"name": "x", "category": "cheese"}),
            "category",
        ),
        (
            "/api/issues".to_owned(),
            json!({"name": "x", "category": "health", "rioter_count": 9}),
            "rioter_count",
        ),
        (
            "/api/issues".to_owned(),
            json!({"name": "x", "category": "health", "organisation_ids": ["nope"]}),
            "organisation_ids[0]",
        ),
        (
            format!("/api/issues/{issue}/feed"),
            json!({"content": "x".repeat(2001)}),
            "content",
        ),
        (
            format!("/api/issues/{issue}/feed"),
            json!({"content": ""}),
            "content",
        ),
        (
            format!("/api/issues/{issue}/synonyms"),
            json!({"term": "a<b"}),
            "term",
        ),
        (
            format!("/api/issues/{issue}/actions"),
            json!({"title": "t", "type": "petition"}),
            "type",
        ),
        (
            format!("/api/issues/{issue}/actions"),
            json!({"title": "t", "type": "idea", "external_url": "javascript:alert(1)"}),
            "external_url",
        ),
        (
            "/api/issues/not-a-uuid/feed".to_owned(),
            json!({"content": "x"}),
            "id",
        ),
    ];
    for (path, body, field) in cases {
        let r = post(app, &path, body.clone(), With::default()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            r.text
        );
        assert_eq!(r.body["error"]["code"], "validation_failed");
        assert_eq!(r.field(), field, "{path} {body}: {}", r.text);
        assert!(r.session().is_none(), "no session for a refused write");
    }
    let r = post(
        app,
        &format!("/api/issues/{issue}/feed"),
        json!({"content": "x"}),
        With {
            key: Some(&"k".repeat(256)),
            ..With::default()
        },
    )
    .await;
    assert_eq!(r.field(), "Idempotency-Key", "{}", r.text);

    // An unknown organisation: 400 naming organisation_ids, nothing written.
    let r = post(
        app,
        "/api/issues",
        json!({"name": "Half written?", "category": "health", "organisation_ids": [org, UNKNOWN]}),
        With::default(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.field(), "organisation_ids");
    assert_eq!(r.body["error"]["details"]["unknown"], json!([UNKNOWN]));
    let written = count(
        app,
        "SELECT (SELECT count(*) FROM issues WHERE name = 'Half written?') + \
         (SELECT count(*) FROM issue_organisation WHERE organisation_id = ?)",
        vec![text(org.as_str())],
    )
    .await;
    assert_eq!(written, 0, "nothing half-written");
}

async fn writes_to_an_unknown_issue_are_404(app: &TestApp) {
    for (path, body) in [
        ("feed", json!({"content": "anyone there?"})),
        ("synonyms", json!({"term": "nowhere"})),
        ("actions", json!({"title": "t", "type": "idea"})),
    ] {
        let r = post(
            app,
            &format!("/api/issues/{UNKNOWN}/{path}"),
            body,
            With::default(),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "not_found");
        assert!(
            r.session().is_none(),
            "nothing is created for a failed write"
        );
    }
    let written = count(
        app,
        "SELECT (SELECT count(*) FROM feed WHERE content = 'anyone there?') + \
         (SELECT count(*) FROM synonyms WHERE term = 'nowhere')",
        vec![],
    )
    .await;
    assert_eq!(written, 0);
}

async fn an_idempotent_retry_replays_the_first_response(app: &TestApp) {
    let cookie = session(app).await;
    let issue = app.fresh_issue("Idempotent posts").await;
    let path = format!("/api/issues/{issue}/feed");
    let body = json!({"content": "Only once, please"});
    let with = With {
        cookie: Some(&cookie),
        key: Some("retry-1"),
        ..With::default()
    };
    let first = post(app, &path, body.clone(), with).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let again = post(app, &path, body.clone(), with).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.text, first.text, "the first response, byte for byte");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let posts = count(
        app,
        "SELECT count(*) FROM feed WHERE issue_id = ?",
        vec![text(issue.as_str())],
    )
    .await;
    assert_eq!(posts, 1, "written once");

    // Same key, another body: 422, nothing written.
    let other = post(app, &path, json!({"content": "Something else"}), with).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.text
    );
    assert_eq!(other.body["error"]["code"], "unprocessable");
    // Same key on another route: another request too.
    let elsewhere = post(
        app,
        &format!("/api/issues/{issue}/synonyms"),
        json!({"term": "once"}),
        with,
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A new caller with the same key has a scope of its own.
    let stranger = post(
        app,
        &path,
        body.clone(),
        With {
            key: Some("retry-1"),
            ..With::default()
        },
    )
    .await;
    assert_eq!(stranger.status, StatusCode::CREATED);
    assert_eq!(stranger.header("idempotent-replayed"), None);
    assert_ne!(stranger.body["id"], first.body["id"]);

    // A created issue replays with its Location.
    let issue_body = json!({"name": "Idempotent issue", "category": "housing"});
    let with = With {
        cookie: Some(&cookie),
        key: Some("create-1"),
        ..With::default()
    };
    let created = post(app, "/api/issues", issue_body.clone(), with).await;
    let replayed = post(app, "/api/issues", issue_body, with).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(replayed.text, created.text);
    assert_eq!(replayed.header("location"), created.header("location"));
    let issues = count(
        app,
        "SELECT count(*) FROM issues WHERE name = 'Idempotent issue'",
        vec![],
    )
    .await;
    assert_eq!(issues, 1);
    let records = count(
        app,
        "SELECT count(*) FROM idempotency_keys WHERE key IN ('retry-1', 'create-1') \
         AND status_code = 201 AND expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+23 hours')",
        vec![],
    )
    .await;
    assert_eq!(
        records, 3,
        "two callers' retry-1 and one create-1, kept 24 h"
    );
}

async fn concurrent_duplicates_write_once(app: &TestApp) {
    let cookie = session(app).await;
    let issue = app.fresh_issue("Concurrent retries").await;
    let path = format!("/api/issues/{issue}/actions");
    let body = json!({"title": "Sign the petition", "type": "action"});
    let ids: Vec<String> = (0..6).map(|i| format!("wr-burst-{i}")).collect();
    let tries = ids.iter().map(|id| {
        post(
            app,
            &path,
            body.clone(),
            With {
                cookie: Some(&cookie),
                key: Some("burst-1"),
                request_id: Some(id),
            },
        )
    });
    let replies = futures::future::join_all(tries).await;
    for r in &replies {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(
            r.body["id"], replies[0].body["id"],
            "one action, one answer"
        );
    }
    // The winner: read, write (2). The others: a replay found by the read
    // (1), or a write refused by the key's primary key, then the read (3).
    let mut trips = Vec::new();
    for id in &ids {
        trips.push(app.round_trips(id).await);
    }
    eprintln!("round trips of concurrent duplicates: {trips:?}");
    assert_eq!(trips.iter().filter(|t| **t == 2).count(), 1, "{trips:?}");
    assert!(trips.iter().all(|t| [1, 2, 3].contains(t)), "{trips:?}");
    let replayed = replies
        .iter()
        .filter(|r| r.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, replies.len() - 1, "all but the first are replays");
    let actions = count(
        app,
        "SELECT count(*) FROM actions WHERE issue_id = ?",
        vec![text(issue.as_str())],
    )
    .await;
    assert_eq!(actions, 1);
    let daily = count(
        app,
        "SELECT sum(actions) FROM issue_daily WHERE issue_id = ?",
        vec![text(issue.as_str())],
    )
    .await;
    assert_eq!(daily, 1);
}

async fn a_duplicate_synonym_is_409_and_a_new_one_is_searchable(app: &TestApp) {
    let issue = app.fresh_issue("Uneven pavements").await;
    let search = "/api/issues?q=wobbly%20flagstones";
    assert!(names(&app.get_json(search).await).is_empty());
    let detail = format!("/api/issues/{issue}");
    app.get_json(&detail).await;
    let path = format!("/api/issues/{issue}/synonyms");
    let r = post(
        app,
        &path,
        json!({"term": " Wobbly  Flagstones "}),
        With::default(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["term"], "wobbly flagstones");
    assert_eq!(
        names(&app.get_json(search).await),
        ["Uneven pavements"],
        "found by its new synonym at once"
    );
    let dup = post(
        app,
        &path,
        json!({"term": "WOBBLY flagstones"}),
        With::default(),
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.text);
    assert_eq!(dup.body["error"]["code"], "conflict");
    assert!(dup.session().is_none());
    let terms = count(
        app,
        "SELECT count(*) FROM synonyms WHERE issue_id = ?",
        vec![text(issue.as_str())],
    )
    .await;
    assert_eq!(terms, 1);
}

async fn posts_and_actions_show_at_once_and_count_daily(app: &TestApp) {
    let cookie = session(app).await;
    let issue = app.fresh_issue("Daily counts").await;
    let feed = format!("/api/issues/{issue}/feed");
    let actions = format!("/api/issues/{issue}/actions");
    let detail = format!("/api/issues/{issue}");
    // Cached empty before the writes.
    assert_eq!(app.get_json(&feed).await["items"], json!([]));
    assert_eq!(app.get_json(&actions).await["items"], json!([]));
    assert_eq!(app.get_json(&detail).await["action_count"], 0);

    let with = With {
        cookie: Some(&cookie),
        ..With::default()
    };
    for content in ["First post", "Second post"] {
        let r = post(app, &feed, json!({"content": content}), with).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.body["content"], content);
        assert!(r.session().is_none(), "the session is kept");
        let page = app.get_json(&feed).await;
        assert_eq!(page["items"][0]["content"], content, "seen at once");
        assert_eq!(page["items"][0]["id"], r.body["id"]);
    }
    let r = post(
        app,
        &actions,
        json!({"title": "Write to the council", "type": "Action", "time_required": "5 minutes"}),
        with,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["type"], "action");
    let listed = app.get_json(&actions).await;
    assert_eq!(listed["items"][0]["title"], "Write to the council");
    assert_eq!(app.get_json(&detail).await["action_count"], 1);

    let rows = app
        .sql(
            "SELECT sum(posts), sum(actions), count(*) FROM issue_daily WHERE issue_id = ?",
            vec![text(issue.as_str())],
        )
        .await;
    assert_eq!(
        (int(&rows[0][0]), int(&rows[0][1]), int(&rows[0][2])),
        (2, 1, 1),
        "today's row counts 2 posts and 1 action"
    );
}

/// An issue's actions come a page at a time, oldest first (ties by id),
/// each once; a cursor of another list, or a limit out of range, is 400.
async fn actions_are_paged_oldest_first(app: &TestApp) {
    let issue = app.fresh_issue("Many actions").await;
    let made = [
        ("a-3", "2026-01-01T00:00:03.000Z"),
        ("a-1", "2026-01-01T00:00:01.000Z"),
        ("a-2b", "2026-01-01T00:00:02.000Z"),
        ("a-2a", "2026-01-01T00:00:02.000Z"),
        ("a-4", "2026-01-01T00:00:04.000Z"),
    ];
    for (title, at) in made {
        app.sql(
            "INSERT INTO actions (id, issue_id, title, type, created_at) VALUES (?, ?, ?, 'action', ?)",
            vec![
                text(format!("{}-{title}", issue).as_str()),
                text(issue.as_str()),
                text(title),
                text(at),
            ],
        )
        .await;
    }
    let path = format!("/api/issues/{issue}/actions");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..4 {
        let url = match &cursor {
            None => format!("{path}?limit=2"),
            Some(c) => format!("{path}?limit=2&cursor={c}"),
        };
        let page = app.get_json(&url).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2, "{page}");
        seen.extend(
            items
                .iter()
                .map(|a| a["title"].as_str().expect("title").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["a-1", "a-2a", "a-2b", "a-3", "a-4"],
        "oldest first, each once"
    );
    // The first page without a limit is the default page, all five here.
    assert_eq!(
        app.get_json(&path).await["items"].as_array().map(Vec::len),
        Some(5)
    );

    let feed_cursor = {
        let feed = format!("/api/issues/{issue}/feed");
        for i in 0..2 {
            app.sql(
                "INSERT INTO feed (id, issue_id, content) VALUES (?, ?, ?)",
                vec![
                    text(format!("{issue}-p{i}").as_str()),
                    text(issue.as_str()),
                    text("a post"),
                ],
            )
            .await;
        }
        app.get_json(&format!("{feed}?limit=1")).await["next_cursor"]
            .as_str()
            .expect("a feed cursor")
            .to_owned()
    };
    for bad in [
        format!("{path}?cursor={feed_cursor}"),
        format!("{path}?limit=0"),
        format!("{path}?limit=101"),
    ] {
        let r = app.get(&bad).send().await.expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

async fn a_write_is_one_round_trip_two_with_a_key(app: &TestApp) {
    let cookie = session(app).await;
    let issue = app.fresh_issue("Round trips").await;
    let feed = format!("/api/issues/{issue}/feed");
    let cases = [
        ("wr-rt-plain", None, 1, "a write without a key"),
        (
            "wr-rt-key",
            Some("rt-key-1"),
            2,
            "the read of the key, then the write",
        ),
        (
            "wr-rt-replay",
            Some("rt-key-1"),
            1,
            "a replay is the read alone",
        ),
    ];
    for (request_id, key, want, what) in cases {
        let r = post(
            app,
            &feed,
            json!({"content": "counted"}),
            With {
                cookie: Some(&cookie),
                key,
                request_id: Some(request_id),
            },
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(app.round_trips(request_id).await, want, "{what}");
    }
    // A new caller creating an issue: still one.
    let r = post(
        app,
        "/api/issues",
        json!({"name": "One round trip", "category": "economy"}),
        With {
            request_id: Some("wr-rt-create"),
            ..With::default()
        },
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(app.round_trips("wr-rt-create").await, 1);
}

/// A page on another origin (possibly on the same site, so its cookies go
/// along) sends a join or a post without a preflight: refused before it
/// runs, and nothing is written. The Worker's own origin (its web client)
/// and an allowed origin write as usual.
async fn writes_from_a_refused_origin_change_nothing(app: &TestApp) {
    let issue = app.fresh_issue("Cross-origin writes").await;
    let cookie = session(app).await;
    let members = || {
        count(
            app,
            "SELECT COUNT(*) FROM user_issues WHERE issue_id = ?",
            vec![text(issue.as_str())],
        )
    };
    let posts = || {
        count(
            app,
            "SELECT COUNT(*) FROM feed WHERE issue_id = ?",
            vec![text(issue.as_str())],
        )
    };
    let send = |method: Method, path: String, origin: &str| {
        app.request(method, &path)
            .header("Cookie", &cookie)
            .header("Origin", origin)
    };
    let join = format!("/api/issues/{issue}/join");
    let feed = format!("/api/issues/{issue}/feed");
    for origin in ["https://evil.example", "http://localhost:9999", "null"] {
        for (what, request) in [
            ("join", send(Method::POST, join.clone(), origin)),
            ("leave", send(Method::DELETE, join.clone(), origin)),
            (
                "form post",
                send(Method::POST, feed.clone(), origin)
                    .header("Content-Type", "text/plain")
                    .body(r#"{"content":"hi"}"#),
            ),
            ("logout", send(Method::POST, "/api/logout".into(), origin)),
        ] {
            let r = request.send().await.expect("send");
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what} from {origin}");
            assert!(r.headers().get("set-cookie").is_none(), "{what}");
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["error"]["code"], "cors_refused", "{what}");
        }
    }
    assert_eq!(members().await, 0);
    assert_eq!(posts().await, 0);
    // The session survived the refused logout.
    assert!(app.me(&cookie).await["user"].is_object(), "session kept");

    let own = app.url.trim_end_matches('/').to_owned();
    for origin in [own.as_str(), common::ALLOWED_ORIGIN] {
        let r = send(Method::POST, join.clone(), origin)
            .send()
            .await
            .expect("join");
        assert_eq!(r.status(), StatusCode::OK, "join from {origin}");
        let r = send(Method::DELETE, join.clone(), origin)
            .send()
            .await
            .expect("leave");
        assert_eq!(r.status(), StatusCode::OK, "leave from {origin}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_writes() {
    let app = TestApp::start().await;
    run_cases(vec![
        (
            "create, then read and search at once",
            Box::pin(a_new_issue_is_readable_and_searchable_at_once(&app)),
        ),
        (
            "validation names the field",
            Box::pin(each_validation_error_names_its_field(&app)),
        ),
        (
            "unknown issue 404",
            Box::pin(writes_to_an_unknown_issue_are_404(&app)),
        ),
        (
            "idempotent retry",
            Box::pin(an_idempotent_retry_replays_the_first_response(&app)),
        ),
        (
            "concurrent duplicates",
            Box::pin(concurrent_duplicates_write_once(&app)),
        ),
        (
            "duplicate synonym 409",
            Box::pin(a_duplicate_synonym_is_409_and_a_new_one_is_searchable(&app)),
        ),
        (
            "posts and actions at once, daily counts",
            Box::pin(posts_and_actions_show_at_once_and_count_daily(&app)),
        ),
        (
            "actions are paged",
            Box::pin(actions_are_paged_oldest_first(&app)),
        ),
        (
            "round trips",
            Box::pin(a_write_is_one_round_trip_two_with_a_key(&app)),
        ),
        (
            "writes from a refused origin",
            Box::pin(writes_from_a_refused_origin_change_nothing(&app)),
        ),
    ])
    .await;
}
