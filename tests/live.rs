//! Live sockets (`GET /api/issues/:id/live`) against `wrangler dev`: the
//! snapshot, then joins, leaves and posts pushed within a second; how many
//! watch; the guards before the upgrade; the caps after it; keep-alives;
//! and sockets that outlive an eviction of their object.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One live socket, as a client sees it.
struct Socket(Stream);

/// How a socket ended: its close code and reason.
#[derive(Debug, PartialEq)]
struct Closed(u16, String);

impl Socket {
    /// The next text frame, parsed; `Err` if the socket closed instead.
    async fn next(&mut self, within: Duration) -> Result<Value, Closed> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.0.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {within:?}"));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("{e}: {text}")))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(Closed(1005, String::new()), |f| {
                        Closed(u16::from(f.code), f.reason.to_string())
                    }))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket failed: {e}"),
                None => return Err(Closed(1006, String::new())),
            }
        }
    }

    /// Messages until one for which `wanted` holds (within `within`).
    async fn until(
        &mut self,
        what: &str,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: not within {within:?}; saw {seen:?}"
            );
            let message = match tokio::time::timeout(left, self.next(left)).await {
                Ok(Ok(m)) => m,
                Ok(Err(closed)) => panic!("{what}: the socket closed: {closed:?}"),
                Err(_) => panic!("{what}: not within {within:?}; saw {seen:?}"),
            };
            if wanted(&message) {
                return message;
            }
            seen.push(message);
        }
    }

    async fn send(&mut self, text: &str) {
        self.0.send(Message::Text(text.into())).await.expect("send");
    }

    /// The next raw text frame (`pong` is not JSON).
    async fn next_text(&mut self, within: Duration) -> String {
        loop {
            let frame = tokio::time::timeout(within, self.0.next())
                .await
                .expect("a frame in time");
            if let Some(Ok(Message::Text(text))) = frame {
                return text.to_string();
            }
        }
    }
}

fn live_url(app: &TestApp, issue: &str) -> String {
    format!(
        "{}/api/issues/{issue}/live",
        app.url.replacen("http", "ws", 1)
    )
}

/// Opens a socket on `issue` as client `ip`, from a page of `origin`.
async fn open(
    app: &TestApp,
    issue: &str,
    ip: &str,
    origin: Option<&str>,
) -> Result<Socket, WsError> {
    open_as(app, issue, ip, origin, None).await
}

/// [`open`] with an `X-Request-Id`.
async fn open_as(
    app: &TestApp,
    issue: &str,
    ip: &str,
    origin: Option<&str>,
    request_id: Option<&str>,
) -> Result<Socket, WsError> {
    let mut request = live_url(app, issue).into_client_request().expect("request");
    let headers = request.headers_mut();
    if let Some(id) = request_id {
        headers.insert("X-Request-Id", id.parse().expect("id"));
    }
    headers.insert(CLIENT_IP_HEADER, ip.parse().expect("ip"));
    if let Some(origin) = origin {
        headers.insert("Origin", origin.parse().expect("origin"));
    }
    let (stream, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(response.status(), 101);
    Ok(Socket(stream))
}

/// Opens a socket that must be admitted; its snapshot too.
async fn watch(app: &TestApp, issue: &str, ip: &str) -> (Socket, Value) {
    let mut socket = open(app, issue, ip, Some(ALLOWED_ORIGIN))
        .await
        .expect("a socket");
    let snapshot = socket
        .next(Duration::from_secs(5))
        .await
        .expect("a snapshot");
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (socket, snapshot)
}

/// A handshake refused before the upgrade: the status the WebSocket client
/// saw, and the JSON error of the same handshake sent over plain HTTP (the
/// WebSocket client keeps only what of the body came with the headers).
async fn refused(app: &TestApp, issue: &str, ip: &str, origin: Option<&str>) -> (u16, Value) {
    let status = match open(app, issue, ip, origin).await {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("the socket opened"),
    };
    let mut request = app
        .get(&format!("/api/issues/{issue}/live"))
        .header(CLIENT_IP_HEADER, ip)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    let response = request.send().await.expect("send");
    assert_eq!(
        response.status().as_u16(),
        status,
        "the same answer over HTTP"
    );
    (status, response.json().await.unwrap_or(Value::Null))
}

const SECOND: Duration = Duration::from_secs(1);

async fn snapshot_then_joins_leaves_and_posts(app: &TestApp) {
    let issue = app.fresh_issue("Live potholes").await;
    let org = app.fresh_organisation("Live Council").await;
    app.link_organisation(&issue, &org).await;
    let (mut socket, snapshot) = watch(app, &issue, "10.1.0.1").await;
    assert_eq!(snapshot["issue_id"], issue.as_str());
    assert_eq!(snapshot["rioter_count"], 0);
    assert_eq!(snapshot["organisations"], json!({ org.clone(): 0 }));
    assert_eq!(snapshot["posts"], json!([]));
    assert_eq!(snapshot["watching"], 1);

    // Another session joins: the socket hears of it within a second.
    let join = app
        .call(
            Method::POST,
            &format!("/api/issues/{issue}/join"),
            None,
            Some(json!({ "organisation_id": org })),
        )
        .await;
    assert_eq!(join.status, 200, "{}", join.body);
    let cookie = join.cookie.expect("a session");
    let joined = socket
        .until("the join", SECOND, |m| m["rioter_count"] == 1)
        .await;
    assert_eq!(joined["type"], "update");
    assert_eq!(joined["organisations"][&org], 1);
    assert_eq!(joined["watching"], 1);

    let leave = app
        .call(
            Method::DELETE,
            &format!("/api/issues/{issue}/join"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!(leave.status, 200, "{}", leave.body);
    let left = socket
        .until("the leave", SECOND, |m| m["rioter_count"] == 0)
        .await;
    assert_eq!(left["organisations"][&org], 0);

    let post = app
        .call(
            Method::POST,
            &format!("/api/issues/{issue}/feed"),
            Some(&cookie),
            Some(json!({ "content": "Live from Mill Lane" })),
        )
        .await;
    assert_eq!(post.status, 201, "{}", post.body);
    let pushed = socket
        .until("the post", SECOND, |m| {
            m["posts"].as_array().is_some_and(|p| !p.is_empty())
        })
        .await;
    let pushed = &pushed["posts"][0];
    assert_eq!(pushed["id"], post.body["id"]);
    assert_eq!(pushed["content"], "Live from Mill Lane");
    assert_eq!(pushed["created_at"], post.body["created_at"]);
    assert_eq!(pushed["author"], Value::Null, "a new user has no name");

    // A socket opened now has the post in its snapshot.
    let (_, later) = watch(app, &issue, "10.1.0.2").await;
    assert_eq!(later["posts"], json!([post.body["id"]]));
    assert_eq!(later["watching"], 2);
}

async fn watching_goes_up_and_down(app: &TestApp) {
    let issue = app.fresh_issue("Live watchers").await;
    let (mut first, _) = watch(app, &issue, "10.2.0.1").await;
    let (mut second, snapshot) = watch(app, &issue, "10.2.0.2").await;
    assert_eq!(snapshot["watching"], 2);
    first
        .until("a second watcher", SECOND, |m| m["watching"] == 2)
        .await;
    second.0.close(None).await.expect("close");
    first
        .until("the second watcher gone", SECOND, |m| m["watching"] == 1)
        .await;
}

async fn guards_before_the_upgrade(app: &TestApp) {
    let issue = app.fresh_issue("Live guards").await;
    let (status, body) = refused(app, &issue, "10.3.0.1", Some("https://evil.example")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("origin_refused")),
        "{body}"
    );
    // The Worker's own origin, and no origin at all (a bot, a server).
    open(app, &issue, "10.3.0.1", Some(&app.url))
        .await
        .expect("own origin");
    let mut bot = open(app, &issue, "10.3.0.2", None)
        .await
        .expect("no origin");
    assert_eq!(
        bot.next(SECOND * 5).await.expect("snapshot")["type"],
        "snapshot"
    );

    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, body) = refused(app, unknown, "10.3.0.3", Some(ALLOWED_ORIGIN)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = refused(app, "not-a-uuid", "10.3.0.3", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("validation_failed")),
        "{body}"
    );

    // A plain request is told to upgrade.
    let plain = app
        .call(
            Method::GET,
            &format!("/api/issues/{issue}/live"),
            None,
            None,
        )
        .await;
    assert_eq!(plain.status, 426, "{}", plain.body);
    assert_eq!(plain.body["error"]["code"], "upgrade_required");
    // The body names the protocol: workerd drops a hop-by-hop `Upgrade`
    // header from any answer but a 101.
    assert_eq!(plain.body["error"]["details"]["upgrade"], "websocket");
    assert!(plain.body["error"]["request_id"].is_string());
    let bad_origin = app
        .get(&format!("/api/issues/{issue}/live"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    assert_eq!(bad_origin.status(), 403, "the origin is checked first");
    // A bad id is the request's fault before its missing upgrade.
    let bad_id = app
        .call(Method::GET, "/api/issues/not-a-uuid/live", None, None)
        .await;
    assert_eq!(
        (
            bad_id.status.as_u16(),
            bad_id.body["error"]["code"].as_str()
        ),
        (400, Some("validation_failed")),
        "{}",
        bad_id.body
    );
}

async fn pings_are_answered_and_other_messages_close(app: &TestApp) {
    let issue = app.fresh_issue("Live pings").await;
    let (mut socket, _) = watch(app, &issue, "10.4.0.1").await;
    socket.send("ping").await;
    assert_eq!(socket.next_text(SECOND * 2).await, "pong");
    socket.send("{\"type\": \"subscribe\"}").await;
    let closed = socket.next(SECOND * 2).await.expect_err("closed");
    assert_eq!(closed.0, 1003, "{closed:?}");
    assert!(closed.1.contains("ping"), "{closed:?}");
}

/// A handshake reads the issue and its feed through the read cache: two
/// round trips to the primary for the first socket of an issue, none for
/// the next while the cache is fresh. Updates cost the primary nothing.
async fn a_socket_costs_the_primary_only_cache_misses(app: &TestApp) {
    let issue = app.fresh_issue("Live costs").await;
    let pid = std::process::id();
    let (first, second) = (format!("live-rt-1-{pid}"), format!("live-rt-2-{pid}"));
    let mut a = open_as(app, &issue, "10.8.0.1", None, Some(&first))
        .await
        .expect("a socket");
    a.next(SECOND * 5).await.expect("a snapshot");
    assert_eq!(app.round_trips(&first).await, 2, "the detail and the feed");
    let mut b = open_as(app, &issue, "10.8.0.2", None, Some(&second))
        .await
        .expect("a socket");
    b.next(SECOND * 5).await.expect("a snapshot");
    assert_eq!(app.round_trips(&second).await, 0, "both from the cache");
}

/// The test app's caps: 3 sockets per issue, 2 per client on an issue.
async fn caps_close_with_their_codes(app: &TestApp) {
    let issue = app.fresh_issue("Live caps").await;
    let (_a, _) = watch(app, &issue, "10.5.0.1").await;
    let (_b, _) = watch(app, &issue, "10.5.0.1").await;
    let mut third = open(app, &issue, "10.5.0.1", None)
        .await
        .expect("handshake");
    let closed = third.next(SECOND * 2).await.expect_err("refused");
    assert_eq!(closed.0, 4008, "{closed:?}");
    let (_c, snapshot) = watch(app, &issue, "10.5.0.2").await;
    assert_eq!(snapshot["watching"], 3, "refused sockets do not watch");
    let mut full = open(app, &issue, "10.5.0.3", None)
        .await
        .expect("handshake");
    let closed = full.next(SECOND * 2).await.expect_err("refused");
    assert_eq!(closed.0, 4009, "{closed:?}");
    assert!(closed.1.contains("retry later"), "{closed:?}");
}

/// The test app's `live` policy: 6 new sockets a minute per IP.
async fn new_sockets_are_rate_limited_per_client(app: &TestApp) {
    let mut kept = Vec::new();
    for i in 0..6 {
        let issue = app.fresh_issue(&format!("Live rate {i}")).await;
        kept.push(watch(app, &issue, "10.6.0.1").await.0);
    }
    let issue = app.fresh_issue("Live rate, one too many").await;
    let (status, body) = refused(app, &issue, "10.6.0.1", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    watch(app, &issue, "10.6.0.2").await;
}

async fn sockets_outlive_an_eviction(app: &TestApp) {
    let issue = app.fresh_issue("Live across an eviction").await;
    let (mut first, _) = watch(app, &issue, "10.7.0.1").await;
    let (mut second, _) = watch(app, &issue, "10.7.0.2").await;
    first
        .until("the second watcher", SECOND, |m| m["watching"] == 2)
        .await;
    app.evict_objects().await;
    // Keep-alives are answered by the runtime, object or not.
    first.send("ping").await;
    assert_eq!(first.next_text(SECOND * 2).await, "pong");
    let join = app
        .call(
            Method::POST,
            &format!("/api/issues/{issue}/join"),
            None,
            None,
        )
        .await;
    assert_eq!(join.status, 200, "{}", join.body);
    for socket in [&mut first, &mut second] {
        let m = socket
            .until("the join after the eviction", SECOND * 2, |m| {
                m["rioter_count"] == 1
            })
            .await;
        assert_eq!(m["watching"], 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sockets() {
    let app = TestApp::builder()
        .vars(&[
            ("LIVE_MAX_PER_ISSUE", "3"),
            ("LIVE_MAX_PER_CLIENT", "2"),
            (
                "RATE_LIMITS",
                "reads=100000/60,writes=100000/60,create=100000/60,live=6/60",
            ),
        ])
        .start()
        .await;
    run_cases(vec![
        (
            "snapshot_then_joins_leaves_and_posts",
            Box::pin(snapshot_then_joins_leaves_and_posts(&app)),
        ),
        (
            "watching_goes_up_and_down",
            Box::pin(watching_goes_up_and_down(&app)),
        ),
        (
            "guards_before_the_upgrade",
            Box::pin(guards_before_the_upgrade(&app)),
        ),
        (
            "pings_are_answered_and_other_messages_close",
            Box::pin(pings_are_answered_and_other_messages_close(&app)),
        ),
        (
            "a_socket_costs_the_primary_only_cache_misses",
            Box::pin(a_socket_costs_the_primary_only_cache_misses(&app)),
        ),
        (
            "caps_close_with_their_codes",
            Box::pin(caps_close_with_their_codes(&app)),
        ),
        (
            "new_sockets_are_rate_limited_per_client",
            Box::pin(new_sockets_are_rate_limited_per_client(&app)),
        ),
        (
            "sockets_outlive_an_eviction",
            Box::pin(sockets_outlive_an_eviction(&app)),
        ),
    ])
    .await;
}
