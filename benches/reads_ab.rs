//! The reads, this build against another, in alternating rounds: one stack
//! of each build per round, each warmed up and then sent the same Zipf mix
//! at one fixed rate. A before/after that runs one build after the other
//! (the load benchmark's) lets the machine's drift over many minutes fall
//! on one side; taking turns puts it on both.
//!
//! Needs the build to compare with (`cargo xtask bench --before COMMIT`, or
//! `QR_BEFORE_BUNDLE`); without one it says so and measures nothing.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Seed, TestApp, CLIENT_IP_HEADER};
use qr_primary::seed::{Rng, Zipf};
use support::{pct_ms, timing, Cpu, SEARCH_TERMS};

/// One answer: its latency (from its scheduled time), `X-Cache` and
/// `Server-Timing`.
struct Answer {
    latency: Duration,
    cache: String,
    timing: String,
}

/// The mix: three in four `GET /api/issues/:id` drawn Zipf(1.0) over the
/// issues, one in four a search drawn Zipf(1.0) over the search terms.
fn mix(ids: &[String], n: usize, seed: u64) -> Vec<String> {
    let (issues, terms) = (
        Zipf::new(ids.len(), 1.0),
        Zipf::new(SEARCH_TERMS.len(), 1.0),
    );
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            if i % 4 == 3 {
                format!(
                    "/api/issues?q={}",
                    SEARCH_TERMS[terms.sample(&mut rng)].replace(' ', "+")
                )
            } else {
                format!("/api/issues/{}", ids[issues.sample(&mut rng)])
            }
        })
        .collect()
}

/// Sends `paths` open-loop at `rate` a second from 100 client IPs in turn.
async fn send(app: &TestApp, paths: Vec<String>, rate: f64) -> Vec<Answer> {
    let start = Instant::now();
    let mut pending = Vec::with_capacity(paths.len());
    for (i, path) in paths.into_iter().enumerate() {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let request = app
            .get(&path)
            .header(CLIENT_IP_HEADER, format!("10.9.0.{}", i % 100));
        pending.push(tokio::spawn(async move {
            let sent = request.send().await;
            let header = |r: &reqwest::Response, name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let (cache, timing) = match sent {
                Ok(r) if r.status().is_success() => {
                    let seen = (header(&r, "x-cache"), header(&r, "server-timing"));
                    let _ = r.bytes().await;
                    seen
                }
                _ => ("error".to_owned(), String::new()),
            };
            Answer {
                latency: at.elapsed(),
                cache,
                timing,
            }
        }));
    }
    let mut answers = Vec::with_capacity(pending.len());
    for p in pending {
        if let Ok(a) = p.await {
            answers.push(a);
        }
    }
    answers
}

struct Scale {
    rounds: usize,
    issues: usize,
    warm_secs: u64,
    secs: u64,
}

const WARM_RATE: f64 = 100.0;
const RATE: f64 = 150.0;

/// One build's stack for one round: the warm-up, then the measured run.
async fn measure(
    label: &str,
    bundle: Option<std::path::PathBuf>,
    s: &Scale,
    round: usize,
) -> String {
    eprintln!(
        "round {round}: {label}, starting a stack with {} issues ...",
        s.issues
    );
    let mut builder = TestApp::builder()
        .seed(Seed::Synthetic { issues: s.issues })
        .cache_fresh_secs(30);
    if let Some(build) = bundle {
        builder = builder
            .bundle(build)
            .var("RATE_LIMITS", support::Before::RATE_LIMITS);
    }
    let app = builder.start().await;
    let ids = Arc::new(support::texts(
        &app.sql(
            "SELECT id FROM issues ORDER BY rioter_count DESC, id",
            vec![],
        )
        .await,
    ));
    eprintln!("  warming up, {WARM_RATE:.0}/s for {} s ...", s.warm_secs);
    send(
        &app,
        mix(&ids, (WARM_RATE * s.warm_secs as f64) as usize, 1),
        WARM_RATE,
    )
    .await;
    eprintln!("  measuring, {RATE:.0}/s for {} s ...", s.secs);
    let cpu = Cpu::now(app.pids());
    let answers = send(&app, mix(&ids, (RATE * s.secs as f64) as usize, 2), RATE).await;
    let cpu = Cpu::now(app.pids()).since(cpu);
    drop(app);

    let n = answers.len().max(1) as f64;
    let share =
        |f: &dyn Fn(&Answer) -> bool| 100.0 * answers.iter().filter(|a| f(a)).count() as f64 / n;
    let latencies: Vec<Duration> = answers.iter().map(|a| a.latency).collect();
    let in_worker: Vec<Duration> = answers
        .iter()
        .filter_map(|a| timing(&a.timing, "total"))
        .map(|ms| Duration::from_millis(u64::from(ms)))
        .collect();
    let mean = |d: &[Duration]| {
        d.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / d.len().max(1) as f64
    };
    format!(
        "| {label} | {round} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.0} ms | {:.0} / {:.0} / {:.0}% | {:.0}% | {:.0}% | {:.2} / {:.2} ms | {:.1}% |\n",
        answers.len(),
        pct_ms(&latencies, 0.5),
        pct_ms(&latencies, 0.95),
        pct_ms(&latencies, 0.99),
        mean(&latencies),
        mean(&in_worker),
        pct_ms(&in_worker, 0.95),
        pct_ms(&in_worker, 0.99),
        share(&|a| a.cache == "HIT"),
        share(&|a| a.cache == "STALE"),
        share(&|a| a.cache == "MISS"),
        share(&|a| a.timing.contains("kv;")),
        share(&|a| a.timing.contains("do;")),
        cpu.workerd as f64 / n,
        cpu.primary as f64 / n,
        share(&|a| a.cache == "error"),
    )
}

#[tokio::main]
async fn main() {
    let args = support::args();
    let Some(before) = support::before() else {
        eprintln!(
            "reads_ab compares this build with another: run it through `cargo xtask bench --before COMMIT` \
             (or set QR_BEFORE_BUNDLE to another checkout's build/ directory); nothing measured"
        );
        return;
    };
    let s = if args.quick {
        Scale {
            rounds: 1,
            issues: 1_000,
            warm_secs: 2,
            secs: 2,
        }
    } else {
        Scale {
            rounds: 4,
            issues: 10_000,
            warm_secs: 20,
            secs: 20,
        }
    };
    let mut rows = String::new();
    // Each build goes first in every other round (before, after; after,
    // before; ...), so whatever the first stack of a round meets (the last
    // one's shutdown, the machine warming) falls on both.
    let label = format!("before ({})", before.label);
    for round in 1..=s.rounds {
        let mut pair = [
            (label.as_str(), Some(before.build.clone())),
            ("after", None),
        ];
        if round % 2 == 0 {
            pair.reverse();
        }
        for (name, bundle) in pair {
            rows += &measure(name, bundle, &s, round).await;
        }
    }
    let mut section = format!(
        "## Reads, before and after in alternating rounds ({})\n\n\
         The reads' Zipf mix (three in four `GET /api/issues/:id` drawn Zipf(1.0) over {} issues, one in four a \
         search drawn Zipf(1.0) over the {} search terms) on the Worker of {} (*before*) and on this checkout's \
         (*after*), a fresh stack of each per round, taking turns (the build that goes first alternates): each warmed up for {} s at {WARM_RATE:.0}/s, then \
         {} s at {RATE:.0}/s measured, open loop from 100 client IPs, cache fresh TTL 30 s. *Read KV*: the answers \
         that waited for Workers KV (`Server-Timing: kv`); *called an object*: that waited for a Durable Object (the \
         rate limiter); *in the Worker*: `Server-Timing: total`, from the request's arrival in the Worker to its answer (the rest of the latency is outside it: queues in workerd and the network); *CPU per request*: of the `workerd` processes (the Worker, its objects and the local KV \
         simulation) and of the primary over the measured requests. Command: `cargo xtask bench --before COMMIT \
         --only reads_ab`.\n\n\
         | build | round | requests | p50 | p95 | p99 | mean: latency / in the Worker | in the Worker: p95 / p99 | HIT / STALE / MISS | read KV | called an object | CPU per request: workerd / primary | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}",
        support::today(),
        s.issues,
        SEARCH_TERMS.len(),
        before.label,
        s.warm_secs,
        s.secs,
    );
    if args.quick {
        section += "\n(quick mode: figures only show the code runs)\n";
    }
    support::publish("reads-alternating", &section, args.write.as_deref());
}
