//! Issue 11: what one pipeline per call saves when the primary is far away.
//! The primary holds every Hrana request 100 ms (`--delay-ms 100`, standing
//! for the distance from an edge location to the primary's region). Cache
//! misses of issue detail and search, and joins, each sent two ways in the
//! same run, interleaved:
//!
//! - after: the Worker as it is, every statement of a call in one
//!   `/v3/pipeline` request;
//! - before: the same statements sent the way the `libsql` wasm client
//!   sends them (`/__bench/per-statement/...`, development only; see
//!   `src/bench/client_pattern.rs`): a describe and then the statement per
//!   statement, one request each, one after another.
//!
//! Every read is of a key not read before (distinct issues, distinct
//! searches), so each is a cache miss (`X-Cache: MISS` is checked and
//! counted); every join is a new visitor joining an issue no one joined in
//! the run. Requests go one at a time. `--quick`: a few per cell.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{Seed, TestApp};
use reqwest::Method;

const DELAY_MS: u64 = 100;
const TOPICS: [&str; 10] = [
    "potholes",
    "rail delays",
    "flooding",
    "broadband",
    "sewage",
    "litter",
    "energy bills",
    "cycle lanes",
    "recycling",
    "graffiti",
];
const PLACES: [&str; 12] = [
    "leeds",
    "bristol",
    "glasgow",
    "cardiff",
    "belfast",
    "norwich",
    "brighton",
    "sheffield",
    "york",
    "plymouth",
    "dundee",
    "swansea",
];

#[derive(Default)]
struct Cell {
    latencies: Vec<Duration>,
    round_trips: Vec<u64>,
    misses: usize,
    errors: usize,
}

impl Cell {
    fn trips(&self) -> String {
        let mut t = self.round_trips.clone();
        t.sort_unstable();
        match (t.first(), t.last()) {
            (Some(a), Some(b)) if a == b => a.to_string(),
            (Some(a), Some(b)) => format!("{a}-{b}"),
            _ => "-".into(),
        }
    }
}

/// One call: its latency, X-Cache, and the round trips the primary counted.
async fn call(app: &TestApp, method: Method, path: &str, rid: &str, cell: &mut Cell) {
    let started = Instant::now();
    let sent = app
        .request(method, path)
        .header("X-Request-Id", rid)
        .send()
        .await;
    let elapsed = started.elapsed();
    match sent {
        Ok(r) if r.status().is_success() => {
            if r.headers().get("x-cache").is_some_and(|v| v == "MISS") {
                cell.misses += 1;
            }
            let _ = r.bytes().await;
            cell.latencies.push(elapsed);
            cell.round_trips.push(app.round_trips(rid).await);
        }
        Ok(r) => {
            eprintln!("  {path}: {}", r.status());
            cell.errors += 1;
        }
        Err(e) => {
            eprintln!("  {path}: {e}");
            cell.errors += 1;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = support::args();
    let per_cell = if args.quick { 4 } else { 40 };
    let issues = if args.quick { 200 } else { 2_000 };

    eprintln!("starting the stack with {issues} synthetic issues ...");
    let mut app = TestApp::start_seeded(Seed::Synthetic { issues }, 30).await;
    let ids = support::texts(&app.sql("SELECT id FROM issues ORDER BY id", vec![]).await);
    // Ids for details and joins, never used twice; one warm-up of each.
    let needed = 4 * (per_cell + 1);
    assert!(ids.len() >= needed, "need {needed} issues");
    eprintln!("restarting the primary with --delay-ms {DELAY_MS} ...");
    app.restart_primary_with(&["--delay-ms", &DELAY_MS.to_string()]);

    let sides = ["", "/__bench/per-statement"];
    let mut cells: Vec<[Cell; 2]> = (0..3).map(|_| Default::default()).collect();
    let mut next_id = ids.iter();
    for i in 0..=per_cell {
        let warm_up = i == 0;
        if !warm_up {
            eprintln!("round {i}/{per_cell} ...");
        }
        for (side, prefix) in sides.iter().enumerate() {
            let mut scratch = Cell::default();
            let k = 2 * i + side;
            let detail = format!("{prefix}/api/issues/{}", next_id.next().expect("an id"));
            let search = format!(
                "{prefix}/api/issues?q={}+{}",
                TOPICS[k % TOPICS.len()],
                PLACES[(k / TOPICS.len()) % PLACES.len()]
            );
            let join = format!(
                "{prefix}/api/issues/{}/join",
                next_id.next().expect("an id")
            );
            let calls = [
                (Method::GET, detail),
                (Method::GET, search),
                (Method::POST, join),
            ];
            for (c, (method, path)) in calls.into_iter().enumerate() {
                let rid = format!("rt-{i}-{side}-{c}");
                let cell = if warm_up {
                    &mut scratch
                } else {
                    &mut cells[c][side]
                };
                call(&app, method, &path, &rid, cell).await;
            }
        }
    }

    let names = [
        "issue detail (`GET /api/issues/:id`), cache miss",
        "search (`GET /api/issues?q=`), cache miss",
        "join (`POST /api/issues/:id/join`)",
    ];
    let mut table = String::from(
        "| call | round trips after | round trips before | p50 after | p50 before | p95 after | p95 before | before / after (p50) | misses after / before | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, [after, before]) in names.iter().zip(&cells) {
        let (a50, b50) = (
            support::pct_ms(&after.latencies, 0.5),
            support::pct_ms(&before.latencies, 0.5),
        );
        let misses = if name.starts_with("join") {
            "-".to_owned()
        } else {
            format!(
                "{}/{} / {}/{}",
                after.misses,
                after.latencies.len(),
                before.misses,
                before.latencies.len()
            )
        };
        table.push_str(&format!(
            "| {name} | {} | {} | {a50:.0} ms | {b50:.0} ms | {:.0} ms | {:.0} ms | **{:.1}x** | {misses} | {} |\n",
            after.trips(),
            before.trips(),
            support::pct_ms(&after.latencies, 0.95),
            support::pct_ms(&before.latencies, 0.95),
            b50 / a50.max(f64::MIN_POSITIVE),
            after.errors + before.errors,
        ));
    }
    let body = format!(
        "## Round trips: one pipeline per call against the libsql client's pattern\n\n\
         The primary holds every Hrana request {DELAY_MS} ms (`qr-primary serve --delay-ms {DELAY_MS}`), standing for \
         the distance from an edge location to the primary. `wrangler dev` with {issues} synthetic issues; {per_cell} \
         calls per cell, one at a time, before and after interleaved, after one warm-up call of each. *After*: the \
         Worker as it is, all of a call's statements in one `/v3/pipeline` request. *Before*: the same statements \
         sent the way the `libsql` wasm client (0.10, feature `cloudflare`) sends them, through the development-only \
         `/__bench/per-statement/...` switch: per statement a `describe` request and then the statement (reads \
         through `/v3/cursor`; in a transaction `BEGIN`, then describe + execute per statement, then `COMMIT`), one \
         after another. The switch rebuilds the wasm client's request sequence over Hrana (read from its \
         source; `src/bench/client_pattern.rs`) rather than running the client itself; the read pattern is checked \
         against the client's native remote connection, which shares that code (`primary/tests/libsql_client.rs`), \
         while the describe before each statement of a transaction is the wasm client's own (its native connection \
         executes without one). Round trips are the primary's count \
         of Hrana requests carrying the call's request id. Every read is of a key not read before, so a cache miss; \
         every join is a new visitor on an issue no one joined in the run (the issue's counter object also takes \
         its first count in the same transaction). Command: `cargo xtask bench`.\n\n{table}"
    );
    support::publish("round-trips", &body, args.write.as_deref());
    drop(app);
}
