//! The Worker under load in `wrangler dev`: a cached `GET /api/issues/:id`
//! against the bare `/__bench/constant` route (same pipeline, no data), and
//! the cache hit ratio of a Zipf(1.0) workload over 10,000 issues. Load comes
//! from this process (tokio + reqwest) on 127.0.0.1, bounded in time and
//! count, and shares the machine's cores with wrangler and the primary.
//! `--quick`: 1,000 issues and a second or so per scenario. `--write FILE`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Seed, TestApp};
use qr_primary::seed::{Rng, Zipf};

const START: &str = "<!-- edge:start -->";
const END: &str = "<!-- edge:end -->";

struct Load {
    latencies: Vec<Duration>,
    secs: f64,
    errors: usize,
    hits: usize,
    /// Served stale from the cache (refreshed behind the response).
    stale: usize,
    /// Where answered entries came from (`Server-Timing: cache;desc=`):
    /// the isolate's memory, KV, the primary.
    from: [usize; 3],
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// `clients` loops for `duration` (or until `max` requests in all), each
/// request's path from `path(n)`.
async fn load(
    app: &TestApp,
    clients: usize,
    duration: Duration,
    max: usize,
    path: Arc<dyn Fn(usize) -> String + Send + Sync>,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, base) = (app.http.clone(), app.url.clone());
            let (stop, issued, path) = (stop.clone(), issued.clone(), path.clone());
            tokio::spawn(async move {
                let mut out = (Vec::new(), 0usize, 0usize, 0usize, [0usize; 3]);
                while !stop.load(Ordering::Relaxed) {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= max {
                        break;
                    }
                    let t = Instant::now();
                    match http.get(format!("{base}{}", path(n))).send().await {
                        Ok(r) if r.status().is_success() => {
                            let header = |name: &str| {
                                r.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned()
                            };
                            match header("x-cache").as_str() {
                                "HIT" => out.2 += 1,
                                "STALE" => out.3 += 1,
                                _ => {}
                            }
                            let timing = header("server-timing");
                            for (i, source) in ["memory", "kv", "primary"].iter().enumerate() {
                                if timing.starts_with(&format!("cache;desc={source},")) {
                                    out.4[i] += 1;
                                }
                            }
                            let _ = r.bytes().await;
                            out.0.push(t.elapsed());
                        }
                        _ => out.1 += 1,
                    }
                }
                out
            })
        })
        .collect();
    let deadline = tokio::time::sleep(duration);
    tokio::pin!(deadline);
    let all_done = futures::future::join_all(tasks);
    tokio::pin!(all_done);
    let results = tokio::select! {
        results = &mut all_done => results,
        _ = &mut deadline => {
            stop.store(true, Ordering::Relaxed);
            all_done.await
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let mut load = Load {
        latencies: Vec::new(),
        secs,
        errors: 0,
        hits: 0,
        stale: 0,
        from: [0; 3],
    };
    for (lat, errors, hits, stale, from) in results.into_iter().flatten() {
        load.latencies.extend(lat);
        load.errors += errors;
        load.hits += hits;
        load.stale += stale;
        for (all, n) in load.from.iter_mut().zip(from) {
            *all += n;
        }
    }
    load.latencies.sort_unstable();
    load
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (issues, secs, zipf_requests) = if quick {
        (1_000, 1, 1_000)
    } else {
        (10_000, 8, 20_000)
    };
    let clients = 8;

    eprintln!("starting the stack with {issues} synthetic issues ...");
    let app = TestApp::builder()
        .seed(Seed::Synthetic { issues })
        .cache_fresh_secs(30)
        .start()
        .await;
    let ids: Vec<String> = app
        .sql(
            "SELECT id FROM issues ORDER BY rioter_count DESC, id",
            vec![],
        )
        .await
        .iter()
        .filter_map(|r| match &r[0] {
            qr_primary::client::Value::Text { value } => Some(value.to_string()),
            _ => None,
        })
        .collect();
    let hot = format!("/api/issues/{}", ids[0]);
    let _ = app.get(&hot).send().await;
    let _ = app.get("/__bench/constant").send().await;

    let dur = Duration::from_secs(secs);
    eprintln!("bare route ...");
    let bare = load(
        &app,
        clients,
        dur,
        usize::MAX,
        Arc::new(|_| "/__bench/constant".to_owned()),
    )
    .await;
    eprintln!("cached detail ...");
    let hot_path = hot.clone();
    let cached = load(
        &app,
        clients,
        dur,
        usize::MAX,
        Arc::new(move |_| hot_path.clone()),
    )
    .await;

    eprintln!(
        "Zipf(1.0) over {} issues, {zipf_requests} requests ...",
        ids.len()
    );
    let zipf = Zipf::new(ids.len(), 1.0);
    let zipf_run = |seed: u64| {
        let mut rng = Rng::new(seed);
        let order: Arc<Vec<String>> = Arc::new(
            (0..zipf_requests)
                .map(|_| format!("/api/issues/{}", ids[zipf.sample(&mut rng)]))
                .collect(),
        );
        let paths = order.clone();
        let app = &app;
        async move {
            let l = load(
                app,
                clients,
                Duration::from_secs(300),
                zipf_requests,
                Arc::new(move |n| paths[n].clone()),
            )
            .await;
            let distinct: HashSet<String> = order.iter().cloned().collect();
            (l, distinct)
        }
    };
    // From a cold cache (every first request of an issue is a MISS), then
    // a second run of the same distribution (other draws) on the cache the
    // first one left: the steady state of a deployment that has been up.
    let (zipf_load, cold_set) = zipf_run(11).await;
    eprintln!("Zipf(1.0) again, on the warm cache ...");
    let (warm_load, warm_set) = zipf_run(12).await;
    // The steady state of a cache that has served this traffic for some
    // minutes: three more runs (not counted), then one measured. With 20,000
    // draws over 10,000 issues the warm run above still meets issues for
    // the first time; by now few are.
    let mut seen: HashSet<String> = cold_set.union(&warm_set).cloned().collect();
    for seed in 13..16 {
        eprintln!("Zipf(1.0), settling the cache ({} of 3) ...", seed - 12);
        let (_, set) = zipf_run(seed).await;
        seen.extend(set);
    }
    // The two runs above and these three.
    let settled_draws = zipf_requests * 5;
    eprintln!("Zipf(1.0) on the settled cache ...");
    let (steady_load, steady_set) = zipf_run(16).await;
    let first_seen_steady = steady_set.difference(&seen).count();
    let ratio = |l: &Load| (l.hits + l.stale) as f64 / l.latencies.len().max(1) as f64;
    let hit_ratio = ratio(&zipf_load);
    let warm_ratio = ratio(&warm_load);
    let steady_ratio = ratio(&steady_load);
    let (distinct, warm_distinct) = (cold_set.len(), warm_set.len());
    // The most any cache could answer: every first request of an issue
    // (in the cold run; in the warm run, of an issue the cold run did not
    // ask for) has to go to the primary.
    let first_seen_warm = warm_set.difference(&cold_set).count();
    let ceiling = |firsts: usize| 100.0 * (1.0 - firsts as f64 / zipf_requests as f64);
    let sources = |l: &Load| {
        let n = l.latencies.len().max(1) as f64;
        format!(
            "memory {:.1}%, KV {:.1}%, primary {:.1}%",
            100.0 * l.from[0] as f64 / n,
            100.0 * l.from[1] as f64 / n,
            100.0 * l.from[2] as f64 / n
        )
    };

    let row = |name: &str, l: &Load| {
        format!(
            "| {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} |\n",
            l.rate(),
            l.pct(0.5),
            l.pct(0.95),
            l.pct(0.99),
            l.errors
        )
    };
    let table = format!(
        "| scenario | requests/s | p50 | p95 | p99 | errors |\n|---|---:|---:|---:|---:|---:|\n{}{}{}{}{}\n\
         Cached detail against the bare route: **{:.2}x** the throughput. \
         Zipf hit ratio (answered from the cache, `X-Cache: HIT` or `STALE`): from a cold cache **{:.1}%** \
         ({} HIT + {} STALE of {} requests; {} distinct issues requested, each first request a MISS; \
         the most any cache could answer: {:.1}%); \
         on the warm cache **{:.1}%** ({} HIT + {} STALE of {}; {} distinct issues, {} of them not asked for in \
         the cold run; the most any cache could answer: {:.1}%); on the settled cache (after {} draws) \
         **{:.1}%** ({} HIT + {} STALE of {}; {} issues asked for the first time; the most any cache could \
         answer: {:.1}%).\n\n\
         Where the Zipf answers' entries came from (`Server-Timing: cache;desc=`): cold {}; warm {}; settled {}.\n",
        row("bare route (`/__bench/constant`)", &bare),
        row("cached `GET /api/issues/:id` (one hot id)", &cached),
        row(&format!("Zipf(1.0) `GET /api/issues/:id` over {} issues, cold cache", ids.len()), &zipf_load),
        row(&format!("Zipf(1.0) `GET /api/issues/:id` over {} issues, warm cache", ids.len()), &warm_load),
        row(&format!("Zipf(1.0) `GET /api/issues/:id` over {} issues, settled cache", ids.len()), &steady_load),
        cached.rate() / bare.rate(),
        hit_ratio * 100.0,
        zipf_load.hits,
        zipf_load.stale,
        zipf_load.latencies.len(),
        distinct,
        ceiling(distinct),
        warm_ratio * 100.0,
        warm_load.hits,
        warm_load.stale,
        warm_load.latencies.len(),
        warm_distinct,
        first_seen_warm,
        ceiling(first_seen_warm),
        settled_draws,
        steady_ratio * 100.0,
        steady_load.hits,
        steady_load.stale,
        steady_load.latencies.len(),
        first_seen_steady,
        ceiling(first_seen_steady),
        sources(&zipf_load),
        sources(&warm_load),
        sources(&steady_load),
    );
    let section = format!(
        "{START}\n## Edge: cached reads in wrangler dev\n\n\
         `wrangler dev` (workerd) with the local primary and {} synthetic issues; {clients} concurrent clients in the \
         benchmark process on 127.0.0.1 (sharing the machine's cores with workerd and the primary); {secs} s per timed \
         scenario; each Zipf run is {zipf_requests} requests (each its own draws) with the default fresh TTL (30 s): the first from a cold cache, the second right after it, the last after three more (not counted). Command: `cargo xtask bench`.\n\n{table}{END}\n",
        ids.len()
    );
    println!("{section}");
    drop(app);
    if let Some(path) = write {
        let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
        let new = match (old.find(START), old.find(END)) {
            (Some(s), Some(e)) if e > s => format!(
                "{}{}{}",
                &old[..s],
                section.trim_end(),
                &old[e + END.len()..]
            ),
            _ => format!("{}\n\n{}", old.trim_end(), section),
        };
        std::fs::write(&path, new).expect("write");
        eprintln!("wrote {path}");
    }
}
