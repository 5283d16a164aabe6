//! Faults under load, shared by the test (`tests/faults.rs`, short) and the
//! benchmark (`benches/faults.rs`, longer): many sessions read, join,
//! leave and post while the primary is SIGKILLed and started again on the
//! same file, and then workerd is SIGKILLed and the stack started again on
//! the same data. Every answer is recorded; afterwards the primary is
//! compared with what the clients were told:
//!
//! - every acknowledged (2xx) or queued (202) write is present exactly once
//!   (a join's membership, a leave's absence, a post's row), and every
//!   queued entry ends `applied`;
//! - no write is present twice, whatever its answer was;
//! - every issue's live count, and its `rioter_count` in the primary, equal
//!   its members in `user_issues`;
//! - reads during the primary's outage were served (from the cache, `HIT`
//!   or `STALE`) or refused with 503 and `Retry-After`, never hung.
//!
//! A (session, issue) pair is joined and left in turn, whether the answers
//! were direct or queued, so newer direct changes overtake older queued
//! ones of the same pair after the primary is back: the latest intent must
//! win (an overtaken entry ends `superseded`). A pair whose answer was
//! unknown (an error) gets no more changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qr_primary::client::{text, Value as Cell};
use serde_json::{json, Value};

use super::{int, TestApp};

/// What one fault run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sessions: usize,
    pub issues: usize,
    /// Each session's pause between two requests.
    pub think: Duration,
    /// Load before the first fault, between the faults, and after.
    pub settle: Duration,
    /// How long the primary stays killed.
    pub outage: Duration,
}

/// What happened, counted.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub requests: u64,
    /// Writes answered 2xx (not 202).
    pub acknowledged: u64,
    /// Writes answered 202 (kept in the outbox).
    pub queued: u64,
    /// Writes answered with an error or not at all (outcome unknown).
    pub write_errors: u64,
    /// Queued entries that ended `failed` (a lost write).
    pub queued_failed: u64,
    /// Queued joins and leaves overtaken by a newer one of the same pair
    /// (not applied, by design).
    pub superseded: u64,
    /// Acknowledged or queued writes missing from the primary.
    pub lost: u64,
    /// Writes present more than once.
    pub duplicated: u64,
    /// Issues whose live count or stored count differs from their members.
    pub count_mismatches: u64,
    /// Reads while the primary was down: served from the cache.
    pub outage_reads_served: u64,
    /// ... of which `X-Cache: STALE`.
    pub outage_reads_stale: u64,
    /// ... refused with 503 and `Retry-After`.
    pub outage_reads_refused: u64,
    /// Reads that hung (no answer within the client's timeout).
    pub hung: u64,
    /// Answers that should not happen: a 5xx other than 503, a 503
    /// without `Retry-After`, a 4xx.
    pub bad_answers: u64,
    /// Requests refused while workerd was down (connection errors).
    pub worker_down_errors: u64,
    /// How long the outbox took to drain after the primary came back.
    pub drain: Duration,
    pub examples: Vec<String>,
}

impl Report {
    /// The run lost, duplicated or miscounted nothing, and nothing hung.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.queued_failed == 0
            && self.count_mismatches == 0
            && self.hung == 0
            && self.bad_answers == 0
    }
}

const PHASE_UP: u8 = 0;
const PHASE_PRIMARY_DOWN: u8 = 1;
const PHASE_WORKER_DOWN: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    /// Its next change is a join.
    Out,
    /// Its next change is a leave.
    In,
    /// An answer was unknown: no more changes.
    Frozen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Acknowledged,
    Queued,
    Unknown,
}

#[derive(Debug, Clone)]
enum Write {
    Join { session: usize, issue: usize },
    Leave { session: usize, issue: usize },
    Post { issue: usize, content: String },
}

struct Shared {
    url: String,
    http: reqwest::Client,
    issues: Vec<String>,
    stop: AtomicBool,
    phase: AtomicU8,
    /// (write, its answer, the outbox id when queued)
    writes: Mutex<Vec<(Write, Answer, Option<String>)>>,
    report: Mutex<Report>,
}

impl Shared {
    fn note(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    fn bad(&self, what: String) {
        self.note(|r| {
            r.bad_answers += 1;
            if r.examples.len() < 10 {
                r.examples.push(what);
            }
        });
    }
}

/// A small deterministic generator (xorshift64*), one per session.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// One request; `None` when it got no answer (connection refused, or
/// hung past the client's timeout: counted here).
async fn send(
    shared: &Shared,
    rb: reqwest::RequestBuilder,
) -> Option<(u16, reqwest::header::HeaderMap, Value)> {
    shared.note(|r| r.requests += 1);
    match rb.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.json().await.unwrap_or(Value::Null);
            Some((status, headers, body))
        }
        Err(e) => {
            if e.is_timeout() {
                shared.note(|r| r.hung += 1);
                shared.bad(format!("hung: {e}"));
            } else if shared.phase.load(Ordering::Relaxed) == PHASE_WORKER_DOWN {
                shared.note(|r| r.worker_down_errors += 1);
            } else {
                shared.bad(format!("no answer: {e}"));
            }
            None
        }
    }
}

async fn read(shared: &Shared, rng: &mut Rng) {
    // Details (warmed: served from the cache during the outage), lists of
    // many sizes and feeds (often not cached, or invalidated by a post:
    // refused with 503 during the outage).
    let issue = &shared.issues[rng.below(shared.issues.len())];
    let path = match rng.below(3) {
        0 => format!("/api/issues?limit={}", 1 + rng.below(30)),
        1 => format!("/api/issues/{issue}/feed"),
        _ => format!("/api/issues/{issue}"),
    };
    let phase = shared.phase.load(Ordering::Relaxed);
    let Some((status, headers, body)) =
        send(shared, shared.http.get(format!("{}{path}", shared.url))).await
    else {
        return;
    };
    let cache = headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match status {
        200 if phase == PHASE_PRIMARY_DOWN => shared.note(|r| {
            r.outage_reads_served += 1;
            r.outage_reads_stale += u64::from(cache == "STALE");
        }),
        200 => {}
        503 if headers.contains_key("retry-after") => {
            if phase == PHASE_PRIMARY_DOWN {
                shared.note(|r| r.outage_reads_refused += 1);
            }
        }
        _ => shared.bad(format!("GET {path}: {status} {body}")),
    }
}

/// A write's answer: acknowledged, queued (with its outbox id), or unknown.
fn answer_of(
    shared: &Shared,
    what: &str,
    reply: Option<(u16, reqwest::header::HeaderMap, Value)>,
) -> (Answer, Option<String>) {
    match reply {
        Some((202, _, body)) => (Answer::Queued, body["id"].as_str().map(str::to_owned)),
        Some((s, _, _)) if (200..300).contains(&s) => (Answer::Acknowledged, None),
        Some((503, headers, _)) if headers.contains_key("retry-after") => (Answer::Unknown, None),
        Some((s, _, body)) => {
            shared.bad(format!("{what}: {s} {body}"));
            (Answer::Unknown, None)
        }
        None => (Answer::Unknown, None),
    }
}

async fn session_loop(shared: Arc<Shared>, session: usize, cookie: String, think: Duration) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((session as u64 + 1) * 0x1000_0001));
    let mut pairs = vec![Pair::Out; shared.issues.len()];
    // Every session joined issue 0 before the load.
    pairs[0] = Pair::In;
    let mut posts = 0usize;
    while !shared.stop.load(Ordering::Relaxed) {
        match rng.below(4) {
            0 | 1 => read(&shared, &mut rng).await,
            2 => {
                let issue = rng.below(pairs.len());
                let (write, method) = match pairs[issue] {
                    Pair::Out => (Write::Join { session, issue }, reqwest::Method::POST),
                    Pair::In => (Write::Leave { session, issue }, reqwest::Method::DELETE),
                    Pair::Frozen => continue,
                };
                let path = format!("{}/api/issues/{}/join", shared.url, shared.issues[issue]);
                let reply = send(
                    &shared,
                    shared.http.request(method, &path).header("Cookie", &cookie),
                )
                .await;
                let (answer, id) = answer_of(&shared, &path, reply);
                pairs[issue] = match (answer, &write) {
                    (Answer::Unknown, _) => Pair::Frozen,
                    (_, Write::Join { .. }) => Pair::In,
                    _ => Pair::Out,
                };
                record(&shared, write, answer, id);
            }
            _ => {
                posts += 1;
                let issue = rng.below(shared.issues.len());
                let content = format!("Fault run post {session}-{posts}");
                let path = format!("{}/api/issues/{}/feed", shared.url, shared.issues[issue]);
                let reply = send(
                    &shared,
                    shared
                        .http
                        .post(&path)
                        .header("Cookie", &cookie)
                        .json(&json!({ "content": content })),
                )
                .await;
                let (answer, id) = answer_of(&shared, &path, reply);
                record(&shared, Write::Post { issue, content }, answer, id);
            }
        }
        tokio::time::sleep(think).await;
    }
}

fn record(shared: &Shared, write: Write, answer: Answer, id: Option<String>) {
    shared.note(|r| match answer {
        Answer::Acknowledged => r.acknowledged += 1,
        Answer::Queued => r.queued += 1,
        Answer::Unknown => r.write_errors += 1,
    });
    if let Ok(mut w) = shared.writes.lock() {
        w.push((write, answer, id));
    }
}

/// Runs `plan` against `app` (which must be started with the primary up):
/// sessions are made first, then the load, the primary's kill and restart,
/// workerd's kill and restart, the drain of the outbox, and the checks.
pub async fn run(app: &mut TestApp, plan: &Plan) -> Report {
    let mut issues = Vec::new();
    for n in 0..plan.issues {
        issues.push(app.fresh_issue(&format!("Fault run issue {n}")).await);
    }
    // Every session joins issue 0 first (a session cookie, and a write to check).
    // A connection per request: a kept-alive connection to the killed
    // workerd would fail the first request sent on it after the restart,
    // which says nothing about the server.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let shared = Arc::new(Shared {
        url: app.url.clone(),
        http,
        issues,
        stop: AtomicBool::new(false),
        phase: AtomicU8::new(PHASE_UP),
        writes: Mutex::new(Vec::new()),
        report: Mutex::new(Report::default()),
    });
    let mut cookies = Vec::new();
    for session in 0..plan.sessions {
        let path = format!("{}/api/issues/{}/join", shared.url, shared.issues[0]);
        let r = shared.http.post(&path).send().await.expect("first join");
        assert_eq!(r.status().as_u16(), 200, "first join of session {session}");
        let cookie = super::session_cookie(r.headers()).expect("a session");
        record(
            &shared,
            Write::Join { session, issue: 0 },
            Answer::Acknowledged,
            None,
        );
        cookies.push(cookie);
    }
    // Warm the cache: every issue's detail and the list are read once.
    for issue in &shared.issues {
        let _ = shared
            .http
            .get(format!("{}/api/issues/{issue}", shared.url))
            .send()
            .await;
    }

    let tasks: Vec<_> = cookies
        .iter()
        .enumerate()
        .map(|(session, cookie)| {
            let shared = shared.clone();
            let cookie = cookie.clone();
            let think = plan.think;
            tokio::spawn(session_loop(shared, session, cookie, think))
        })
        .collect();
    let step = |what: &str| eprintln!("fault run: {what}");

    tokio::time::sleep(plan.settle).await;
    step(&format!("SIGKILL the primary for {:?}", plan.outage));
    shared.phase.store(PHASE_PRIMARY_DOWN, Ordering::Relaxed);
    app.kill_primary();
    tokio::time::sleep(plan.outage).await;
    step("start the primary again on the same file");
    app.restart_primary();
    let primary_back = Instant::now();
    shared.phase.store(PHASE_UP, Ordering::Relaxed);
    tokio::time::sleep(plan.settle).await;
    step("SIGKILL workerd, start the stack again on the same data");
    shared.phase.store(PHASE_WORKER_DOWN, Ordering::Relaxed);
    app.restart_worker(true).await;
    shared.phase.store(PHASE_UP, Ordering::Relaxed);
    tokio::time::sleep(plan.settle).await;
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    step("load stopped; waiting for the outbox to drain");

    let writes = shared.writes.lock().map(|w| w.clone()).unwrap_or_default();
    let mut report = shared.report.lock().map(|r| r.clone()).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut statuses: HashMap<String, String> = HashMap::new();
    for id in writes.iter().filter_map(|(_, _, id)| id.as_ref()) {
        loop {
            let s = app.get_json_any(&format!("/api/outbox/{id}")).await;
            let status = s["status"].as_str().unwrap_or("unknown").to_owned();
            if status != "queued" || Instant::now() > deadline {
                if status == "failed" && report.examples.len() < 10 {
                    report.examples.push(format!("queued entry failed: {s}"));
                }
                statuses.insert(id.clone(), status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    report.drain = primary_back.elapsed();
    report.superseded = statuses.values().filter(|s| *s == "superseded").count() as u64;
    report.queued_failed = statuses
        .values()
        .filter(|s| !matches!(s.as_str(), "applied" | "superseded"))
        .count() as u64;

    check(app, &shared, &cookies, &writes, &mut report).await;
    report
}

async fn check(
    app: &TestApp,
    shared: &Shared,
    cookies: &[String],
    writes: &[(Write, Answer, Option<String>)],
    report: &mut Report,
) {
    let mut users = Vec::new();
    for cookie in cookies {
        let me = app.me(cookie).await;
        users.push(me["user"]["id"].as_str().expect("a user").to_owned());
    }
    let example = |report: &mut Report, what: String| {
        if report.examples.len() < 10 {
            report.examples.push(what);
        }
    };
    // The last answered intent of each pair: its final state.
    let mut last: HashMap<(usize, usize), (bool, Answer)> = HashMap::new();
    for (write, answer, _) in writes {
        match write {
            Write::Join { session, issue } => {
                last.insert((*session, *issue), (true, *answer));
            }
            Write::Leave { session, issue } => {
                last.insert((*session, *issue), (false, *answer));
            }
            Write::Post { issue, content } => {
                let n = int(&app
                    .sql(
                        "SELECT count(*) FROM feed WHERE issue_id = ? AND content = ?",
                        vec![text(shared.issues[*issue].as_str()), text(content.as_str())],
                    )
                    .await[0][0]);
                if n > 1 {
                    report.duplicated += 1;
                    example(report, format!("post {content:?} is there {n} times"));
                }
                if n == 0 && *answer != Answer::Unknown {
                    report.lost += 1;
                    example(report, format!("post {content:?} ({answer:?}) is missing"));
                }
            }
        }
    }
    for ((session, issue), (member, answer)) in last {
        let n = int(&app
            .sql(
                "SELECT count(*) FROM user_issues WHERE user_id = ? AND issue_id = ?",
                vec![
                    text(users[session].as_str()),
                    text(shared.issues[issue].as_str()),
                ],
            )
            .await[0][0]);
        if n > 1 {
            report.duplicated += 1;
        }
        if answer != Answer::Unknown && (n == 1) != member {
            report.lost += 1;
            example(
                report,
                format!("session {session}, issue {issue}: {answer:?} member={member}, rows {n}"),
            );
        }
    }
    // Counts: the live count (the API's) and the stored one settle to the
    // members within the flush interval.
    for issue in &shared.issues {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let members = int(&app
                .sql(
                    "SELECT count(*) FROM user_issues WHERE issue_id = ?",
                    vec![text(issue.as_str())],
                )
                .await[0][0]);
            let stored = app
                .sql(
                    "SELECT rioter_count FROM issues WHERE id = ?",
                    vec![text(issue.as_str())],
                )
                .await;
            let stored = match stored.first().and_then(|r| r.first()) {
                Some(Cell::Integer { value }) => *value,
                _ => -1,
            };
            let live = app.get_json_any(&format!("/api/issues/{issue}")).await["rioter_count"]
                .as_i64()
                .unwrap_or(-1);
            if live == members && stored == members {
                break;
            }
            if Instant::now() > deadline {
                report.count_mismatches += 1;
                example(
                    report,
                    format!("issue {issue}: {members} members, live {live}, stored {stored}"),
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The report as a table (for the benchmark and the test's output).
pub fn table(plan: &Plan, r: &Report) -> String {
    format!(
        "| sessions | requests | acknowledged | queued (202) | superseded | write errors | lost | duplicated | queued failed | count mismatches | outage reads served (stale) | outage reads 503 | hung | bad answers | outbox drained after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {:.1} s |",
        plan.sessions,
        r.requests,
        r.acknowledged,
        r.queued,
        r.superseded,
        r.write_errors,
        r.lost,
        r.duplicated,
        r.queued_failed,
        r.count_mismatches,
        r.outage_reads_served,
        r.outage_reads_stale,
        r.outage_reads_refused,
        r.hung,
        r.bad_answers,
        r.drain.as_secs_f64(),
    )
}
