//! The Worker under load in `wrangler dev` with the local primary
//! and the synthetic set (10,000 issues; `--quick`: 1,000 and a few seconds
//! per scenario). Load comes from this process (tokio + reqwest) on
//! 127.0.0.1, bounded in count and time, sharing the machine's cores with
//! workerd and the primary. Scenarios:
//!
//! - *reads*: an open-loop mix of `GET /api/issues/:id` (Zipf(1.0) over the
//!   issues, most popular first) and `GET /api/issues?q=` (Zipf(1.0) over the
//!   search bench's terms) at 200 requests/s, then stepped rates to find the
//!   highest one with p95 under 100 ms; the bare `/__bench/constant` route
//!   the same way, as the baseline.
//! - *mixed*: 50 users in closed loops, each with its own cookie session and
//!   client IP: 80% reads, 15% join/leave, 5% posts; then every
//!   `issues.rioter_count` (and `issue_organisation.rioter_count`) is
//!   compared with its `user_issues` rows once the counters have flushed.
//! - *abuse*: with the default (production) rate limits, 20 browsing
//!   clients alone, then the same with one client flooding writes.
//!
//! Figures are printed (and with `--write FILE` put in FILE), never asserted.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{int, session_cookie, Seed, TestApp, CLIENT_IP_HEADER};
use qr_primary::seed::{Rng, Zipf};
use support::{pct_ms, timing, SEARCH_TERMS};

/// The fixed rate of the reads scenario.
const READ_RATE: f64 = 200.0;
/// The highest rate counts as sustained when its p95 is under this.
const P95_TARGET_MS: f64 = 100.0;
/// The first rate the highest-rate search tries.
const STEP_START: f64 = 100.0;
/// Share of the reads that are searches (the rest are issue details).
const SEARCH_SHARE: f64 = 0.25;
const USERS: usize = 50;
const BROWSERS: usize = 20;
/// Each browser's reads a second (under the 120/60 s reads limit).
const BROWSER_RATE: f64 = 1.5;
/// Concurrent connections of the flooding client.
const FLOOD_CONNECTIONS: usize = 4;
/// The production defaults (docs/rate-limits.md).
const PRODUCTION_LIMITS: &str = "reads=120/60,writes=30/60,create=20/60";
const WRITE_LIMIT: f64 = 30.0;
const WRITE_WINDOW_SECS: f64 = 60.0;
/// The browsers' p95 with the flooder may be at most this times their p95
/// alone (the abuse scenario's stated bound).
const P95_BOUND: f64 = 2.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Detail,
    Search,
    Constant,
    Join,
    Leave,
    Post,
}

/// One request to send.
struct Req {
    kind: Kind,
    method: reqwest::Method,
    path: String,
    ip: String,
    cookie: Option<String>,
    body: Option<serde_json::Value>,
}

/// One answered (or failed) request.
#[derive(Clone, Copy)]
struct Sample {
    kind: Kind,
    latency: Duration,
    answer: Answer,
}

/// What the Worker answered.
#[derive(Clone, Copy, Default)]
struct Answer {
    /// HTTP status; 0 when no answer came (connection error, timeout).
    status: u16,
    /// `X-Cache`, on a cached read.
    x_cache: Option<XCache>,
    /// Where a cached read's entry came from (`Server-Timing:
    /// cache;desc=memory|kv|primary`).
    from: Option<From>,
    /// The Worker's `Server-Timing`, ms: KV, Durable Objects, the primary,
    /// and its total.
    kv: Option<u32>,
    dobj: Option<u32>,
    db: Option<u32>,
    total: Option<u32>,
}

/// A cached read's `X-Cache`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum XCache {
    Hit,
    Stale,
    Miss,
}

impl XCache {
    fn of(value: &[u8]) -> Option<XCache> {
        match value {
            b"HIT" => Some(XCache::Hit),
            b"STALE" => Some(XCache::Stale),
            b"MISS" => Some(XCache::Miss),
            _ => None,
        }
    }
}

/// Where a cached read's entry came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Memory,
    Kv,
    Primary,
}

impl From {
    fn of(server_timing: &str) -> Option<From> {
        server_timing.split(',').find_map(|part| {
            match part.trim().strip_prefix("cache;desc=")?.trim_matches('"') {
                "memory" => Some(From::Memory),
                "kv" => Some(From::Kv),
                "primary" => Some(From::Primary),
                _ => None,
            }
        })
    }
}

impl Sample {
    fn ok(&self) -> bool {
        (200..300).contains(&self.answer.status)
    }
}

/// Sends `req`; the answer and the session cookie it set, if any.
async fn send(http: &reqwest::Client, base: &str, req: Req) -> (Answer, Option<String>) {
    let mut b = http
        .request(req.method, format!("{base}{}", req.path))
        .header(CLIENT_IP_HEADER, req.ip);
    if let Some(c) = req.cookie {
        b = b.header("cookie", c);
    }
    if let Some(body) = req.body {
        b = b.json(&body);
    }
    match b.send().await {
        Ok(r) => {
            let h = r.headers();
            let st = h
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let answer = Answer {
                status: r.status().as_u16(),
                x_cache: h.get("x-cache").and_then(|v| XCache::of(v.as_bytes())),
                from: From::of(st),
                kv: timing(st, "kv"),
                dobj: timing(st, "do"),
                db: timing(st, "db"),
                total: timing(st, "total"),
            };
            let cookie = session_cookie(h);
            if let Err(e) = r.bytes().await {
                eprintln!("  {}: reading the body failed: {e}", req.path);
                return (Answer::default(), None);
            }
            (answer, cookie)
        }
        Err(e) => {
            eprintln!("  {} failed: {e}", req.path);
            (Answer::default(), None)
        }
    }
}

/// Figures of a set of samples over `secs` seconds.
struct Stats {
    sent: usize,
    ok: usize,
    errors: usize,
    limited: usize,
    secs: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

impl Stats {
    fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>, secs: f64) -> Stats {
        let samples: Vec<&Sample> = samples.into_iter().collect();
        let answered: Vec<Duration> = samples
            .iter()
            .filter(|s| s.answer.status != 0)
            .map(|s| s.latency)
            .collect();
        let ok = samples.iter().filter(|s| s.ok()).count();
        Stats {
            sent: samples.len(),
            ok,
            errors: samples.len() - ok,
            limited: samples.iter().filter(|s| s.answer.status == 429).count(),
            secs,
            p50: pct_ms(&answered, 0.5),
            p95: pct_ms(&answered, 0.95),
            p99: pct_ms(&answered, 0.99),
        }
    }
    fn throughput(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }
    fn error_rate(&self) -> f64 {
        self.errors as f64 / self.sent.max(1) as f64
    }
    /// `| requests | ok/s | p50 | p95 | p99 | errors | error rate |` cells.
    fn cells(&self) -> String {
        format!(
            "{} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.2}%",
            self.sent,
            self.throughput(),
            self.p50,
            self.p95,
            self.p99,
            self.errors,
            self.error_rate() * 100.0
        )
    }
}

/// Where the time of each group's answered requests went, from the
/// Worker's `Server-Timing` (means, ms; a part the request did not use
/// counts 0): a table.
fn time_table(groups: Vec<(String, Vec<&Sample>)>) -> String {
    let mut t = String::from(
        "| class | answered | cache HITs | mean latency | in the Worker (`total`) | primary (`db`) | \
         Durable Objects (`do`) | KV (`kv`) | outside the Worker (latency - `total`) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, samples) in groups {
        let answered: Vec<&Sample> = samples
            .into_iter()
            .filter(|s| s.answer.status != 0)
            .collect();
        let n = answered.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Sample) -> f64| answered.iter().map(|s| f(s)).sum::<f64>() / n;
        let ms = |v: Option<u32>| f64::from(v.unwrap_or(0));
        let latency = mean(&|s| s.latency.as_secs_f64() * 1e3);
        let total = mean(&|s| ms(s.answer.total));
        t += &format!(
            "| {name} | {} | {:.0}% | {latency:.1} ms | {total:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |\n",
            answered.len(),
            100.0 * answered
                .iter()
                .filter(|s| s.answer.x_cache == Some(XCache::Hit))
                .count() as f64 / n,
            mean(&|s| ms(s.answer.db)),
            mean(&|s| ms(s.answer.dobj)),
            mean(&|s| ms(s.answer.kv)),
            latency - total,
        );
    }
    t
}

const STATS_HEAD: &str = "requests | ok/s | p50 | p95 | p99 | errors | error rate";

/// Sends `next(n)` at `rate` a second for `duration`, open loop: each
/// request at its scheduled time whatever the earlier ones are doing, its
/// latency counted from that time. Waits for every answer.
async fn open_loop(
    app: &TestApp,
    what: &str,
    rate: f64,
    duration: Duration,
    mut next: impl FnMut(usize) -> Req,
) -> (Vec<Sample>, f64) {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut last_report = 0;
    for n in 0..total {
        let at = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let secs = started.elapsed().as_secs();
        if secs >= last_report + 10 {
            last_report = secs;
            eprintln!(
                "  {what}: {secs} s, {n} sent, {} answered",
                done.load(Ordering::Relaxed)
            );
        }
        let req = next(n);
        let (http, base, done) = (app.http.clone(), app.url.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let kind = req.kind;
            let (answer, _) = send(&http, &base, req).await;
            done.fetch_add(1, Ordering::Relaxed);
            Sample {
                kind,
                latency: at.elapsed(),
                answer,
            }
        }));
    }
    let secs = started.elapsed().as_secs_f64();
    let mut samples = Vec::with_capacity(total);
    for t in tasks {
        match t.await {
            Ok(s) => samples.push(s),
            Err(e) => eprintln!("  {what}: a request task failed: {e}"),
        }
    }
    (samples, secs)
}

/// The longest [`settle`] so far, ms.
static LONGEST_SETTLE_MS: AtomicUsize = AtomicUsize::new(0);

/// Waits until the stack has caught up with earlier load (work it queued,
/// such as cache writes): until 10 bare-route requests in a row answer
/// within 20 ms, at most 60 s.
async fn settle(app: &TestApp) {
    let started = Instant::now();
    let mut fast = 0;
    while fast < 10 && started.elapsed() < Duration::from_secs(60) {
        let t = Instant::now();
        let ok = app
            .get("/__bench/constant")
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok && t.elapsed() < Duration::from_millis(20) {
            fast += 1;
        } else {
            fast = 0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ms = started.elapsed().as_millis() as usize;
    LONGEST_SETTLE_MS.fetch_max(ms, Ordering::Relaxed);
    if fast < 10 {
        eprintln!("  the stack did not settle within 60 s; going on");
    } else if ms > 2_000 {
        eprintln!("  settled in {:.1} s", ms as f64 / 1e3);
    }
}

fn settle_note() -> String {
    format!(
        "Before each run the stack is let settle (until 10 bare-route requests in a row answer within 20 ms, at most \
         60 s; the longest wait so far: {:.1} s).",
        LONGEST_SETTLE_MS.load(Ordering::Relaxed) as f64 / 1e3
    )
}

/// The data the load is drawn from.
struct Data {
    /// Issue ids, most rioters first (Zipf rank order).
    ids: Vec<String>,
    issues: Zipf,
    terms: Zipf,
}

/// Anonymous reads of the mix, drawn from `seed`, from `clients` client
/// IPs `{subnet}.N` in turn: request `n` of an open loop.
fn reads_from(
    data: &Arc<Data>,
    seed: u64,
    subnet: &'static str,
    clients: usize,
) -> impl FnMut(usize) -> Req {
    let mut rng = Rng::new(seed);
    let data = data.clone();
    move |n| data.read(&mut rng, format!("{subnet}.{}", n % clients), None)
}

impl Data {
    /// A read: an issue's detail or a search, both Zipf(1.0).
    fn read(&self, rng: &mut Rng, ip: String, cookie: Option<String>) -> Req {
        let (kind, path) = if rng.unit() < SEARCH_SHARE {
            let term = SEARCH_TERMS[self.terms.sample(rng)];
            (
                Kind::Search,
                format!("/api/issues?q={}", term.replace(' ', "+")),
            )
        } else {
            (
                Kind::Detail,
                format!("/api/issues/{}", self.ids[self.issues.sample(rng)]),
            )
        };
        Req {
            kind,
            method: reqwest::Method::GET,
            path,
            ip,
            cookie,
            body: None,
        }
    }
}

fn constant(ip: String) -> Req {
    Req {
        kind: Kind::Constant,
        method: reqwest::Method::GET,
        path: "/__bench/constant".into(),
        ip,
        cookie: None,
        body: None,
    }
}

async fn load_data(app: &TestApp) -> Data {
    let ids = support::texts(
        &app.sql(
            "SELECT id FROM issues ORDER BY rioter_count DESC, id",
            vec![],
        )
        .await,
    );
    Data {
        issues: Zipf::new(ids.len(), 1.0),
        terms: Zipf::new(SEARCH_TERMS.len(), 1.0),
        ids,
    }
}

/// One step of the highest-rate search.
struct Step {
    rate: f64,
    stats: Stats,
    passed: bool,
    /// CPU time workerd and the primary used during the step.
    cpu: support::Cpu,
    /// How the answers were served: X-Cache and the entry's source.
    cache: CacheMix,
}

/// How a set of reads was served, in counts.
#[derive(Default)]
struct CacheMix {
    hit: usize,
    stale: usize,
    miss: usize,
    memory: usize,
    kv: usize,
    primary: usize,
    /// Answers that read KV before they went out (a tag's generation, an
    /// entry); writes behind the response are not counted.
    read_kv: usize,
}

impl CacheMix {
    fn of(samples: &[Sample]) -> CacheMix {
        let mut m = CacheMix::default();
        for a in samples.iter().map(|s| s.answer).filter(|a| a.status == 200) {
            match a.x_cache {
                Some(XCache::Hit) => m.hit += 1,
                Some(XCache::Stale) => m.stale += 1,
                Some(XCache::Miss) => m.miss += 1,
                None => continue,
            }
            m.read_kv += usize::from(a.kv.is_some());
            match a.from {
                Some(From::Memory) => m.memory += 1,
                Some(From::Kv) => m.kv += 1,
                Some(From::Primary) => m.primary += 1,
                None => {}
            }
        }
        m
    }

    /// `| HIT / STALE / MISS | memory / KV / primary | read KV |` cells, in
    /// percent of the cached reads; dashes for a route that is not cached.
    fn cells(&self) -> String {
        let n = self.hit + self.stale + self.miss;
        if n == 0 {
            return "- | - | -".to_owned();
        }
        let pc = |v: usize| 100.0 * v as f64 / n as f64;
        // Builds before `cache;desc` do not say where an entry came from.
        let sources = if self.memory + self.kv + self.primary == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.0} / {:.0} / {:.0}%",
                pc(self.memory),
                pc(self.kv),
                pc(self.primary)
            )
        };
        format!(
            "{:.0} / {:.0} / {:.0}% | {sources} | {:.0}%",
            pc(self.hit),
            pc(self.stale),
            pc(self.miss),
            pc(self.read_kv)
        )
    }
}

/// Steps the rate up by a quarter from `start` until a step misses p95 <
/// 100 ms, errors < 1% or 95% of the offered rate answered OK.
async fn highest_rate(
    app: &TestApp,
    what: &str,
    start: f64,
    steps: usize,
    step_secs: u64,
    mut next: impl FnMut(usize) -> Req,
) -> Vec<Step> {
    let mut out = Vec::new();
    let mut rate = start;
    for _ in 0..steps {
        eprintln!("  {what}: {rate:.0} requests/s for {step_secs} s ...");
        let cpu_before = support::Cpu::now(app.pids());
        let (samples, secs) =
            open_loop(app, what, rate, Duration::from_secs(step_secs), &mut next).await;
        let cpu = support::Cpu::now(app.pids()).since(cpu_before);
        let stats = Stats::of(&samples, secs);
        let cache = CacheMix::of(&samples);
        let passed = stats.p95 < P95_TARGET_MS
            && stats.error_rate() < 0.01
            && stats.throughput() >= 0.95 * rate;
        eprintln!(
            "    p95 {:.1} ms, {:.0} ok/s, errors {:.2}%: {}",
            stats.p95,
            stats.throughput(),
            stats.error_rate() * 100.0,
            if passed { "sustained" } else { "not sustained" }
        );
        out.push(Step {
            rate,
            stats,
            passed,
            cpu,
            cache,
        });
        if !passed {
            break;
        }
        rate = (rate * 1.25).round();
        settle(app).await;
    }
    out
}

fn best(steps: &[Step]) -> Option<f64> {
    steps.iter().take_while(|s| s.passed).last().map(|s| s.rate)
}

fn describe_best(steps: &[Step]) -> String {
    match (best(steps), steps.last()) {
        (Some(r), Some(last)) if !last.passed => format!("{r:.0} requests/s"),
        (Some(r), _) => format!("at least {r:.0} requests/s (every step passed)"),
        (None, _) => "none of the rates tried".to_owned(),
    }
}

struct Scale {
    quick: bool,
    issues: usize,
    read_secs: u64,
    baseline_secs: u64,
    steps: usize,
    step_secs: u64,
    /// The reads' warm-up before the Zipf mix's rate steps.
    warm_secs: u64,
    mixed_secs: u64,
    abuse_secs: u64,
}

/// The reads scenario's headline figures, for the before/after table.
struct ReadFigures {
    /// The Zipf mix at the fixed rate.
    mix: Stats,
    /// Its cached reads answered HIT or STALE, of those answered.
    hit_ratio: f64,
    bare_best: Option<f64>,
    mix_best: Option<f64>,
}

async fn reads(app: &TestApp, data: &Arc<Data>, s: &Scale) -> (String, ReadFigures) {
    let load_at_start = loadavg();
    settle(app).await;
    eprintln!(
        "reads: baseline, the bare route at {READ_RATE:.0}/s for {} s ...",
        s.baseline_secs
    );
    let (base_samples, base_secs) = open_loop(
        app,
        "bare route",
        READ_RATE,
        Duration::from_secs(s.baseline_secs),
        |n| constant(format!("10.0.0.{}", n % 100)),
    )
    .await;
    let base = Stats::of(&base_samples, base_secs);
    settle(app).await;
    eprintln!(
        "reads: Zipf mix at {READ_RATE:.0}/s for {} s (cold cache) ...",
        s.read_secs
    );
    let (mix, mix_secs) = open_loop(
        app,
        "reads",
        READ_RATE,
        Duration::from_secs(s.read_secs),
        reads_from(data, 9, "10.0.1", 100),
    )
    .await;
    let all = Stats::of(&mix, mix_secs);
    let detail = Stats::of(mix.iter().filter(|m| m.kind == Kind::Detail), mix_secs);
    let search = Stats::of(mix.iter().filter(|m| m.kind == Kind::Search), mix_secs);

    settle(app).await;
    eprintln!("reads: the highest rate with p95 < {P95_TARGET_MS} ms, bare route ...");
    let base_steps = highest_rate(app, "bare route", STEP_START, s.steps, s.step_secs, |n| {
        constant(format!("10.0.2.{}", n % 100))
    })
    .await;
    settle(app).await;
    // By now the entries of the run above are past their fresh TTL: a
    // short run at the first step's rate refreshes them, so the first step
    // is not the refresh wave alone.
    eprintln!(
        "reads: warming the cache again, {STEP_START:.0}/s for {} s (not counted) ...",
        s.warm_secs
    );
    open_loop(
        app,
        "warm-up",
        STEP_START,
        Duration::from_secs(s.warm_secs),
        reads_from(data, 11, "10.0.4", 100),
    )
    .await;
    settle(app).await;
    eprintln!("reads: the highest rate with p95 < {P95_TARGET_MS} ms, Zipf mix ...");
    let mix_steps = highest_rate(
        app,
        "reads",
        STEP_START,
        s.steps,
        s.step_secs,
        reads_from(data, 10, "10.0.3", 100),
    )
    .await;

    let mut t = format!(
        "## Reads: Zipf(1.0) over issues and search terms\n\n\
         Open loop (each request sent at its scheduled time whatever the earlier ones are doing; latency counted \
         from that time), from 100 client IPs in turn, rate limits out of the way (100000/60 s). The mix: {:.0}% \
         `GET /api/issues/:id` drawn Zipf(1.0) over the {} issues (most rioters first), {:.0}% `GET /api/issues?q=` \
         drawn Zipf(1.0) over the {} search terms of the search benchmark; cache fresh TTL 30 s, cold at the start. \
         Baseline: the bare route `/__bench/constant` (the whole pipeline, no data) at the same rate, in the same run.\n\n\
         | scenario | offered | {STATS_HEAD} | p50 / baseline's | p95 / baseline's |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | baseline: bare route, {} s | {READ_RATE:.0}/s | {} | 1.0x | 1.0x |\n",
        (1.0 - SEARCH_SHARE) * 100.0,
        data.ids.len(),
        SEARCH_SHARE * 100.0,
        SEARCH_TERMS.len(),
        s.baseline_secs,
        base.cells(),
    );
    for (name, st) in [
        (format!("Zipf mix, {} s: all", s.read_secs), &all),
        ("of which issue details".to_owned(), &detail),
        ("of which searches".to_owned(), &search),
    ] {
        t += &format!(
            "| {name} | {} | {} | {:.1}x | {:.1}x |\n",
            if name.starts_with("Zipf") {
                format!("{READ_RATE:.0}/s")
            } else {
                "-".to_owned()
            },
            st.cells(),
            st.p50 / base.p50.max(1e-9),
            st.p95 / base.p95.max(1e-9)
        );
    }
    t += &format!(
        "\nWhere the time went at {READ_RATE:.0}/s (`Server-Timing`):\n\n{}",
        time_table(vec![
            ("bare route".into(), base_samples.iter().collect()),
            (
                "issue details".into(),
                mix.iter().filter(|m| m.kind == Kind::Detail).collect(),
            ),
            (
                "searches".into(),
                mix.iter().filter(|m| m.kind == Kind::Search).collect(),
            ),
        ])
    );
    t += &format!(
        "\n**Highest rate with p95 under {P95_TARGET_MS:.0} ms** (steps of {} s, each a quarter above the last, from {STEP_START:.0}/s; \
         a step is sustained when p95 < {P95_TARGET_MS:.0} ms, errors < 1% and at least 95% of the offered rate answered OK; \
         the search stops at the first step that is not; the cache is warm from the run above, and refreshed by {} s of the mix \
         at the first step's rate just before the first step, not counted). *Served*: of the \
         cached reads, `X-Cache` HIT / STALE / MISS and where the entry came from (memory / KV / primary, \
         `Server-Timing: cache;desc=`); *read KV*: the cached reads that waited for Workers KV before they were \
         answered (a tag's generation the isolate did not know, or no log of invalidations read in the last 5 s, or an entry not in memory); *CPU per request*: the user and system CPU time of the `workerd` processes (the \
         Worker, its objects and the local KV) and of the primary during the step, over the requests sent:\n\n\
         | route | offered | {STATS_HEAD} | served: HIT / STALE / MISS | from memory / KV / primary | read KV | CPU per request: workerd / primary | sustained |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        s.step_secs,
        s.warm_secs
    );
    for (name, steps) in [("bare route", &base_steps), ("Zipf mix", &mix_steps)] {
        for st in steps {
            let per = |ms: u64| ms as f64 / st.stats.sent.max(1) as f64;
            t += &format!(
                "| {name} | {:.0}/s | {} | {} | {:.2} / {:.2} ms | {} |\n",
                st.rate,
                st.stats.cells(),
                st.cache.cells(),
                per(st.cpu.workerd),
                per(st.cpu.primary),
                if st.passed { "yes" } else { "no" }
            );
        }
    }
    t += &format!(
        "\nHighest sustained rate: bare route {}, Zipf mix {}",
        describe_best(&base_steps),
        describe_best(&mix_steps)
    );
    match (best(&mix_steps), best(&base_steps)) {
        (Some(m), Some(b)) => t += &format!(" (**{:.2}x** the baseline's).\n", m / b),
        _ => t += ".\n",
    }
    t += &load_note(&load_at_start);
    t += &settle_note();
    if s.quick {
        t += "\n(quick mode: figures only show the code runs)\n";
    }
    let mix_cache = CacheMix::of(&mix);
    let figures = ReadFigures {
        hit_ratio: (mix_cache.hit + mix_cache.stale) as f64
            / (mix_cache.hit + mix_cache.stale + mix_cache.miss).max(1) as f64,
        mix: all,
        bare_best: best(&base_steps),
        mix_best: best(&mix_steps),
    };
    (t, figures)
}

/// The reads scenario's figures for two builds side by side.
fn reads_before_after(label: &str, before: &ReadFigures, after: &ReadFigures) -> String {
    let mut t = format!(
        "## Reads, before and after\n\n\
         The reads scenario above run on the Worker of {label} (*before*, built by that commit's own `cargo xtask \
         build-worker`) and then on this checkout's (*after*), one after the other in one run \
         (`cargo xtask bench --before {label}`), each on a fresh stack with the same data and draws.\n\n\
         | build | Zipf mix at {READ_RATE:.0}/s: p50 | p95 | p99 | answered from the cache (HIT or STALE) | \
         highest sustained: bare route | Zipf mix | Zipf / bare |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let rate = |r: Option<f64>| r.map_or("none".to_owned(), |r| format!("{r:.0}/s"));
    for (build, f) in [("before", before), ("after", after)] {
        t += &format!(
            "| {build} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1}% | {} | {} | {} |\n",
            f.mix.p50,
            f.mix.p95,
            f.mix.p99,
            f.hit_ratio * 100.0,
            rate(f.bare_best),
            rate(f.mix_best),
            match (f.mix_best, f.bare_best) {
                (Some(m), Some(b)) => format!("**{:.2}x**", m / b),
                _ => "-".to_owned(),
            }
        );
    }
    t
}

/// Rows whose count differs from their `user_issues` rows: (issues,
/// issue_organisation).
async fn count_mismatches(app: &TestApp) -> (i64, i64) {
    let rows = app
        .sql(
            "SELECT \
             (SELECT count(*) FROM issues i LEFT JOIN \
               (SELECT issue_id, count(*) AS n FROM user_issues GROUP BY issue_id) c \
               ON c.issue_id = i.id WHERE i.rioter_count != coalesce(c.n, 0)), \
             (SELECT count(*) FROM issue_organisation o LEFT JOIN \
               (SELECT issue_id, organisation_id, count(*) AS n FROM user_issues \
                WHERE organisation_id IS NOT NULL GROUP BY issue_id, organisation_id) c \
               ON c.issue_id = o.issue_id AND c.organisation_id = o.organisation_id \
               WHERE o.rioter_count != coalesce(c.n, 0))",
            vec![],
        )
        .await;
    (int(&rows[0][0]), int(&rows[0][1]))
}

async fn mixed(app: &TestApp, data: &Arc<Data>, s: &Scale) -> String {
    let load_at_start = loadavg();
    settle(app).await;
    let before = count_mismatches(app).await;
    eprintln!(
        "mixed: {USERS} users for {} s (counts off before: {} issues, {} issue-organisation rows) ...",
        s.mixed_secs, before.0, before.1
    );
    let started = Instant::now();
    let end = started + Duration::from_secs(s.mixed_secs);
    let users: Vec<_> = (0..USERS)
        .map(|u| {
            let (http, base, data) = (app.http.clone(), app.url.clone(), data.clone());
            tokio::spawn(async move {
                let mut rng = Rng::new(1000 + u as u64);
                let ip = format!("10.1.0.{u}");
                let mut cookie: Option<String> = None;
                let mut joined = HashSet::new();
                let mut samples = Vec::new();
                let mut n = 0;
                while Instant::now() < end {
                    n += 1;
                    let roll = rng.unit();
                    let req = if roll < 0.80 {
                        data.read(&mut rng, ip.clone(), cookie.clone())
                    } else {
                        let i = data.issues.sample(&mut rng);
                        let id = &data.ids[i];
                        let (kind, method, path, body) = if roll >= 0.95 {
                            (
                                Kind::Post,
                                reqwest::Method::POST,
                                format!("/api/issues/{id}/feed"),
                                Some(serde_json::json!({
                                    "content": format!("load test: post {n} of user {u}")
                                })),
                            )
                        } else if joined.contains(&i) {
                            (
                                Kind::Leave,
                                reqwest::Method::DELETE,
                                format!("/api/issues/{id}/join"),
                                None,
                            )
                        } else {
                            (
                                Kind::Join,
                                reqwest::Method::POST,
                                format!("/api/issues/{id}/join"),
                                None,
                            )
                        };
                        if kind != Kind::Post {
                            // Toggle the intent; a failed write is retried
                            // the other way next time, which is fine.
                            if kind == Kind::Join {
                                joined.insert(i);
                            } else {
                                joined.remove(&i);
                            }
                        }
                        Req {
                            kind,
                            method,
                            path,
                            ip: ip.clone(),
                            cookie: cookie.clone(),
                            body,
                        }
                    };
                    let kind = req.kind;
                    let t = Instant::now();
                    let (answer, set) = send(&http, &base, req).await;
                    if set.is_some() {
                        cookie = set;
                    }
                    samples.push(Sample {
                        kind,
                        latency: t.elapsed(),
                        answer,
                    });
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for u in users {
        match u.await {
            Ok(s) => samples.extend(s),
            Err(e) => eprintln!("  mixed: a user task failed: {e}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "mixed: {} requests in {secs:.1} s; waiting for the counters' flush ...",
        samples.len()
    );
    let flush_started = Instant::now();
    let mut after = count_mismatches(app).await;
    while after.0 + after.1 > before.0 + before.1
        && flush_started.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = count_mismatches(app).await;
    }
    let waited = flush_started.elapsed().as_secs_f64();

    let all = Stats::of(&samples, secs);
    let by = |k: &[Kind]| Stats::of(samples.iter().filter(|x| k.contains(&x.kind)), secs);
    let p95_pass = all.p95 < 1200.0;
    let err_pass = all.error_rate() < 0.01;
    let mut t = format!(
        "## Mixed: {USERS} users reading and writing\n\n\
         {USERS} users in closed loops (each sends its next request when the last is answered, no think time), each \
         with its own client IP and cookie session (its first write starts it), for {} s: 80% reads (the reads \
         scenario's mix), 15% join or leave (a Zipf(1.0) issue; leave when the user joined it in this run), 5% posts \
         (`POST /api/issues/:id/feed`). Rate limits out of the way (100000/60 s).\n\n\
         | class | {STATS_HEAD} |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        s.mixed_secs
    );
    for (name, st) in [
        ("all", &all),
        (
            "reads (detail and search)",
            &by(&[Kind::Detail, Kind::Search]),
        ),
        ("join and leave", &by(&[Kind::Join, Kind::Leave])),
        ("posts", &by(&[Kind::Post])),
    ] {
        t += &format!("| {name} | {} |\n", st.cells());
    }
    let of = |k: &[Kind]| samples.iter().filter(|x| k.contains(&x.kind)).collect();
    t += &format!(
        "\nWhere the time went (`Server-Timing`):\n\n{}",
        time_table(vec![
            ("reads".into(), of(&[Kind::Detail, Kind::Search])),
            ("join and leave".into(), of(&[Kind::Join, Kind::Leave])),
            ("posts".into(), of(&[Kind::Post])),
        ])
    );
    t += &format!(
        "\nThresholds: p95 under 1.2 s: **{}** ({:.1} ms); errors under 1%: **{}** ({:.2}%).\n\n\
         Counts after the run (polled every 0.5 s, up to 15 s, for the counter objects' flush; waited {waited:.1} s): \
         `issues.rioter_count` different from the issue's `user_issues` rows: **{}** of {} issues ({} before the run); \
         `issue_organisation.rioter_count` different from its rows: **{}** ({} before).\n",
        if p95_pass { "pass" } else { "fail" },
        all.p95,
        if err_pass { "pass" } else { "fail" },
        all.error_rate() * 100.0,
        after.0,
        data.ids.len(),
        before.0,
        after.1,
        before.1,
    );
    t += &load_note(&load_at_start);
    t += &settle_note();
    if s.quick {
        t += "\n(quick mode: figures only show the code runs)\n";
    }
    t
}

/// The flooder: `FLOOD_CONNECTIONS` closed loops of joins, leaves and
/// posts from one client IP and one session, until `end`.
async fn flood(app: &TestApp, data: &Arc<Data>, end: Instant) -> Vec<Sample> {
    let ip = "10.9.9.9".to_owned();
    // Its session: the first write.
    let t = Instant::now();
    let (answer, cookie) = send(
        &app.http,
        &app.url,
        Req {
            kind: Kind::Join,
            method: reqwest::Method::POST,
            path: format!("/api/issues/{}/join", data.ids[0]),
            ip: ip.clone(),
            cookie: None,
            body: None,
        },
    )
    .await;
    let mut samples = vec![Sample {
        kind: Kind::Join,
        latency: t.elapsed(),
        answer,
    }];
    let tasks: Vec<_> = (0..FLOOD_CONNECTIONS)
        .map(|c| {
            let (http, base, data) = (app.http.clone(), app.url.clone(), data.clone());
            let (ip, cookie) = (ip.clone(), cookie.clone());
            tokio::spawn(async move {
                let mut rng = Rng::new(500 + c as u64);
                let mut out = Vec::new();
                let mut n = 0usize;
                while Instant::now() < end {
                    n += 1;
                    let id = &data.ids[data.issues.sample(&mut rng)];
                    let (kind, method, path, body) = match n % 3 {
                        0 => (
                            Kind::Join,
                            reqwest::Method::POST,
                            format!("/api/issues/{id}/join"),
                            None,
                        ),
                        1 => (
                            Kind::Leave,
                            reqwest::Method::DELETE,
                            format!("/api/issues/{id}/join"),
                            None,
                        ),
                        _ => (
                            Kind::Post,
                            reqwest::Method::POST,
                            format!("/api/issues/{id}/feed"),
                            Some(serde_json::json!({"content": format!("flood {c}/{n}")})),
                        ),
                    };
                    let t = Instant::now();
                    let (answer, _) = send(
                        &http,
                        &base,
                        Req {
                            kind,
                            method,
                            path,
                            ip: ip.clone(),
                            cookie: cookie.clone(),
                            body,
                        },
                    )
                    .await;
                    out.push(Sample {
                        kind,
                        latency: t.elapsed(),
                        answer,
                    });
                }
                out
            })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(s) => samples.extend(s),
            Err(e) => eprintln!("  abuse: a flooder task failed: {e}"),
        }
    }
    samples
}

async fn abuse(app: &TestApp, data: &Arc<Data>, s: &Scale) -> String {
    let load_at_start = loadavg();
    let dur = Duration::from_secs(s.abuse_secs);
    let rate = BROWSERS as f64 * BROWSER_RATE;
    settle(app).await;
    eprintln!(
        "abuse: {BROWSERS} browsers alone for {} s ...",
        s.abuse_secs
    );
    let (alone_samples, alone_secs) = open_loop(
        app,
        "browsers alone",
        rate,
        dur,
        reads_from(data, 20, "10.2.0", BROWSERS),
    )
    .await;
    let alone = Stats::of(&alone_samples, alone_secs);
    settle(app).await;
    eprintln!(
        "abuse: {BROWSERS} browsers and one flooder for {} s ...",
        s.abuse_secs
    );
    let flood_started = Instant::now();
    let end = flood_started + dur;
    let (browsers, flooded) = tokio::join!(
        open_loop(
            app,
            "browsers with the flooder",
            rate,
            dur,
            reads_from(data, 21, "10.3.0", BROWSERS),
        ),
        flood(app, data, end),
    );
    let flood_secs = flood_started.elapsed().as_secs_f64();
    let (browsers, browsers_secs) = browsers;
    let times = time_table(vec![
        ("browsers alone".into(), alone_samples.iter().collect()),
        (
            "browsers with the flooder".into(),
            browsers.iter().collect(),
        ),
        (
            "the flooder's accepted writes".into(),
            flooded.iter().filter(|f| f.ok()).collect(),
        ),
        (
            "the flooder's refused writes (429)".into(),
            flooded.iter().filter(|f| f.answer.status == 429).collect(),
        ),
    ]);
    let with = Stats::of(&browsers, browsers_secs);
    let fl = Stats::of(&flooded, flood_secs);
    let allowed = WRITE_LIMIT + (flood_secs / (WRITE_WINDOW_SECS / WRITE_LIMIT)).floor();
    let other_errors = fl.errors - fl.limited;
    let held = fl.ok as f64 <= allowed;
    let ratio = with.p95 / alone.p95.max(1e-9);
    let mut t = format!(
        "## Abuse: one client flooding writes while {BROWSERS} browse\n\n\
         Default (production) rate limits `{PRODUCTION_LIMITS}`, each client its own IP. {BROWSERS} browsers each read \
         {BROWSER_RATE} times a second (open loop, {rate:.0}/s in all; the reads scenario's mix; under the reads limit of \
         120 a minute), first alone for {} s, then for {} s while one client (one IP, one session) sends joins, leaves \
         and posts as fast as {FLOOD_CONNECTIONS} connections carry them. The writes limit (30 a minute, GCRA: a burst \
         of 30, then one every 2 s) lets the flooder through at most 30 + its seconds / 2 times. \
         Stated bound: the browsers see no 429, and their p95 with the flooder is at most {P95_BOUND:.0}x their p95 alone.\n\n\
         | client | {STATS_HEAD} | 429s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | browsers alone | {} | {} |\n| browsers with the flooder | {} | {} |\n\
         | the flooder ({:.0} requests/s sent) | {} | {} |\n\n",
        s.abuse_secs,
        s.abuse_secs,
        alone.cells(),
        alone.limited,
        with.cells(),
        with.limited,
        fl.sent as f64 / flood_secs,
        fl.cells(),
        fl.limited,
    );
    t += &format!(
        "Flooder held to its limit: **{}** ({} accepted in {flood_secs:.1} s, at most {allowed:.0} allowed; {} refused \
         with 429, {} other errors). Browsers' 429s: **{}** alone, **{}** with the flooder. Browsers' p95 with the \
         flooder: {:.1} ms against {:.1} ms alone (**{ratio:.2}x**; bound {P95_BOUND:.0}x: **{}**).\n",
        if held { "yes" } else { "no" },
        fl.ok,
        fl.limited,
        other_errors,
        alone.limited,
        with.limited,
        with.p95,
        alone.p95,
        if ratio <= P95_BOUND && with.limited == 0 {
            "within"
        } else {
            "exceeded"
        },
    );
    t += &format!("\nWhere the time went (`Server-Timing`):\n\n{times}");
    t += &load_note(&load_at_start);
    t += &settle_note();
    if s.quick {
        t += "\n(quick mode: figures only show the code runs)\n";
    }
    t
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A line with the load averages at the scenario's start and end (work
/// outside the benchmark on the same cores shows there).
fn load_note(at_start: &str) -> String {
    format!(
        "\nLoad average (1, 5, 15 min) at the scenario's start: {at_start}; at its end: {}.\n",
        loadavg()
    )
}

/// Cores, memory, OS and the versions the figures came from.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("unknown".to_owned(), |kb| {
            format!("{:.1} GiB", kb / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let npm = |pkg: &str| {
        std::fs::read_to_string(common::root().join(format!("node_modules/{pkg}/package.json")))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(common::root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    format!(
        "## Machine and versions (the load scenarios)\n\n\
         {cores} cores ({cpu}), {mem} memory, {} {}; rustc {}; wrangler {}, workerd {}; commit {}. \
         The load generator, workerd and the primary share these cores. Primary: `{}`.\n",
        std::env::consts::OS,
        std::env::consts::ARCH,
        out("rustc", &["--version"])
            .trim_start_matches("rustc ")
            .to_owned(),
        npm("wrangler"),
        npm("workerd"),
        out("git", &["rev-parse", "--short", "HEAD"]),
        std::env::var("QR_PRIMARY_BIN")
            .ok()
            .map(|p| {
                let p = std::path::PathBuf::from(p);
                p.strip_prefix(common::root())
                    .unwrap_or(&p)
                    .display()
                    .to_string()
            })
            .unwrap_or_else(|| "target/debug/qr-primary".to_owned()),
    )
}

#[tokio::main]
async fn main() {
    let args = support::args();
    let s = if args.quick {
        Scale {
            quick: true,
            issues: 1_000,
            read_secs: 3,
            baseline_secs: 2,
            steps: 2,
            step_secs: 1,
            warm_secs: 1,
            mixed_secs: 3,
            abuse_secs: 2,
        }
    } else {
        Scale {
            quick: false,
            issues: 10_000,
            read_secs: 60,
            baseline_secs: 30,
            steps: 12,
            step_secs: 8,
            warm_secs: 15,
            mixed_secs: 60,
            abuse_secs: 20,
        }
    };
    let write = args.write.as_deref();

    // The build to compare with goes first, on a stack of its own.
    let before = match support::before() {
        Some(b) => {
            eprintln!(
                "starting the stack with {} synthetic issues and the bundle of {} ...",
                s.issues, b.label
            );
            let app = TestApp::builder()
                .seed(Seed::Synthetic { issues: s.issues })
                .cache_fresh_secs(30)
                .bundle(b.build.clone())
                .var("RATE_LIMITS", support::Before::RATE_LIMITS)
                .start()
                .await;
            let data = Arc::new(load_data(&app).await);
            let (_, figures) = reads(&app, &data, &s).await;
            drop(app);
            Some((b.label, figures))
        }
        None => None,
    };

    support::publish("load-machine", &machine(), write);

    eprintln!(
        "starting the stack with {} synthetic issues (rate limits out of the way) ...",
        s.issues
    );
    let app = TestApp::builder()
        .seed(Seed::Synthetic { issues: s.issues })
        .cache_fresh_secs(30)
        .start()
        .await;
    let data = Arc::new(load_data(&app).await);
    let (section, after) = reads(&app, &data, &s).await;
    support::publish("load-reads", &section, write);
    if let Some((label, before)) = &before {
        support::publish(
            "load-reads-before-after",
            &reads_before_after(label, before, &after),
            write,
        );
    }
    let section = mixed(&app, &data, &s).await;
    support::publish("load-mixed", &section, write);
    drop(app);

    eprintln!(
        "starting the stack with {} synthetic issues and the production rate limits ...",
        s.issues
    );
    let app = TestApp::builder()
        .seed(Seed::Synthetic { issues: s.issues })
        .cache_fresh_secs(30)
        .var("RATE_LIMITS", PRODUCTION_LIMITS)
        .start()
        .await;
    let data = Arc::new(load_data(&app).await);
    let section = abuse(&app, &data, &s).await;
    support::publish("load-abuse", &section, write);
    drop(app);
}
