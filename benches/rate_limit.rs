//! The rate limiter's added latency: a cached `GET /api/issues/:id` and a
//! join, each with the limiter (the default policies) and without it
//! (`/__bench/no-limit/...`, development only), interleaved one request at
//! a time in the same run. Client IPs change before a policy would refuse
//! (every 100 reads, every 25 writes), so every limited request is
//! admitted and pays what an admitted request pays: a read spends the
//! isolate's reserved block and asks the RateLimiter object for a new one
//! every 12 reads (a tenth of 120); a write asks the object every time.
//! `--quick`: a few dozen requests.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use common::{TestApp, CLIENT_IP_HEADER};
use reqwest::Method;

/// The defaults (src/domain/rate_limit.rs), spelled out so the test harness's
/// generous limits do not apply.
const POLICIES: &str = "reads=120/60,writes=30/60,create=20/60";
const READS_PER_IP: usize = 100;
const WRITES_PER_IP: usize = 25;

#[derive(Default)]
struct Cell {
    latencies: Vec<Duration>,
    errors: usize,
}

async fn timed(app: &TestApp, method: Method, path: &str, ip: &str, cell: &mut Cell) {
    let started = Instant::now();
    match app
        .request(method, path)
        .header(CLIENT_IP_HEADER, ip)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
            cell.latencies.push(started.elapsed());
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
    let (reads, writes) = if args.quick { (40, 20) } else { (600, 150) };

    eprintln!("starting the stack (rate limits {POLICIES}) ...");
    let app = TestApp::builder()
        .cache_fresh_secs(30)
        .var("RATE_LIMITS", POLICIES)
        .start()
        .await;
    let ids = support::texts(&app.sql("SELECT id FROM issues ORDER BY id", vec![]).await);
    let hot = ids.first().expect("an issue").clone();
    let issue = app.fresh_issue("rate limit benchmark").await;
    let sides = ["", "/__bench/no-limit"];
    // Warm up: the cache entry, the objects, the code paths.
    for prefix in sides {
        for n in 0..3 {
            let ip = format!("192.0.2.{n}");
            timed(
                &app,
                Method::GET,
                &format!("{prefix}/api/issues/{hot}"),
                &ip,
                &mut Cell::default(),
            )
            .await;
            timed(
                &app,
                Method::POST,
                &format!("{prefix}/api/issues/{issue}/join"),
                &ip,
                &mut Cell::default(),
            )
            .await;
        }
    }

    let mut read_cells: [Cell; 2] = Default::default();
    eprintln!("cached reads: {reads} per side ...");
    for n in 0..reads {
        if n % 100 == 0 && n > 0 {
            eprintln!("  {n}/{reads}");
        }
        let ip = format!(
            "10.1.{}.{}",
            n / READS_PER_IP / 250,
            (n / READS_PER_IP) % 250
        );
        for (side, prefix) in sides.iter().enumerate() {
            let path = format!("{prefix}/api/issues/{hot}");
            timed(&app, Method::GET, &path, &ip, &mut read_cells[side]).await;
        }
    }
    let mut write_cells: [Cell; 2] = Default::default();
    eprintln!("joins (a new visitor each): {writes} per side ...");
    for n in 0..writes {
        if n % 50 == 0 && n > 0 {
            eprintln!("  {n}/{writes}");
        }
        let ip = format!(
            "10.2.{}.{}",
            n / WRITES_PER_IP / 250,
            (n / WRITES_PER_IP) % 250
        );
        for (side, prefix) in sides.iter().enumerate() {
            let path = format!("{prefix}/api/issues/{issue}/join");
            timed(&app, Method::POST, &path, &ip, &mut write_cells[side]).await;
        }
    }

    let mut table = String::from(
        "| request | limiter | requests | p50 | p95 | p99 | errors |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let mut added = Vec::new();
    for (name, cells) in [
        ("cached `GET /api/issues/:id`", &read_cells),
        ("join (`POST /api/issues/:id/join`)", &write_cells),
    ] {
        for (cell, limiter) in cells.iter().zip(["on", "off"]) {
            table.push_str(&format!(
                "| {name} | {limiter} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {} |\n",
                cell.latencies.len(),
                support::pct_ms(&cell.latencies, 0.5),
                support::pct_ms(&cell.latencies, 0.95),
                support::pct_ms(&cell.latencies, 0.99),
                cell.errors
            ));
        }
        let [on, off] = cells;
        added.push(format!(
            "{name}: p50 {:+.2} ms, p95 {:+.2} ms",
            support::pct_ms(&on.latencies, 0.5) - support::pct_ms(&off.latencies, 0.5),
            support::pct_ms(&on.latencies, 0.95) - support::pct_ms(&off.latencies, 0.95),
        ));
    }
    let body = format!(
        "## Rate limiter: added latency\n\n\
         `wrangler dev` with the local primary (no added delay) and the default policies (`{POLICIES}`). One request \
         at a time, limiter on and off interleaved (off: the development-only `/__bench/no-limit/...` switch); \
         {reads} cached reads of one issue per side (a new client IP every {READS_PER_IP}, so reads reserve a block \
         of 12 from the RateLimiter object every 12th read), {writes} joins of one issue per side, each by a new \
         visitor (a new client IP every {WRITES_PER_IP}; each write asks the object). Command: `cargo xtask bench`.\n\n\
         {table}\nAdded by the limiter: {}.\n",
        added.join("; ")
    );
    support::publish("rate-limit", &body, args.write.as_deref());
    drop(app);
}
