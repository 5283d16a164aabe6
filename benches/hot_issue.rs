//! A hot issue under about 200 joins a second. The IssueCounter
//! object's path (group commit, counts flushed at most once a second)
//! against the seed's `UPDATE issues SET rioter_count = rioter_count + 1`
//! in every join's transaction (`/__bench/counter-update/...`, development
//! only). Each side is an open-loop run on its own fresh issue: a join is
//! sent every 1/RATE s whatever the earlier ones are doing, each by a new
//! visitor (no cookie, so a new user and session), from 100 client IPs in
//! turn. Then the flush is awaited and each issue's `rioter_count` is
//! compared with its `user_issues` rows. The primary counts the
//! `UPDATE issues SET rioter_count ...` statements it runs (`GET /stats`).
//! `--quick`: 1.5 s per side. `--rate N` (1 to 1000) joins a second
//! instead of 200, to probe other loads (printed, not written).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{int, TestApp, CLIENT_IP_HEADER};
use qr_primary::client::text;

const DEFAULT_RATE: f64 = 200.0;
const CLIENT_IPS: usize = 100;

struct Side {
    name: &'static str,
    run: Run,
    counter_updates: u64,
    rioter_count: i64,
    members: i64,
}

async fn counter_updates(app: &TestApp) -> u64 {
    app.primary_stats().await["counter_updates"]
        .as_u64()
        .unwrap_or_else(|| panic!("the primary's /stats has no counter_updates"))
}

async fn counts(app: &TestApp, issue: &str) -> (i64, i64) {
    let rows = app
        .sql(
            "SELECT (SELECT rioter_count FROM issues WHERE id = ?1), \
             (SELECT count(*) FROM user_issues WHERE issue_id = ?1)",
            vec![text(issue)],
        )
        .await;
    (int(&rows[0][0]), int(&rows[0][1]))
}

/// Joins `path` at `rate` a second for `duration`, open loop.
async fn run(app: &TestApp, path: &str, rate: f64, duration: Duration) -> Run {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut last_report = 0;
    for n in 0..total {
        let at = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let secs = started.elapsed().as_secs();
        if secs > last_report {
            last_report = secs;
            eprintln!(
                "  {secs} s: {n} sent, {} answered",
                done.load(Ordering::Relaxed)
            );
        }
        let request = app
            .request(reqwest::Method::POST, path)
            .header(CLIENT_IP_HEADER, format!("10.0.0.{}", n % CLIENT_IPS));
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let mut do_ms = None;
            let answer = match request.send().await {
                Ok(r) if r.status().is_success() => {
                    do_ms = r
                        .headers()
                        .get("server-timing")
                        .and_then(|v| v.to_str().ok())
                        .and_then(durable_object_ms);
                    r.json::<serde_json::Value>()
                        .await
                        .ok()
                        .map(|b| b["changed"] == true)
                }
                Ok(r) => {
                    eprintln!("  join: {}", r.status());
                    None
                }
                Err(e) => {
                    eprintln!("  join: {e}");
                    None
                }
            };
            done.fetch_add(1, Ordering::Relaxed);
            (t.elapsed(), answer, do_ms)
        }));
    }
    let send_secs = started.elapsed().as_secs_f64();
    let mut run = Run {
        sent: total,
        secs: send_secs,
        latencies: Vec::new(),
        do_waits: Vec::new(),
        changed: 0,
        errors: 0,
    };
    for task in tasks {
        match task.await {
            Ok((lat, Some(c), do_ms)) => {
                run.latencies.push(lat);
                run.do_waits
                    .push(Duration::from_millis(do_ms.unwrap_or_default()));
                run.changed += usize::from(c);
            }
            _ => run.errors += 1,
        }
    }
    run
}

/// `--rate N`, else the default.
fn rate_arg() -> Result<f64, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--rate") {
        None => Ok(DEFAULT_RATE),
        Some(i) => match args.get(i + 1).and_then(|r| r.parse::<u32>().ok()) {
            Some(r) if (1..=1000).contains(&r) => Ok(f64::from(r)),
            _ => Err("--rate takes a whole number of joins a second, 1 to 1000".to_owned()),
        },
    }
}

/// What one side's run saw.
struct Run {
    sent: usize,
    secs: f64,
    latencies: Vec<Duration>,
    /// Time the Worker waited for Durable Objects (`Server-Timing: do`).
    do_waits: Vec<Duration>,
    changed: usize,
    errors: usize,
}

/// `do;dur=N` of a `Server-Timing` header.
fn durable_object_ms(header: &str) -> Option<u64> {
    header
        .split(',')
        .find_map(|m| m.trim().strip_prefix("do;dur="))
        .and_then(|ms| ms.trim().parse().ok())
}

#[tokio::main]
async fn main() {
    let args = support::args();
    let duration = Duration::from_secs_f64(if args.quick { 1.5 } else { 10.0 });
    let rate = match rate_arg() {
        Ok(rate) => rate,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // Figures at another rate are printed, not written over the section.
    let write = args.write.as_deref().filter(|_| rate == DEFAULT_RATE);

    eprintln!("starting the stack ...");
    let app = TestApp::builder().cache_fresh_secs(30).start().await;
    let mut sides = Vec::new();
    for (name, prefix) in [
        ("IssueCounter object (group commit, flush at most 1/s)", ""),
        (
            "naive: `UPDATE issues SET rioter_count = rioter_count + 1` per join",
            "/__bench/counter-update",
        ),
    ] {
        let issue = app.fresh_issue(&format!("hot issue: {name}")).await;
        let path = format!("{prefix}/api/issues/{issue}/join");
        let before = counter_updates(&app).await;
        eprintln!("{name}: {rate}/s for {:.1} s ...", duration.as_secs_f64());
        let run = run(&app, &path, rate, duration).await;
        // Until the flush has written the final count (the naive side has
        // it at once), then one flush interval more for any late alarm.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (count, members) = counts(&app, &issue).await;
            if count == members || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (rioter_count, members) = counts(&app, &issue).await;
        sides.push(Side {
            name,
            run,
            counter_updates: counter_updates(&app).await - before,
            rioter_count,
            members,
        });
    }

    let mut table = String::from(
        "| path | joins sent | sent/s | answered 200 | errors | join p50 | join p95 | join p99 | waiting for objects p50 | counter UPDATEs at the primary | `issues.rioter_count` | `user_issues` rows | count exact | joins committed but not answered 200 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for s in &sides {
        table.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} ms | {} | {} | {} | {} | {} |\n",
            s.name,
            s.run.sent,
            s.run.sent as f64 / s.run.secs,
            s.run.latencies.len(),
            s.run.errors,
            support::pct_ms(&s.run.latencies, 0.5),
            support::pct_ms(&s.run.latencies, 0.95),
            support::pct_ms(&s.run.latencies, 0.99),
            support::pct_ms(&s.run.do_waits, 0.5),
            s.counter_updates,
            s.rioter_count,
            s.members,
            if s.rioter_count == s.members {
                "yes"
            } else {
                "**no**"
            },
            (s.members as usize).saturating_sub(s.run.changed),
        ));
    }
    let (object, naive) = (&sides[0], &sides[1]);
    let body = format!(
        "## Hot issue: the counter object against an UPDATE per join\n\n\
         `wrangler dev` with the local primary (no added delay). Each side: a fresh issue joined open-loop at \
         {rate:.0} joins/s for {:.1} s, every join by a new visitor (no cookie: a new user row and session), from \
         {CLIENT_IPS} client IPs in turn; the load generator shares the machine's 2 cores with workerd and the primary. \
         *Counter UPDATEs* are the `UPDATE issues SET rioter_count ...` statements the primary ran during the side's \
         run and the wait for its flush (`GET /stats`, `counter_updates`). *Count exact*: `issues.rioter_count` equals the \
         issue's `user_issues` rows, read after the flush. A join that the Worker answered 503 (its deadline for the \
         primary, `DB_TIMEOUT_MS`, is 1.5 s in the test harness) may still have committed: the last column counts \
         the rows beyond the joins answered `changed: true`. *Waiting for objects*: the Worker's time waiting for \
         Durable Objects per answered join (`Server-Timing: do`; the RateLimiter on both sides, the IssueCounter \
         too on the object's side). The naive side runs \
         through the development-only `/__bench/counter-update/...` switch (the same join transaction with the \
         UPDATE in it, without the object). Command: `cargo xtask bench`.\n\n{table}\n\
         Counter UPDATEs: **{}** through the object against **{}** naive ({}).\n",
        duration.as_secs_f64(),
        object.counter_updates,
        naive.counter_updates,
        if object.counter_updates > 0 {
            format!(
                "{:.0}x fewer",
                naive.counter_updates as f64 / object.counter_updates as f64
            )
        } else {
            "none through the object".to_owned()
        },
    );
    support::publish("hot-issue", &body, write);
    drop(app);
}
