//! The read path against the real stack: every read route, search, cursor
//! pagination, and the KV cache (MISS/HIT/304, invalidation, one load for
//! concurrent misses, one round trip per miss and none per hit).

mod common;

use base64::Engine as _;

use std::collections::HashSet;

use common::{run_cases, TestApp, ADMIN_TOKEN};
use qr_primary::client::{text, Value as Hv};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

fn hv_text(v: &Hv) -> String {
    match v {
        Hv::Text { value } => value.to_string(),
        Hv::Integer { value } => value.to_string(),
        other => format!("{other:?}"),
    }
}

/// Ids of issues in the primary, most rioters first.
async fn issue_ids(app: &TestApp) -> Vec<String> {
    app.sql(
        "SELECT id FROM issues ORDER BY rioter_count DESC, id",
        vec![],
    )
    .await
    .iter()
    .map(|r| hv_text(&r[0]))
    .collect()
}

async fn names_for(app: &TestApp, q: &str) -> Vec<String> {
    let body = app
        .get_json(&format!("/api/issues?q={}", urlencode(q)))
        .await;
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn search_finds_by_synonym_prefix_and_accent(app: &TestApp) {
    assert_eq!(
        names_for(app, "late trains").await[0],
        "Rail delays on Southern",
        "synonym"
    );
    // "tarmac" is only a synonym: no issue's name or description has it.
    assert_eq!(
        names_for(app, "tarmac").await,
        ["Potholes on local roads"],
        "a word found only through a synonym"
    );
    assert_eq!(
        names_for(app, "pothol").await[0],
        "Potholes on local roads",
        "prefix of the last word"
    );
    assert_eq!(
        names_for(app, "CAFE").await[0],
        "Local library closures",
        "case and accents"
    );
    assert_eq!(
        names_for(app, "sewage rivers").await[0],
        "Sewage in rivers",
        "all words"
    );
    assert!(names_for(app, "zzzzqqq").await.is_empty());
}

async fn hostile_searches_never_error(app: &TestApp) {
    for q in [
        "\"",
        "\"unbalanced",
        "*",
        "**",
        "NEAR(a b)",
        "a NEAR b",
        "-",
        "-trains",
        "((",
        ")",
        "a:b",
        "trains AND",
        "OR",
        "NOT",
        "^x",
        "{x}",
        "'; DROP TABLE issues; --",
        "%",
        "_",
        "\\",
        "💥",
        "ñ",
        &"x".repeat(3000),
    ] {
        let r = app
            .get(&format!("/api/issues?q={}", urlencode(q)))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::OK, "q={q:.40}");
        let body: Value = r.json().await.expect("json");
        assert!(body["items"].is_array(), "q={q:.40}: {body}");
    }
}

async fn every_read_route_answers(app: &TestApp) {
    let ids = issue_ids(app).await;
    let id = &ids[0];
    let detail = app.get_json(&format!("/api/issues/{id}")).await;
    assert!(detail["organisations"]
        .as_array()
        .is_some_and(|o| !o.is_empty()));
    assert!(detail["top_countries"]
        .as_array()
        .is_some_and(|c| !c.is_empty() && c.len() <= 5));
    assert!(detail["health"]["needs_met"].is_i64(), "{detail}");
    assert!(detail["action_count"].as_i64().is_some_and(|n| n > 0));

    let actions = app.get_json(&format!("/api/issues/{id}/actions")).await;
    assert_eq!(
        actions["items"].as_array().map(Vec::len),
        detail["action_count"].as_u64().map(|n| n as usize)
    );
    let countries = app.get_json(&format!("/api/issues/{id}/countries")).await;
    let total: i64 = countries["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["rioter_count"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(
        total,
        detail["rioter_count"].as_i64().expect("count"),
        "countries add up to the members"
    );

    let feed = app
        .get_json(&format!("/api/issues/{id}/feed?limit=100"))
        .await;
    let dates: Vec<&str> = feed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["created_at"].as_str().unwrap_or(""))
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {dates:?}"
    );

    let orgs = app.get_json("/api/organisations?limit=100").await;
    let names: Vec<&str> = orgs["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["name"].as_str().unwrap_or(""))
        .collect();
    assert!(
        names.len() >= 10 && names.windows(2).all(|w| w[0] <= w[1]),
        "{names:?}"
    );
    let org_id = orgs["items"][0]["id"].as_str().expect("org id");
    let org = app.get_json(&format!("/api/organisations/{org_id}")).await;
    assert_eq!(org["id"], org_id);
    assert!(org["issues"].is_array());

    for path in [
        format!("/api/issues/{UNKNOWN}"),
        format!("/api/issues/{UNKNOWN}/feed"),
        format!("/api/issues/{UNKNOWN}/actions"),
        format!("/api/issues/{UNKNOWN}/countries"),
        format!("/api/organisations/{UNKNOWN}"),
    ] {
        let r = app.get(&path).send().await.expect("send");
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_found");
    }
    for path in [
        "/api/issues/nope",
        "/api/issues/nope/feed",
        "/api/issues/nope/actions",
        "/api/issues/nope/countries",
        "/api/organisations/nope",
    ] {
        let r = app.get(path).send().await.expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
}

async fn archived_posts_appear_in_the_feed(app: &TestApp) {
    let ids = issue_ids(app).await;
    let id = &ids[3];
    app.sql(
        "INSERT INTO feed_archive (id, issue_id, user_id, content, likes, created_at) \
         VALUES ('aaaaaaaa-0000-4000-8000-000000000001', ?, NULL, 'An old post from the archive', 0, '2025-01-01T00:00:00.000Z')",
        vec![text(id.as_str())],
    )
    .await;
    let feed = app
        .get_json(&format!("/api/issues/{id}/feed?limit=100"))
        .await;
    let last = feed["items"]
        .as_array()
        .expect("items")
        .last()
        .cloned()
        .expect("a post");
    assert_eq!(last["content"], "An old post from the archive");
    assert_eq!(last["archived"], true);
}

/// Walks `path` page by page; between pages, `between` runs.
async fn walk(
    app: &TestApp,
    path: &str,
    mut between: impl FnMut(usize) -> Option<String>,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={}", urlencode(c)),
            None => path.to_owned(),
        };
        let body = app.get_json(&url).await;
        for item in body["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().unwrap_or_default().to_owned());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return seen,
        }
        if let Some(sql) = between(page) {
            app.sql(&sql, vec![]).await;
        }
    }
    panic!("more than 100 pages");
}

async fn pagination_sees_every_row_once_while_rows_are_inserted(app: &TestApp) {
    for sort in ["popular", "new", "trending"] {
        let before: HashSet<String> = issue_ids(app).await.into_iter().collect();
        let mut n = 0;
        let seen = walk(app, &format!("/api/issues?sort={sort}&limit=4"), |_| {
            n += 1;
            Some(format!(
                "INSERT INTO issues (id, name, category, description, created_at, updated_at) VALUES \
                 ('bbbbbbbb-{n:04}-4000-8000-{:012}', 'Inserted while paging {sort} {n}', 'community', '', \
                  strftime('%Y-%m-%dT%H:%M:%fZ','now'), strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                sort.len()
            ))
        })
        .await;
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{sort}: a row came twice");
        for id in &before {
            assert!(seen.contains(id), "{sort}: {id} was skipped");
        }
    }
    // Search results page too, with and without a category.
    for path in [
        "/api/issues?q=the&limit=2",
        "/api/issues?q=on&category=transport&limit=1",
        "/api/issues?q=in&sort=new&limit=3",
    ] {
        let all = walk(app, path, |_| None).await;
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "{path}");
        assert!(!all.is_empty(), "{path}");
    }
}

async fn cursors_are_bound_and_tamper_evident(app: &TestApp) {
    let page = app.get_json("/api/issues?sort=new&limit=2").await;
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    let mut changed = cursor.clone().into_bytes();
    changed[3] = if changed[3] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).expect("ascii");
    // The real tag cut to its first 1 and 15 bytes, and grown by a byte:
    // only the whole tag is accepted.
    let (body, tag) = cursor.split_once('.').expect("payload.tag");
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag)
        .expect("base64 tag");
    let retagged = |bytes: &[u8]| {
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "/api/issues?sort=new&limit=2&cursor={}",
            urlencode(&format!("{body}.{tag}"))
        )
    };
    let mut grown = tag.clone();
    grown.push(0);
    for path in [
        retagged(&tag[..1]),
        retagged(&tag[..tag.len() - 1]),
        retagged(&grown),
        format!(
            "/api/issues?sort=new&limit=2&cursor={}",
            urlencode(&changed)
        ),
        format!(
            "/api/issues?sort=popular&limit=2&cursor={}",
            urlencode(&cursor)
        ),
        format!(
            "/api/issues?sort=new&category=health&cursor={}",
            urlencode(&cursor)
        ),
        "/api/issues?cursor=garbage".to_owned(),
    ] {
        let r = app.get(&path).send().await.expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["details"]["field"], "cursor");
    }
    let r = app.get("/api/issues?limit=101").send().await.expect("send");
    let body: Value = r.json().await.expect("json");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("1 to 100"));
}

async fn miss_then_hit_then_304(app: &TestApp) {
    let ids = issue_ids(app).await;
    let path = format!("/api/issues/{}/countries", ids[5]);
    let first = app.get(&path).send().await.expect("first");
    assert_eq!(first.headers()["x-cache"], "MISS");
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    // Browsers revalidate every read (the 304 below keeps that cheap).
    assert_eq!(first.headers()["cache-control"], "no-cache");
    let timing = first.headers()["server-timing"].to_str().expect("st");
    assert!(timing.contains("db;dur="), "{timing}");
    assert!(
        timing.contains("kv;dur="),
        "a miss looked in KV first: {timing}"
    );
    assert!(timing.starts_with("cache;desc=primary, "), "{timing}");
    let body = first.text().await.expect("body");
    let second = app.get(&path).send().await.expect("second");
    assert_eq!(second.headers()["x-cache"], "HIT");
    let timing = second.headers()["server-timing"].to_str().expect("st");
    assert!(
        timing.starts_with("cache;desc=memory, ") && !timing.contains("kv;"),
        "a hit in the isolate's memory reads no KV: {timing}"
    );
    assert_eq!(second.headers()["etag"], etag.as_str());
    assert_eq!(second.text().await.expect("body"), body);
    let revalidated = app
        .get(&path)
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("304");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert!(revalidated.bytes().await.expect("body").is_empty());
    let other = app
        .get(&path)
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .expect("200");
    assert_eq!(other.status(), StatusCode::OK);
}

/// What one GET costs at the primary: `miss` round trips on the first call,
/// `hit` on the same call again (`None`: not cached, the same again).
struct Cost {
    pattern: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    miss: u64,
    hit: Option<u64>,
}

/// Every GET route of the router, with its round trips to the primary on a
/// miss and on a hit, measured by request id at the primary. A GET route
/// missing here fails the test, so a new route states and checks its cost.
async fn every_get_route_costs_what_it_should(app: &TestApp) {
    let ids = issue_ids(app).await;
    let last = ids.last().expect("issues");
    // The last organisation by name: one no earlier case has read.
    let orgs = app.get_json("/api/organisations?limit=100").await;
    let org = orgs["items"]
        .as_array()
        .and_then(|items| items.last())
        .and_then(|o| o["id"].as_str())
        .expect("an organisation");
    // A session, started by a join.
    let joined = app
        .call(
            Method::POST,
            &format!("/api/issues/{last}/join"),
            None,
            None,
        )
        .await;
    let session = joined.cookie.expect("a session cookie");
    let admin = vec![("Authorization", format!("Bearer {ADMIN_TOKEN}"))];
    let cached = |pattern, path: String| Cost {
        pattern,
        path,
        headers: vec![],
        miss: 1,
        hit: Some(0),
    };
    let costs = vec![
        cached("/api/issues", "/api/issues?limit=13".to_owned()),
        cached(
            "/api/issues",
            "/api/issues?category=health&sort=trending&limit=3".to_owned(),
        ),
        cached("/api/issues", "/api/issues?q=buses&limit=7".to_owned()),
        cached("/api/issues/:id", format!("/api/issues/{}", ids[9])),
        // An unknown id: the 404 comes from the same single round trip.
        cached("/api/issues/:id", format!("/api/issues/{UNKNOWN}")),
        cached(
            "/api/issues/:id/feed",
            format!("/api/issues/{}/feed?limit=9", ids[9]),
        ),
        cached(
            "/api/issues/:id/feed",
            format!("/api/issues/{UNKNOWN}/feed"),
        ),
        cached(
            "/api/issues/:id/actions",
            format!("/api/issues/{}/actions", ids[9]),
        ),
        cached(
            "/api/issues/:id/countries",
            format!("/api/issues/{}/countries", ids[9]),
        ),
        cached(
            "/api/organisations",
            "/api/organisations?limit=11".to_owned(),
        ),
        cached(
            "/api/organisations/:id",
            format!("/api/organisations/{org}"),
        ),
        // Uncached: the primary every time (health checks it is there).
        Cost {
            pattern: "/health",
            path: "/health".to_owned(),
            headers: vec![],
            miss: 1,
            hit: None,
        },
        Cost {
            pattern: "/api/me",
            path: "/api/me".to_owned(),
            headers: vec![("Cookie", session)],
            miss: 1,
            hit: None,
        },
        // Without a session there is nobody to look up.
        Cost {
            pattern: "/api/me",
            path: "/api/me".to_owned(),
            headers: vec![],
            miss: 0,
            hit: None,
        },
        Cost {
            pattern: "/api/admin/jobs",
            path: "/api/admin/jobs?limit=2".to_owned(),
            headers: admin,
            miss: 1,
            hit: None,
        },
        // Answered by the Outbox object or the Worker alone.
        Cost {
            pattern: "/api/outbox/:id",
            path: format!("/api/outbox/{UNKNOWN}"),
            headers: vec![],
            miss: 0,
            hit: None,
        },
        Cost {
            pattern: "/webhooks/whatsapp",
            path: "/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"
                .to_owned(),
            headers: vec![],
            miss: 0,
            hit: None,
        },
        // A live socket's route: a plain request is told to upgrade before
        // anything is read (tests/live.rs counts a handshake's round trips).
        Cost {
            pattern: "/api/issues/:id/live",
            path: format!("/api/issues/{}/live", ids[9]),
            headers: vec![],
            miss: 0,
            hit: None,
        },
        Cost {
            pattern: "/__bench/constant",
            path: "/__bench/constant".to_owned(),
            headers: vec![],
            miss: 0,
            hit: None,
        },
    ];
    let listed: HashSet<&str> = costs.iter().map(|c| c.pattern).collect();
    for (method, pattern, _, _) in quiet_riots_edge::ROUTES {
        assert!(
            *method != "GET" || listed.contains(pattern),
            "GET {pattern} has no stated round-trip cost in this test"
        );
    }
    let pid = std::process::id();
    for (n, cost) in costs.iter().enumerate() {
        let path = &cost.path;
        let call = |phase: &'static str| {
            let id = format!("rt-{phase}-{pid}-{n}");
            let mut rb = app.get(path).header("X-Request-Id", &id);
            for (name, value) in &cost.headers {
                rb = rb.header(*name, value);
            }
            async move {
                let r = rb.send().await.expect("send");
                let header = |name: &str| {
                    r.headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap_or("?").to_owned())
                };
                let (x_cache, cache_control) = (header("x-cache"), header("cache-control"));
                (
                    r.status(),
                    x_cache,
                    cache_control,
                    app.round_trips(&id).await,
                )
            }
        };
        let (status, x_cache, cache_control, trips) = call("miss").await;
        assert!(status.as_u16() < 500, "{path}: {status}");
        if cost.hit.is_none() {
            // Per-user and live answers are never kept by a browser or CDN.
            assert_eq!(
                cache_control.as_deref(),
                Some("private, no-store"),
                "{path}"
            );
        }
        if cost.hit.is_some() && status.is_success() {
            assert_eq!(x_cache.as_deref(), Some("MISS"), "{path}");
        }
        assert_eq!(trips, cost.miss, "{path}: round trips on the first call");
        let (status, x_cache, _, trips) = call("hit").await;
        match cost.hit {
            Some(hit) if status.is_success() => {
                assert_eq!(x_cache.as_deref(), Some("HIT"), "{path}");
                assert_eq!(trips, hit, "{path}: round trips on a hit");
            }
            // Errors are not cached: the same cost again.
            Some(_) => assert_eq!(trips, cost.miss, "{path}: an error again"),
            None => assert_eq!(trips, cost.miss, "{path}: round trips on the second call"),
        }
    }
}

async fn concurrent_misses_share_one_load(app: &TestApp) {
    let ids = issue_ids(app).await;
    let path = format!("/api/issues/{}/actions", ids[11]);
    let pid = std::process::id();
    let requests = (0..8).map(|n| {
        let id = format!("flight-{pid}-{n}");
        let send = app.get(&path).header("X-Request-Id", &id).send();
        async move {
            let r = send.await.expect("send");
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            (id, status, body)
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut total = 0;
    for (id, status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        total += app.round_trips(id).await;
    }
    assert_eq!(total, 1, "eight concurrent misses of one key, one load");
}

async fn an_invalidated_tag_is_refetched(app: &TestApp) {
    let ids = issue_ids(app).await;
    let id = &ids[12];
    let path = format!("/api/issues/{id}");
    let before = app.get_json(&path).await;
    app.sql(
        "UPDATE issues SET name = 'Renamed behind the cache' WHERE id = ?",
        vec![text(id.as_str())],
    )
    .await;
    let cached = app.get(&path).send().await.expect("cached");
    assert_eq!(cached.headers()["x-cache"], "HIT");
    let cached: Value = cached.json().await.expect("json");
    assert_eq!(cached["name"], before["name"], "still the cached version");

    let refused = app
        .request(Method::POST, "/api/admin/cache/invalidate")
        .header("Authorization", "Bearer wrong")
        .json(&json!({"tags": [format!("issue:{id}")]}))
        .send()
        .await
        .expect("refused");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    admin_invalidate(app, "", json!([format!("issue:{id}"), "issues"])).await;
    let after = app.get(&path).send().await.expect("after");
    assert_eq!(after.headers()["x-cache"], "MISS");
    let after: Value = after.json().await.expect("json");
    assert_eq!(after["name"], "Renamed behind the cache");
    let bad = app
        .request(Method::POST, "/api/admin/cache/invalidate")
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
        .json(&json!({"tags": ["user:everything"]}))
        .send()
        .await
        .expect("bad tag");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_path() {
    let app = TestApp::start().await;
    run_cases(vec![
        (
            "search",
            Box::pin(search_finds_by_synonym_prefix_and_accent(&app)),
        ),
        (
            "hostile searches",
            Box::pin(hostile_searches_never_error(&app)),
        ),
        ("every read route", Box::pin(every_read_route_answers(&app))),
        (
            "archived posts",
            Box::pin(archived_posts_appear_in_the_feed(&app)),
        ),
        (
            "round trips of every GET route",
            Box::pin(every_get_route_costs_what_it_should(&app)),
        ),
        (
            "single flight",
            Box::pin(concurrent_misses_share_one_load(&app)),
        ),
        ("MISS, HIT, 304", Box::pin(miss_then_hit_then_304(&app))),
        (
            "invalidation",
            Box::pin(an_invalidated_tag_is_refetched(&app)),
        ),
        (
            "cursors",
            Box::pin(cursors_are_bound_and_tamper_evident(&app)),
        ),
        (
            "pagination under inserts",
            Box::pin(pagination_sees_every_row_once_while_rows_are_inserted(&app)),
        ),
    ])
    .await;
}

/// One read of `path`: its `X-Cache`, `Server-Timing` and body.
async fn read_once(app: &TestApp, path: &str) -> (String, String, Value) {
    let r = app.get(path).send().await.expect("read");
    assert_eq!(r.status(), StatusCode::OK);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (cache, timing) = (header("x-cache"), header("server-timing"));
    (cache, timing, r.json().await.expect("json"))
}

async fn admin_invalidate(app: &TestApp, prefix: &str, tags: Value) {
    let r = app
        .request(
            Method::POST,
            &format!("{prefix}/api/admin/cache/invalidate"),
        )
        .header("Authorization", format!("Bearer {ADMIN_TOKEN}"))
        .json(&json!({ "tags": tags }))
        .send()
        .await
        .expect("invalidate");
    assert_eq!(r.status(), StatusCode::OK);
}

/// Answered from the isolate's memory, without waiting for KV.
fn from_memory_alone(cache: &str, timing: &str) -> bool {
    cache == "HIT" && timing.starts_with("cache;desc=memory, ") && !timing.contains("kv;")
}

/// Renames the issue at `path` in the primary and invalidates its tag as
/// another isolate would; the new name must arrive through the log, every
/// read before it the old entry from memory with no read of the tag's own
/// key, and the first with it a MISS. Returns how long it took.
async fn rename_elsewhere(app: &TestApp, id: &str, path: &str, name: &str) -> std::time::Duration {
    let old = read_once(app, path).await.2["name"].clone();
    app.sql(
        "UPDATE issues SET name = ? WHERE id = ?",
        vec![text(name), text(id)],
    )
    .await;
    admin_invalidate(app, "/__bench/elsewhere", json!([format!("issue:{id}")])).await;
    let changed = std::time::Instant::now();
    let renamed = common::eventually(
        "the other isolate's invalidation",
        std::time::Duration::from_secs(8),
        || async {
            let (cache, timing, body) = read_once(app, path).await;
            if body["name"] == name {
                return Ok((cache, timing));
            }
            assert_eq!(body["name"], old);
            assert!(from_memory_alone(&cache, &timing), "{cache} {timing}");
            Err(format!("{cache}: still the old name"))
        },
    )
    .await;
    assert_eq!(renamed.0, "MISS", "{}", renamed.1);
    changed.elapsed()
}

/// An isolate keeps the generations of the tags it has seen current from
/// the log of recent invalidations: a read answered from memory reads no
/// KV however long ago its tag was first read (each tag's own key was
/// read again every 5 s before), and an invalidation made by another
/// isolate (the `elsewhere` switch: not noted in this one) reaches it
/// through the log, not through the tag's own key. The log object evicted
/// and loaded again still vouches for what the isolate knew (what it holds
/// is in its storage, also when it began), and works on after the stack is
/// killed and started again.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_of_invalidations_keeps_isolates_current() {
    // Entries stay fresh through the test: only an invalidation moves them.
    let mut app = TestApp::builder().cache_fresh_secs(60).start().await;
    let ids = issue_ids(&app).await;
    let (id, other) = (&ids[3], &ids[4]);
    // A first invalidation starts the log.
    admin_invalidate(&app, "", json!([format!("issue:{other}")])).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let path = format!("/api/issues/{id}");
    let (cache, _, _) = read_once(&app, &path).await;
    assert_eq!(cache, "MISS");
    let known = format!("/api/issues/{}", ids[5]);
    assert_eq!(read_once(&app, &known).await.0, "MISS");
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(8) {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        let (cache, timing, _) = read_once(&app, &path).await;
        assert!(
            from_memory_alone(&cache, &timing),
            "{:?} after the first read, not a hit from memory alone: {cache} {timing}",
            started.elapsed()
        );
    }

    // The log object is evicted (nothing is sent for a while); the next
    // read waits for the log, which is now old, and is not checked.
    app.evict_objects().await;
    read_once(&app, &path).await;
    let took = rename_elsewhere(&app, id, &path, "Renamed by another isolate").await;
    eprintln!("another isolate's invalidation arrived after {took:?}");
    // The log the object published after it was loaded again still covers
    // what the isolate learned before: no tag is read again.
    let (cache, timing, _) = read_once(&app, &known).await;
    assert!(
        from_memory_alone(&cache, &timing),
        "after the log object's eviction: {cache} {timing}"
    );

    // The stack killed and started again on its state: a new isolate learns
    // the tag once, and the object, loaded from its storage, still records
    // and publishes.
    app.restart_worker(true).await;
    read_once(&app, &path).await;
    let (cache, timing, _) = read_once(&app, &path).await;
    assert!(from_memory_alone(&cache, &timing), "{cache} {timing}");
    rename_elsewhere(&app, id, &path, "Renamed after a restart").await;
}
