//! Rate limits against the real stack, with small policies: the (N+1)th
//! read and write in a window is 429 with the IETF headers and
//! `Retry-After`, concurrent requests together never get more than the
//! limit, clients are limited apart, `/health` is a read, and creating
//! issues is limited per user. A limiter that fails lets reads through and refuses writes for a
//! bounded time, then limits them in the isolate.

mod common;

use std::time::Duration;

use common::{run_cases, session_cookie, TestApp, CLIENT_IP_HEADER, RATE_LIMITS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const READS: usize = 50;
const WRITES: usize = 5;
const CREATES: usize = 3;

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn get_as(app: &TestApp, ip: &str, path: &str) -> reqwest::Response {
    app.get(path)
        .header(CLIENT_IP_HEADER, ip)
        .send()
        .await
        .expect("send")
}

async fn the_read_after_the_limit_is_refused(app: &TestApp) {
    let ip = "198.51.100.1";
    for i in 0..READS {
        let r = get_as(app, ip, "/api/issues?limit=1").await;
        assert_eq!(r.status(), StatusCode::OK, "read {i}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"reads\";q=50;w=60");
        assert!(header(&r, "ratelimit").starts_with("\"reads\";r="));
    }
    let r = get_as(app, ip, "/api/issues?limit=1").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&r, "retry-after").parse().expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&r, "ratelimit-policy"), "\"reads\";q=50;w=60");
    assert!(header(&r, "ratelimit").starts_with("\"reads\";r=0;"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["details"]["policy"], "reads");

    let other = get_as(app, "198.51.100.2", "/api/issues?limit=1").await;
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another client is not limited"
    );
}

/// `/health` does real work per call (a query, a KV write and read, a
/// limiter take), so it is a read like any other: one client cannot call it
/// without limit.
async fn health_counts_as_a_read(app: &TestApp) {
    let ip = "198.51.100.77";
    for i in 0..READS {
        let r = get_as(app, ip, "/health").await;
        assert_eq!(r.status(), StatusCode::OK, "health call {i}");
    }
    let r = get_as(app, ip, "/health").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "ratelimit-policy"), "\"reads\";q=50;w=60");
}

async fn concurrent_writes_never_exceed_the_limit(app: &TestApp) {
    let ip = "198.51.100.3";
    let issue = app.get_json("/api/issues?limit=1").await["items"][0]["id"]
        .as_str()
        .expect("an issue")
        .to_owned();
    let joins = (0..4 * WRITES).map(|_| {
        app.request(Method::POST, &format!("/api/issues/{issue}/join"))
            .header(CLIENT_IP_HEADER, ip)
            .send()
    });
    let replies = futures::future::join_all(joins).await;
    let mut ok = 0;
    let mut refused = 0;
    for r in replies {
        let r = r.expect("send");
        match r.status() {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(header(&r, "ratelimit-policy"), "\"writes\";q=5;w=60");
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                assert!(!header(&r, "retry-after").is_empty());
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, WRITES, "exactly the limit got through");
    assert_eq!(refused, 3 * WRITES);
}

/// A client's parallel reads (a page's requests at once) are neither
/// refused before the limit (each asking the limiter for a block of its own
/// would spend several blocks on a handful of reads) nor let past it.
async fn concurrent_reads_get_exactly_their_allowance(app: &TestApp) {
    let ip = "198.51.100.9";
    let burst = |n: usize| {
        futures::future::join_all((0..n).map(|i| {
            app.get(&format!("/api/issues?limit={}", 1 + i % 5))
                .header(CLIENT_IP_HEADER, ip)
                .send()
        }))
    };
    let count = |replies: Vec<reqwest::Result<reqwest::Response>>| {
        replies
            .into_iter()
            .fold((0, 0), |(ok, refused), r| match r.expect("send").status() {
                StatusCode::OK => (ok + 1, refused),
                StatusCode::TOO_MANY_REQUESTS => (ok, refused + 1),
                other => panic!("unexpected {other}"),
            })
    };
    let started = std::time::Instant::now();
    let page = READS / 2;
    let (ok, refused) = count(burst(page).await);
    assert_eq!((ok, refused), (page, 0), "half the allowance at once");
    let (more, _) = count(burst(2 * READS).await);
    // The bucket refills READS a minute while the test runs.
    let refilled = (started.elapsed().as_secs_f64() * READS as f64 / 60.0).ceil() as usize;
    assert!(
        page + more <= READS + refilled,
        "{} got through, past the limit of {READS} (+{refilled} refilled)",
        page + more
    );
    assert!(more > 0, "the rest of the allowance was refused");
}

/// Once refused, a client's next writes within its `Retry-After` are refused
/// by the isolate, without a Durable Object round trip (no `do` entry in
/// `Server-Timing`): a flood of writes costs the limiter nothing.
async fn a_refused_writer_is_refused_locally(app: &TestApp) {
    let ip = "198.51.100.7";
    let issue = app.get_json("/api/issues?limit=1").await["items"][0]["id"]
        .as_str()
        .expect("an issue")
        .to_owned();
    let join = || {
        app.request(Method::POST, &format!("/api/issues/{issue}/join"))
            .header(CLIENT_IP_HEADER, ip)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..WRITES {
        let r = join().await.expect("send");
        assert!(
            header(&r, "server-timing").contains("do;"),
            "a granted write asks the object"
        );
        statuses.push(r.status());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let first_refusal = join().await.expect("send");
    assert_eq!(first_refusal.status(), StatusCode::TOO_MANY_REQUESTS);
    // wrangler dev may run more than one isolate: each learns the refusal
    // from the object once; after that, refusals are local.
    let mut local = 0;
    for _ in 0..10 {
        let r = join().await.expect("send");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(!header(&r, "retry-after").is_empty());
        assert_eq!(header(&r, "ratelimit-policy"), "\"writes\";q=5;w=60");
        if !header(&r, "server-timing").contains("do;") {
            local += 1;
        }
    }
    assert!(
        local >= 8,
        "only {local} of 10 refusals were answered without the object"
    );
}

async fn creating_is_limited_per_user(app: &TestApp) {
    // A session first (its own IP, so the writes budget is separate).
    let issue = app.get_json("/api/issues?limit=1").await["items"][0]["id"]
        .as_str()
        .expect("an issue")
        .to_owned();
    let r = app
        .request(Method::POST, &format!("/api/issues/{issue}/join"))
        .header(CLIENT_IP_HEADER, "198.51.100.10")
        .send()
        .await
        .expect("join");
    let cookie = session_cookie(r.headers()).expect("a session");
    // Each create from another IP: only the per-user budget is shared.
    for i in 0..=CREATES {
        let r = app
            .request(Method::POST, "/api/issues")
            .header(CLIENT_IP_HEADER, format!("198.51.100.{}", 20 + i))
            .header("Cookie", &cookie)
            .json(&json!({"name": format!("Limited issue {i}"), "category": "community"}))
            .send()
            .await
            .expect("create");
        if i < CREATES {
            assert_eq!(r.status(), StatusCode::CREATED, "create {i}");
        } else {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(header(&r, "ratelimit-policy"), "\"create\";q=3;w=60");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits() {
    let app = TestApp::builder()
        .var("RATE_LIMITS", "reads=50/60,writes=5/60,create=3/60")
        .start()
        .await;
    run_cases(vec![
        (
            "reads past the limit",
            Box::pin(the_read_after_the_limit_is_refused(&app)),
        ),
        (
            "concurrent reads",
            Box::pin(concurrent_reads_get_exactly_their_allowance(&app)),
        ),
        ("health is a read", Box::pin(health_counts_as_a_read(&app))),
        (
            "concurrent writes",
            Box::pin(concurrent_writes_never_exceed_the_limit(&app)),
        ),
        (
            "a refused writer is refused locally",
            Box::pin(a_refused_writer_is_refused_locally(&app)),
        ),
        (
            "creating per user",
            Box::pin(creating_is_limited_per_user(&app)),
        ),
    ])
    .await;
}

/// The RATE_LIMITER binding pointed at another class (the Outbox), which
/// answers the limiter's requests with 404: a limiter that fails. Reads are
/// let through (fail open), writes refused with 503 (fail closed) for the
/// fail-closed window only, then admitted by the isolate's own limit;
/// neither is a 500, and /health names the limiter and counts it all.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_limiter_lets_reads_through_and_refuses_writes_for_a_bounded_time() {
    let limiter = r#"{ name = "RATE_LIMITER", class_name = "RateLimiter" }"#;
    let limits = RATE_LIMITS.replace("writes=100000/60", "writes=2/3600");
    let vars = [
        ("LIMITER_FAIL_CLOSED_SECS", FAIL_CLOSED_SECS),
        ("RATE_LIMITS", limits.as_str()),
    ];
    let app = TestApp::builder()
        .vars(&vars)
        .edit_config(move |toml| {
            assert!(toml.contains(limiter), "the binding to fault");
            toml.replace(
                limiter,
                r#"{ name = "RATE_LIMITER", class_name = "Outbox" }"#,
            )
        })
        .start()
        .await;
    let ip = "198.51.100.77";
    for _ in 0..3 {
        let read = get_as(&app, ip, "/api/issues?limit=1").await;
        assert_eq!(read.status(), StatusCode::OK, "reads fail open");
    }
    let issue = app.get_json("/api/issues?limit=1").await["items"][0]["id"]
        .as_str()
        .expect("an issue")
        .to_owned();
    let memberships = || async {
        format!(
            "{:?}",
            app.sql("SELECT count(*) FROM user_issues", vec![]).await
        )
    };
    let before = memberships().await;
    let write = app
        .request(Method::POST, &format!("/api/issues/{issue}/join"))
        .header(CLIENT_IP_HEADER, ip)
        .send()
        .await
        .expect("send");
    assert_eq!(
        write.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "writes fail closed"
    );
    assert!(header(&write, "retry-after").parse::<u64>().is_ok());
    let body: Value = write.json().await.expect("json");
    assert_eq!(body["error"]["code"], "limiter_unavailable");
    assert_eq!(
        memberships().await,
        before,
        "the refused join wrote nothing"
    );

    // Past the window, writes go on at the policy's limit, kept by the
    // isolate (2 per hour here), and are refused past it with a 429.
    tokio::time::sleep(
        Duration::from_secs(FAIL_CLOSED_SECS.parse().expect("secs")) + Duration::from_millis(500),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = app
            .request(Method::POST, &format!("/api/issues/{issue}/join"))
            .header(CLIENT_IP_HEADER, ip)
            .send()
            .await
            .expect("send");
        statuses.push((r.status().as_u16(), header(&r, "ratelimit")));
    }
    assert_eq!(
        statuses,
        [
            (200, "\"writes\";r=1;t=1800".to_owned()),
            (200, "\"writes\";r=0;t=3600".to_owned()),
            (429, "\"writes\";r=0;t=3600".to_owned())
        ],
        "the isolate's own limit holds"
    );

    let health = app.get("/health").send().await.expect("health");
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = health.json().await.expect("json");
    assert_eq!(
        health["failing"],
        serde_json::json!(["durable_object"]),
        "{health}"
    );
    let stats = &health["rate_limiter"];
    assert!(stats["failures"].as_u64() >= Some(5), "{health}");
    assert_eq!(stats["writes_refused_while_down"], 1, "{health}");
    assert_eq!(stats["writes_limited_locally"], 2, "{health}");
    assert!(stats["last_failure"].as_str().is_some(), "{health}");
}

/// How long writes are refused while the limiter fails, in the test above.
const FAIL_CLOSED_SECS: &str = "3";
