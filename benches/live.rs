//! Live sockets: many watchers on one issue.
//!
//! 1. **Fan-out.** N sockets on one issue (each from its own client IP),
//!    then a join every second by a new visitor: the time from each join's
//!    response to each socket's update carrying its count (p50/p95/p99),
//!    and the sockets whose last update is not the final count (dropped
//!    last values; must be 0). workerd's memory (RSS) before and after the
//!    sockets opened, per socket.
//! 2. **Push against polling**, side by side over the same window with a
//!    join every second: N watchers on sockets; N watchers polling
//!    `GET /api/issues/:id` every 5 s, and every 30 s, with the ETag they
//!    last saw (`If-None-Match`; an unchanged body is a 304). For each: the
//!    primary's Hrana requests in the window (`GET /stats`; the joins' own
//!    requests are the same on each side), requests and bytes the watchers
//!    received, and how long after a join a watcher saw it.
//!
//! Cache fresh TTL 30 s (the production default). `--quick`: 50 sockets, 3
//! joins, a 6 s window with polling every 2 s and 6 s.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestApp, CLIENT_IP_HEADER};
use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// What one watcher saw: when each count first reached it, and bytes.
#[derive(Default)]
struct Seen {
    counts: Vec<(Instant, i64)>,
    bytes: u64,
    messages: u64,
    last: Option<i64>,
}

type Shared = Arc<Mutex<Seen>>;

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256)
}

/// Sockets open, each with the task that reads it (aborted: closed).
struct Sockets {
    seen: Vec<Shared>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Sockets {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// Opens `n` sockets on `issue`, a few at a time; a task per socket
/// records what it receives.
async fn open_sockets(app: &TestApp, issue: &str, n: usize) -> Sockets {
    let url = format!(
        "{}/api/issues/{issue}/live",
        app.url.replacen("http", "ws", 1)
    );
    let opened = futures::stream::iter(0..n)
        .map(|i| {
            let url = url.clone();
            async move {
                let mut request = url.into_client_request().expect("request");
                request
                    .headers_mut()
                    .insert(CLIENT_IP_HEADER, ip(i).parse().expect("ip"));
                let (mut stream, _) = tokio_tungstenite::connect_async(request)
                    .await
                    .unwrap_or_else(|e| panic!("socket {i}: {e}"));
                let seen: Shared = Arc::default();
                let record = seen.clone();
                let reader = tokio::spawn(async move {
                    while let Some(Ok(frame)) = stream.next().await {
                        let Message::Text(text) = frame else { continue };
                        let at = Instant::now();
                        let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                        let mut s = record.lock().expect("lock");
                        s.bytes += text.len() as u64;
                        s.messages += 1;
                        if let Some(c) = v["rioter_count"].as_i64() {
                            if s.last != Some(c) {
                                s.counts.push((at, c));
                                s.last = Some(c);
                            }
                        }
                    }
                });
                (seen, reader)
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(opened.len(), n);
    let (seen, readers) = opened.into_iter().unzip();
    Sockets { seen, readers }
}

/// A join by a new visitor every `every` for `joins` times; each join's
/// response time and the count it answered.
async fn joins(app: &TestApp, issue: &str, joins: usize, every: Duration) -> Vec<(Instant, i64)> {
    let mut out = Vec::new();
    let start = Instant::now();
    for k in 0..joins {
        tokio::time::sleep_until((start + every * k as u32).into()).await;
        let r = app
            .request(reqwest::Method::POST, &format!("/api/issues/{issue}/join"))
            .header(CLIENT_IP_HEADER, "10.99.0.1")
            .send()
            .await
            .expect("join");
        let at = Instant::now();
        assert_eq!(r.status(), 200, "join {k}");
        let body: Value = r.json().await.expect("json");
        out.push((at, body["rioter_count"].as_i64().expect("count")));
    }
    out
}

/// For each join and watcher, how long after the join's response the
/// watcher first saw its count (or a later one); and how many watchers
/// never saw the last count.
fn delays(joined: &[(Instant, i64)], seen: &[Shared]) -> (Vec<Duration>, usize) {
    let mut out = Vec::new();
    let mut missed = 0;
    let last = joined.last().map(|j| j.1);
    for s in seen {
        let s = s.lock().expect("lock");
        for (at, count) in joined {
            if let Some((t, _)) = s.counts.iter().find(|(_, c)| c >= count) {
                out.push(t.saturating_duration_since(*at));
            }
        }
        if s.last != last {
            missed += 1;
        }
    }
    (out, missed)
}

async fn primary_requests(app: &TestApp) -> u64 {
    app.primary_stats().await["hrana_requests"]["total"]
        .as_u64()
        .expect("hrana_requests.total")
}

/// workerd's resident memory (KiB), summed over the processes of the
/// wrangler group named workerd.
fn workerd_rss_kib(app: &TestApp) -> Option<u64> {
    let leader = app.worker.as_ref()?.child.id();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let pgrp: Option<u32> = after.split_whitespace().nth(2).and_then(|p| p.parse().ok());
        if pgrp != Some(leader) || !stat.contains("(workerd)") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        total += status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (total > 0).then_some(total)
}

struct Poll {
    requests: u64,
    /// Polls that failed (timed out): the load is too much for the machine.
    failed: u64,
    not_modified: u64,
    bytes: u64,
}

/// `n` watchers polling the issue every `every` for `window`, each at its
/// own phase, with the ETag it last saw.
async fn poll(
    app: &TestApp,
    issue: &str,
    n: usize,
    every: Duration,
    window: Duration,
) -> (Poll, Vec<Shared>) {
    let start = Instant::now();
    let seen: Vec<Shared> = (0..n).map(|_| Shared::default()).collect();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let http = app.http.clone();
            let url = format!("{}/api/issues/{issue}", app.url);
            let record = seen[i].clone();
            let phase = every.mul_f64(i as f64 / n as f64);
            tokio::spawn(async move {
                let (mut requests, mut failed, mut not_modified, mut bytes) = (0, 0, 0, 0);
                let mut etag: Option<String> = None;
                let mut at = start + phase;
                while at < start + window {
                    tokio::time::sleep_until(at.into()).await;
                    // From 100 client IPs in turn, as the load benchmark.
                    let mut rb = http.get(&url).header(CLIENT_IP_HEADER, ip(i % 100));
                    if let Some(e) = &etag {
                        rb = rb.header("If-None-Match", e);
                    }
                    requests += 1;
                    let Ok(r) = rb.send().await else {
                        failed += 1;
                        at += every;
                        continue;
                    };
                    let got = Instant::now();
                    if r.status() == 304 {
                        not_modified += 1;
                    } else {
                        etag = r
                            .headers()
                            .get("etag")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = r.bytes().await.unwrap_or_default();
                        bytes += body.len() as u64;
                        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                        if let Some(c) = v["rioter_count"].as_i64() {
                            let mut s = record.lock().expect("lock");
                            if s.last != Some(c) {
                                s.counts.push((got, c));
                                s.last = Some(c);
                            }
                        }
                    }
                    at += every;
                }
                (requests, failed, not_modified, bytes)
            })
        })
        .collect();
    let mut total = Poll {
        requests: 0,
        failed: 0,
        not_modified: 0,
        bytes: 0,
    };
    for t in tasks {
        let (r, f, n, b) = t.await.expect("poller");
        total.requests += r;
        total.failed += f;
        total.not_modified += n;
        total.bytes += b;
    }
    (total, seen)
}

struct Row {
    name: String,
    primary: u64,
    requests: u64,
    failed: u64,
    not_modified: u64,
    bytes: u64,
    delays: Vec<Duration>,
    missed: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = support::args();
    let (sockets, fan_joins, window, polls) = if args.quick {
        (50, 3, Duration::from_secs(6), [2u64, 6])
    } else {
        (1000, 10, Duration::from_secs(60), [5u64, 30])
    };
    // The primary's deadline of production (3 s) and more: the clients,
    // workerd and the primary share two cores, and a join that misses the
    // tests' 1.5 s goes to the outbox instead of being measured.
    let app = TestApp::builder()
        .cache_fresh_secs(30)
        .var("DB_TIMEOUT_MS", "10000")
        .start()
        .await;

    let second = Duration::from_secs(1);

    // 1. Fan-out.
    // Warm: the isolate, an IssueCounter object, a socket and a join, so
    // the memory before is the runtime's and not its first use.
    let warm = app.fresh_issue("Live warm-up").await;
    let warm_sockets = open_sockets(&app, &warm, 1).await;
    joins(&app, &warm, 1, second).await;
    drop(warm_sockets);
    let issue = app.fresh_issue("Live fan-out").await;
    tokio::time::sleep(second).await;
    let rss_before = workerd_rss_kib(&app);
    let opened = Instant::now();
    let fan_sockets = open_sockets(&app, &issue, sockets).await;
    let seen = &fan_sockets.seen;
    let open_time = opened.elapsed();
    tokio::time::sleep(second).await;
    let rss_after = workerd_rss_kib(&app);
    let joined = joins(&app, &issue, fan_joins, second).await;
    tokio::time::sleep(second * 2).await;
    let (fan, dropped) = delays(&joined, seen);
    let messages: u64 = seen.iter().map(|s| s.lock().expect("lock").messages).sum();
    let memory = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!(
            "workerd RSS {} MiB before, {} MiB with the sockets open: about {:.1} KiB a socket",
            b / 1024,
            a / 1024,
            a.saturating_sub(b) as f64 / sockets as f64
        ),
        _ => "workerd RSS not readable".to_owned(),
    };
    drop(fan_sockets);

    // 2. Push against polling, each on its own issue over the same kind
    // of window, a join every second.
    let mut rows = Vec::new();
    let n = sockets;
    let joins_in_window = window.as_secs() as usize;
    {
        let issue = app.fresh_issue("Live push").await;
        let push_sockets = open_sockets(&app, &issue, n).await;
        let seen = &push_sockets.seen;
        tokio::time::sleep(second).await;
        let before_bytes: u64 = seen.iter().map(|s| s.lock().expect("lock").bytes).sum();
        let before_msgs: u64 = seen.iter().map(|s| s.lock().expect("lock").messages).sum();
        let p0 = primary_requests(&app).await;
        let joined = joins(&app, &issue, joins_in_window, second).await;
        tokio::time::sleep(second).await;
        let p1 = primary_requests(&app).await;
        let (d, missed) = delays(&joined, seen);
        let bytes: u64 = seen.iter().map(|s| s.lock().expect("lock").bytes).sum();
        let msgs: u64 = seen.iter().map(|s| s.lock().expect("lock").messages).sum();
        rows.push(Row {
            name: "push: WebSocket".into(),
            primary: p1 - p0,
            requests: msgs - before_msgs,
            failed: 0,
            not_modified: 0,
            bytes: bytes - before_bytes,
            delays: d,
            missed,
        });
    }
    for every in polls {
        let issue = app.fresh_issue(&format!("Live poll {every}")).await;
        let p0 = primary_requests(&app).await;
        let every = Duration::from_secs(every);
        let (polled, joined) = tokio::join!(
            poll(&app, &issue, n, every, window + every),
            joins(&app, &issue, joins_in_window, second)
        );
        let p1 = primary_requests(&app).await;
        let (totals, seen) = polled;
        let (d, missed) = delays(&joined, &seen);
        rows.push(Row {
            name: format!("polling every {} s with ETags", every.as_secs()),
            primary: p1 - p0,
            requests: totals.requests,
            failed: totals.failed,
            not_modified: totals.not_modified,
            bytes: totals.bytes,
            delays: d,
            missed,
        });
    }

    let pct = |d: &[Duration], p| support::pct_ms(d, p);
    let mut body = format!(
        "## Live sockets: fan-out, and push against polling ({})\n\n\
         `wrangler dev` and the local primary on this machine (2 cores, shared with the clients); cache fresh TTL 30 s, `DB_TIMEOUT_MS` 10 s. \
         **Fan-out**: {sockets} sockets on one issue, each from its own client IP, opened in {:.1} s; then {fan_joins} joins, one a second, each by a new visitor. \
         Delay: from a join's response to a socket's update carrying that count, over every (join, socket) pair. \
         A dropped last value is a socket whose last update is not the final count. Memory: {memory} (resident memory moves in steps; a sense of scale). The benchmark's client runs on the same cores.\n\n\
         | sockets | joins | updates received | delay p50 | p95 | p99 | max | dropped last values |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {sockets} | {fan_joins} | {messages} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {dropped} |\n\n\
         **Push against polling**: {n} watchers of one issue for {} s with a join every second, each way on its own issue. \
         Primary requests: Hrana requests the primary served in the window (the {joins_in_window} joins' own included, the same on every row). \
         Received: WebSocket messages, or poll responses (304s among them); bytes: message or response body bytes. \
         Seen after: from a join's response until a watcher saw its count.\n\n\
         | way | primary requests | received | of which 304 | failed (timed out) | bytes received | seen after p50 | p95 | watchers missing the last count |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        if args.quick {
            "quick run".to_owned()
        } else {
            support::today()
        },
        open_time.as_secs_f64(),
        pct(&fan, 0.5),
        pct(&fan, 0.95),
        pct(&fan, 0.99),
        pct(&fan, 1.0),
        window.as_secs(),
    );
    for r in &rows {
        body += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} ms | {:.0} ms | {} |\n",
            r.name,
            r.primary,
            r.requests,
            r.not_modified,
            r.failed,
            r.bytes,
            pct(&r.delays, 0.5),
            pct(&r.delays, 0.95),
            r.missed
        );
    }
    assert_eq!(dropped, 0, "a socket missed the last value");
    assert_eq!(rows[0].missed, 0, "a socket missed the last value");
    support::publish("live", &body, args.write.as_deref());
}
