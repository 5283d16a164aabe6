//! What one pipeline per call saves when the primary is far away.
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
//!   statement, one request each, one after another;
//! - and the reads once more through the client itself
//!   (`/__bench/libsql-client/...`), after the rest.
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
const PLACES: [&str; 24] = [
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
    "derby",
    "exeter",
    "hull",
    "bath",
    "oxford",
    "cambridge",
    "leicester",
    "aberdeen",
    "inverness",
    "carlisle",
    "truro",
    "lincoln",
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
/// Hrana requests the primary has served in all.
async fn served(app: &TestApp) -> u64 {
    app.primary_stats().await["hrana_requests"]["total"]
        .as_u64()
        .unwrap_or_default()
}

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
    let mut app = TestApp::builder()
        .seed(Seed::Synthetic { issues })
        .cache_fresh_secs(30)
        .start()
        .await;
    let ids = support::texts(&app.sql("SELECT id FROM issues ORDER BY id", vec![]).await);
    // Ids for details and joins, never used twice; one warm-up of each.
    // Searches: topic x place, 240 distinct.
    let needed = 5 * (per_cell + 1);
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

    // The client itself sends no request id, so its round trips are the
    // primary's total count around each call: reads only, after the joins'
    // counter flushes are done, so nothing else reaches the primary.
    eprintln!("reads through the libsql client itself ...");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client_cells: [Cell; 2] = Default::default();
    for i in 0..=per_cell {
        let k = 2 * (per_cell + 1) + i;
        let detail = format!(
            "/__bench/libsql-client/api/issues/{}",
            next_id.next().expect("an id")
        );
        let search = format!(
            "/__bench/libsql-client/api/issues?q={}+{}",
            TOPICS[k % TOPICS.len()],
            PLACES[(k / TOPICS.len()) % PLACES.len()]
        );
        for (c, path) in [detail, search].into_iter().enumerate() {
            let before = served(&app).await;
            let mut scratch = Cell::default();
            let cell = if i == 0 {
                &mut scratch
            } else {
                &mut client_cells[c]
            };
            call(
                &app,
                Method::GET,
                &path,
                &format!("rt-client-{i}-{c}"),
                cell,
            )
            .await;
            if let Some(trips) = cell.round_trips.last_mut() {
                *trips = served(&app).await - before;
            }
        }
    }

    let names = [
        "issue detail (`GET /api/issues/:id`), cache miss",
        "search (`GET /api/issues?q=`), cache miss",
        "join (`POST /api/issues/:id/join`)",
    ];
    let ways = [
        "after: one pipeline",
        "before: the client's pattern, rebuilt",
        "before: the libsql client itself",
    ];
    let mut table = String::from(
        "| call | how | round trips | p50 | p95 | p50 / after's p50 | cache misses | errors |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut ratios = Vec::new();
    for (c, name) in names.iter().enumerate() {
        let [after, before] = &cells[c];
        let after50 = support::pct_ms(&after.latencies, 0.5);
        let mut rows: Vec<(&str, &Cell)> = vec![(ways[0], after), (ways[1], before)];
        if let Some(client) = client_cells.get(c) {
            rows.push((ways[2], client));
        }
        for (way, cell) in rows {
            let p50 = support::pct_ms(&cell.latencies, 0.5);
            let misses = if c == 2 {
                "-".to_owned()
            } else {
                format!("{}/{}", cell.misses, cell.latencies.len())
            };
            table.push_str(&format!(
                "| {name} | {way} | {} | {p50:.0} ms | {:.0} ms | {:.1}x | {misses} | {} |\n",
                cell.trips(),
                support::pct_ms(&cell.latencies, 0.95),
                p50 / after50.max(f64::MIN_POSITIVE),
                cell.errors,
            ));
        }
        ratios.push(format!(
            "{}: **{:.1}x**",
            name.split(" (").next().unwrap_or(name),
            support::pct_ms(&before.latencies, 0.5) / after50.max(f64::MIN_POSITIVE)
        ));
    }
    let body = format!(
        "## Round trips: one pipeline per call against the libsql client's pattern\n\n\
         The primary holds every Hrana request {DELAY_MS} ms (`qr-primary serve --delay-ms {DELAY_MS}`), standing for \
         the distance from an edge location to the primary. `wrangler dev` with {issues} synthetic issues; {per_cell} \
         calls per row, one at a time, after one warm-up call of each. *After*: the Worker as it is, all of a call's \
         statements in one `/v3/pipeline` request. *Before, rebuilt*: the same statements sent the way the `libsql` \
         wasm client (0.10, feature `cloudflare`) sends them, through the development-only \
         `/__bench/per-statement/...` switch (`src/bench/client_pattern.rs`, from the client's source): per statement \
         a `describe` request and then the statement (reads through `/v3/cursor`; in a transaction `BEGIN`, then \
         describe + execute per statement, then `COMMIT`), one after another; interleaved with *after*. *Before, the \
         client itself*: reads through `libsql::wasm::Connection` in the Worker (`/__bench/libsql-client/...`), run \
         after the interleaved rounds; it sends no request id, so its round trips are the primary's total count \
         around each call, with nothing else running. (Joins through the client itself are not measured: its \
         transaction requests are what the rebuilt pattern sends.) Other round trips are the primary's count of \
         Hrana requests carrying the call's request id. Every read is of a key not read before, so a cache miss; \
         every join is a new visitor on an issue no one joined in the run (the issue's counter object also takes \
         its first count in the same transaction). Command: `cargo xtask bench`.\n\n{table}\n\
         Before (rebuilt) against after, p50: {}.\n",
        ratios.join(", ")
    );
    support::publish("round-trips", &body, args.write.as_deref());
    drop(app);
}
