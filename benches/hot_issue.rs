//! A hot issue: how many joins a second each path sustains. The
//! IssueCounter object's path (group commit, counts flushed at most once a
//! second) against the seed's `UPDATE issues SET rioter_count =
//! rioter_count + 1` in every join's transaction
//! (`/__bench/counter-update/...`, development only). Each path joins its
//! own fresh issue open loop (a join sent every 1/rate s whatever the
//! earlier ones are doing), each join by a new visitor (no cookie, so a new
//! user and session), from 100 client IPs in turn; the rate steps up by a
//! quarter from 50/s, the paths taking turns at each rate, until a step
//! does not hold (p95 < 250 ms, errors < 1%, 95% of the offered rate
//! answered). Then the flush is awaited and each issue's `rioter_count` is
//! compared with its `user_issues` rows. The primary counts the `UPDATE
//! issues SET rioter_count ...` statements it runs (`GET /stats`).
//! With `QR_BEFORE_BUNDLE` (`cargo xtask bench --before COMMIT`), the same
//! climb runs first on that build's Worker, and a before/after table
//! follows.
//!
//! Then *placement*: what a join costs from a far edge with the issue's
//! object near the person, near the primary (the location hint) or far
//! from both, the hops' distances modelled with `BENCH_HOP_DELAYS`, at a
//! quiet and a busy rate, against the naive path from the same edge.
//! `--quick`: two 1 s steps, one 1 s placement run each.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{int, TestApp, CLIENT_IP_HEADER};
use qr_primary::client::text;

const CLIENT_IPS: usize = 100;
/// Each path's warm-up before its first step (not counted).
const WARM_RATE: f64 = 25.0;
const WARM_SECS: u64 = 2;

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
    let cpu_before = support::Cpu::now(app.pids());
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
            let mut seen = Seen::default();
            let answer = match request.send().await {
                Ok(r) if r.status().is_success() => {
                    if let Some(header) = r
                        .headers()
                        .get("server-timing")
                        .and_then(|v| v.to_str().ok())
                    {
                        seen = Seen::of(header);
                    }
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
            (t.elapsed(), answer, seen)
        }));
    }
    let send_secs = started.elapsed().as_secs_f64();
    let mut run = Run {
        sent: total,
        secs: send_secs,
        latencies: Vec::new(),
        seen: Vec::new(),
        changed: 0,
        errors: 0,
        cpu: support::Cpu::default(),
    };
    for task in tasks {
        match task.await {
            Ok((lat, Some(c), seen)) => {
                run.latencies.push(lat);
                run.seen.push(seen);
                run.changed += usize::from(c);
            }
            _ => run.errors += 1,
        }
    }
    run.cpu = support::Cpu::now(app.pids()).since(cpu_before);
    run
}

/// What one side's run saw.
struct Run {
    sent: usize,
    secs: f64,
    latencies: Vec<Duration>,
    /// Each answered join's `Server-Timing`.
    seen: Vec<Seen>,
    changed: usize,
    errors: usize,
    /// CPU time (ms) workerd and the primary used during the step.
    cpu: support::Cpu,
}

/// What an answered join's `Server-Timing` says: the Worker's time
/// waiting for objects and on the primary, and the IssueCounter's phases
/// (none on the naive path).
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    do_ms: u64,
    db_ms: u64,
    queued_ms: u64,
    commit_ms: u64,
    after_ms: u64,
    group: u64,
}

impl Seen {
    fn of(header: &str) -> Seen {
        let metric = |name: &str| {
            header.split(',').find_map(|m| {
                let m = m.trim();
                let rest = m.strip_prefix(name)?.strip_prefix(';')?;
                let value = rest
                    .strip_prefix("dur=")
                    .or_else(|| rest.strip_prefix("desc="))?;
                value.trim().parse::<u64>().ok()
            })
        };
        Seen {
            do_ms: metric("do").unwrap_or_default(),
            db_ms: metric("db").unwrap_or_default(),
            queued_ms: metric("counter-queue").unwrap_or_default(),
            commit_ms: metric("counter-commit").unwrap_or_default(),
            after_ms: metric("counter-after").unwrap_or_default(),
            group: metric("counter-group").unwrap_or_default(),
        }
    }
}

impl Run {
    /// The median of one of [`Seen`]'s figures over the answered joins.
    fn median(&self, of: impl Fn(&Seen) -> u64) -> u64 {
        let mut v: Vec<u64> = self.seen.iter().map(of).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
}

/// A step holds when its p95 is under this...
const P95_TARGET_MS: f64 = 250.0;
/// ...its errors under 1%, and at least 95% of the offered rate answered.
fn holds(run: &Run, rate: f64) -> bool {
    let answered = run.latencies.len() as f64;
    support::pct_ms(&run.latencies, 0.95) < P95_TARGET_MS
        && (run.errors as f64) < 0.01 * run.sent as f64
        && answered / run.secs.max(1e-9) >= 0.95 * rate
        && answered >= 0.95 * run.sent as f64
}

/// One side of the comparison: its issue, its join path, its steps.
struct Side {
    name: &'static str,
    issue: String,
    path: String,
    steps: Vec<(f64, Run)>,
    /// Still stepping up (no step has failed yet).
    climbing: bool,
    counter_updates: u64,
    rioter_count: i64,
    members: i64,
    changed: usize,
}

impl Side {
    fn sustained(&self) -> Option<f64> {
        self.steps
            .iter()
            .take_while(|(rate, run)| holds(run, *rate))
            .last()
            .map(|(rate, _)| *rate)
    }
}

/// Until the issue's queued joins are done: a join answered quickly.
async fn settle(app: &TestApp, issue: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let path = format!("/api/issues/{issue}");
    while Instant::now() < deadline {
        let t = Instant::now();
        let _ = app.get(&path).send().await;
        if t.elapsed() < Duration::from_millis(50) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Steps both paths up from `start_rate` on `app` (taking turns at each
/// rate) until each misses a step, then waits for the counters' flush and
/// reads each issue's count and members.
async fn climb(app: &TestApp, start_rate: f64, max_steps: usize, step: Duration) -> Vec<Side> {
    let mut sides = Vec::new();
    for (name, prefix) in [
        ("IssueCounter object", ""),
        ("naive UPDATE per join", "/__bench/counter-update"),
    ] {
        let issue = app.fresh_issue(&format!("hot issue: {name}")).await;
        sides.push(Side {
            name,
            path: format!("{prefix}/api/issues/{issue}/join"),
            issue,
            steps: Vec::new(),
            climbing: true,
            counter_updates: 0,
            rioter_count: 0,
            members: 0,
            changed: 0,
        });
    }
    // Each path's code and the stack warm up on an issue of their own
    // first (not counted), so the first step is not the one that pays for
    // compiling and starting.
    for side in &sides {
        let warm = app.fresh_issue(&format!("warm-up: {}", side.name)).await;
        let path = side.path.replace(&side.issue, &warm);
        eprintln!(
            "{}: warming up, {WARM_RATE:.0} joins/s for {WARM_SECS} s ...",
            side.name
        );
        run(app, &path, WARM_RATE, Duration::from_secs(WARM_SECS)).await;
        settle(app, &warm).await;
    }
    // The sides take turns at each rate, so a slower minute of this shared
    // machine falls on both.
    let mut rate: f64 = start_rate;
    for _ in 0..max_steps {
        if sides.iter().all(|s| !s.climbing) {
            break;
        }
        for side in sides.iter_mut().filter(|s| s.climbing) {
            let updates_before = counter_updates(app).await;
            eprintln!(
                "{}: {rate:.0} joins/s for {:.0} s ...",
                side.name,
                step.as_secs_f64()
            );
            let run = run(app, &side.path, rate, step).await;
            let held = holds(&run, rate);
            eprintln!(
                "  p50 {:.1} ms, p95 {:.1} ms, {} answered, {} errors: {}",
                support::pct_ms(&run.latencies, 0.5),
                support::pct_ms(&run.latencies, 0.95),
                run.latencies.len(),
                run.errors,
                if held { "sustained" } else { "not sustained" }
            );
            side.changed += run.changed;
            side.climbing = held;
            side.steps.push((rate, run));
            settle(app, &side.issue).await;
            side.counter_updates += counter_updates(app).await - updates_before;
        }
        rate = (rate * 1.25).round();
    }
    // Until each flush has written the final count (the naive side has it
    // at once), then one flush interval more for any late alarm.
    for side in &mut sides {
        let updates_before = counter_updates(app).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (count, members) = counts(app, &side.issue).await;
            if count == members || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (rioter_count, members) = counts(app, &side.issue).await;
        side.rioter_count = rioter_count;
        side.members = members;
        side.counter_updates += counter_updates(app).await - updates_before;
    }

    sides
}

#[tokio::main]
async fn main() {
    let args = support::args();
    // Full: 8 s per step, from 50 joins/s up by a quarter, at most 9 steps
    // (about 300/s); quick: 1 s steps, two of them.
    let (step, max_steps, start_rate) = if args.quick {
        (Duration::from_secs(1), 2, 50.0)
    } else {
        (Duration::from_secs(8), 9, 50.0)
    };

    let before = match support::before() {
        Some(b) => {
            eprintln!("starting the stack with the bundle of {} ...", b.label);
            let app = TestApp::builder()
                .cache_fresh_secs(30)
                .bundle(b.build.clone())
                .var("RATE_LIMITS", support::Before::RATE_LIMITS)
                .start()
                .await;
            let sides = climb(&app, start_rate, max_steps, step).await;
            drop(app);
            Some((b.label, sides))
        }
        None => None,
    };
    eprintln!("starting the stack ...");
    let app = TestApp::builder().cache_fresh_secs(30).start().await;
    let sides = climb(&app, start_rate, max_steps, step).await;
    drop(app);

    let mut table = String::from(
        "| path | offered | joins sent | answered 200 | errors | join p50 | join p95 | join p99 | objects p50 | primary p50 | in the counter p50: queued / commit / after | group p50 | CPU per join: workerd / primary | sustained |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for s in &sides {
        for (rate, run) in &s.steps {
            let counter = if run.median(|s| s.group) > 0 {
                format!(
                    "{} / {} / {} ms | {}",
                    run.median(|s| s.queued_ms),
                    run.median(|s| s.commit_ms),
                    run.median(|s| s.after_ms),
                    run.median(|s| s.group)
                )
            } else {
                "- | -".to_owned()
            };
            table.push_str(&format!(
                "| {} | {rate:.0}/s | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} ms | {} ms | {counter} | {:.1} / {:.1} ms | {} |\n",
                s.name,
                run.sent,
                run.latencies.len(),
                run.errors,
                support::pct_ms(&run.latencies, 0.5),
                support::pct_ms(&run.latencies, 0.95),
                support::pct_ms(&run.latencies, 0.99),
                run.median(|s| s.do_ms),
                run.median(|s| s.db_ms),
                run.cpu.workerd as f64 / run.sent.max(1) as f64,
                run.cpu.primary as f64 / run.sent.max(1) as f64,
                if holds(run, *rate) { "yes" } else { "no" },
            ));
        }
    }
    let mut totals = String::from(
        "| path | highest sustained rate | counter UPDATEs at the primary | `issues.rioter_count` | `user_issues` rows | count exact | joins committed but not answered 200 |\n\
         |---|---:|---:|---:|---:|---|---:|\n",
    );
    for s in &sides {
        totals.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            s.name,
            s.sustained()
                .map_or("none of the rates tried".to_owned(), |r| format!(
                    "{r:.0} joins/s"
                )),
            s.counter_updates,
            s.rioter_count,
            s.members,
            if s.rioter_count == s.members {
                "yes"
            } else {
                "**no**"
            },
            (s.members as usize).saturating_sub(s.changed),
        ));
    }
    let (object, naive) = (&sides[0], &sides[1]);
    let ratio = match (object.sustained(), naive.sustained()) {
        (Some(o), Some(n)) => format!("**{:.2}x** the naive path's", o / n),
        _ => "not comparable (a side sustained none of the rates)".to_owned(),
    };
    let body = format!(
        "## Hot issue: the counter object against an UPDATE per join\n\n\
         `wrangler dev` with the local primary (no added delay). Each path joins its own fresh issue open-loop, \
         stepped from {start_rate:.0} joins/s up by a quarter, {:.0} s a step, the two paths taking turns at each \
         rate; a path stops at its first step that does not hold (p95 < {P95_TARGET_MS:.0} ms, errors < 1%, at \
         least 95% of the offered rate answered). Each path is first warmed up for {WARM_SECS} s at {WARM_RATE:.0} joins/s on an issue of its own (not \
         counted). Every join is by a new visitor (no cookie: a new user row and session), from {CLIENT_IPS} client IPs in turn; the load generator shares the machine's 2 cores with \
         workerd and the primary. *Counter UPDATEs* are the `UPDATE issues SET rioter_count ...` statements the \
         primary ran for the path's steps and the wait for its flush (`GET /stats`, `counter_updates`). *Count \
         exact*: `issues.rioter_count` equals the issue's `user_issues` rows after the flush. A join the Worker \
         answered 503 (its deadline for the primary, `DB_TIMEOUT_MS`, is 1.5 s in the test harness) may still \
         have committed: the last column counts rows beyond the joins answered `changed: true`. *Objects*: the \
         Worker's time waiting for Durable Objects per answered join (`Server-Timing: do`; the RateLimiter on \
         both paths, the IssueCounter too on the object's); *primary*: the Worker's own time on the primary \
         (`db`: the new visitor's user and session, and on the naive path the join). *In the counter* \
         (`counter-queue`, `counter-commit`, `counter-after`, `counter-group`, reported by the object): how \
         long a join waited in the object's queue before its group went out, its group's transaction at the \
         primary as the object waited for it, the time from there to the answer (saving the state, setting \
         the alarm), and how many joins its group held. *CPU per join*: the user and system CPU time of the \
         `workerd` processes (the Worker and every object share them) and of the primary during the step \
         (`/proc/PID/stat`), over the joins sent. The naive path is the \
         development-only `/__bench/counter-update/...` switch (the same join transaction with the UPDATE in it, \
         without the object). Command: `cargo xtask bench`.\n\n{table}\n{totals}\n\
         The object path's highest sustained rate: {ratio}. Counter UPDATEs: **{}** through the object against \
         **{}** naive ({}).\n",
        step.as_secs_f64(),
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
    support::publish("hot-issue", &body, args.write.as_deref());
    let section = placement(args.quick).await;
    support::publish("hot-issue-placement", &section, args.write.as_deref());
    if let Some((label, before)) = before {
        support::publish(
            "hot-issue-before-after",
            &before_after(&label, &before, &sides),
            args.write.as_deref(),
        );
    }
}

/// A long hop's modelled round trip in the placement runs: a far edge to
/// the primary's region (Sydney to western Europe is about twice this, the
/// US east coast to western Europe about half).
const FAR_MS: u64 = 150;
/// A hop within one region.
const NEAR_MS: u64 = 2;
/// The naive path's row in the placement table.
const NAIVE: &str = "naive UPDATE per join (no object)";

/// One placement of the issue's object, as modelled hop delays.
struct Placement {
    name: &'static str,
    /// Worker to object, object to primary, Worker to primary (ms).
    hops: (u64, u64, u64),
    /// The naive path runs on this placement's stack too.
    with_naive: bool,
}

const PLACEMENTS: [Placement; 3] = [
    Placement {
        name: "the object where its first join came from: this far edge (no location hint)",
        hops: (NEAR_MS, FAR_MS, FAR_MS),
        with_naive: true,
    },
    Placement {
        name: "the object near the primary (location hint)",
        hops: (FAR_MS, NEAR_MS, FAR_MS),
        with_naive: false,
    },
    Placement {
        name: "the object on a third continent (first used from there, no hint)",
        hops: (FAR_MS, FAR_MS, FAR_MS),
        with_naive: false,
    },
];

/// What a join costs from a far edge with the issue's object placed here
/// or there: the hops' distances modelled with `BENCH_HOP_DELAYS`, new
/// visitors joining one fresh issue per placement at a quiet and a busy
/// rate, open loop.
async fn placement(quick: bool) -> String {
    let (rates, step): (&[f64], Duration) = if quick {
        (&[10.0], Duration::from_secs(1))
    } else {
        (&[10.0, 50.0], Duration::from_secs(8))
    };
    let mut rows = String::new();
    let mut p50_at = Vec::new();
    for place in &PLACEMENTS {
        let (wo, op, wp) = place.hops;
        let delays = format!("worker-object={wo},object-primary={op},worker-primary={wp}");
        eprintln!("placement: {} ({delays}) ...", place.name);
        let app = TestApp::builder()
            .cache_fresh_secs(30)
            .var("BENCH_HOP_DELAYS", &delays)
            .start()
            .await;
        let mut paths = vec![(place.name, "")];
        if place.with_naive {
            paths.push((NAIVE, "/__bench/counter-update"));
        }
        for (name, prefix) in paths {
            for &rate in rates {
                let issue = app.fresh_issue(&format!("placement: {name} {rate}")).await;
                let path = format!("{prefix}/api/issues/{issue}/join");
                eprintln!(
                    "  {name}: {rate:.0} joins/s for {:.0} s ...",
                    step.as_secs_f64()
                );
                let run = run(&app, &path, rate, step).await;
                settle(&app, &issue).await;
                let (hops, counter) = if prefix.is_empty() {
                    (
                        format!("{wo} / {op} ms"),
                        format!(
                            "{} / {} ms | {}",
                            run.median(|s| s.queued_ms),
                            run.median(|s| s.commit_ms),
                            run.median(|s| s.group)
                        ),
                    )
                } else {
                    (format!("- / - ({wp} ms)"), "- | -".to_owned())
                };
                let p50 = support::pct_ms(&run.latencies, 0.5);
                rows += &format!(
                    "| {name} | {hops} | {rate:.0}/s | {} | {p50:.0} ms | {:.0} ms | {:.0} ms | {} ms | {counter} |\n",
                    run.errors,
                    support::pct_ms(&run.latencies, 0.95),
                    support::pct_ms(&run.latencies, 0.99),
                    run.median(|s| s.do_ms),
                );
                p50_at.push((name, rate, p50));
            }
        }
        drop(app);
    }
    let p50 = |name: &str, rate: f64| {
        p50_at
            .iter()
            .find(|(n, r, _)| *n == name && *r == rate)
            .map(|(_, _, p)| *p)
    };
    let busy = *rates.last().unwrap_or(&10.0);
    let mut summary = String::new();
    if let (Some(hint), Some(edge), Some(third), Some(naive)) = (
        p50(PLACEMENTS[1].name, busy),
        p50(PLACEMENTS[0].name, busy),
        p50(PLACEMENTS[2].name, busy),
        p50(NAIVE, busy),
    ) {
        summary = format!(
            "At {busy:.0} joins/s, join p50: the object near the primary **{hint:.0} ms**; where its first join came \
             from {edge:.0} ms ({:.2}x); on a third continent {third:.0} ms ({:.2}x); the naive path {naive:.0} ms \
             ({:.2}x).\n",
            edge / hint.max(1e-9),
            third / hint.max(1e-9),
            naive / hint.max(1e-9),
        );
    }
    format!(
        "## Hot issue: where the object lives, from a far edge\n\n\
         The hops of a join given modelled distances (`BENCH_HOP_DELAYS`, development builds only: each request on \
         a hop waits that long before it is sent): the Worker is at a far edge, the primary {FAR_MS} ms away, and \
         the issue's IssueCounter object is near the Worker (where an object is created when its first request came \
         from there), near the primary (`PRIMARY_LOCATION`, the location hint), or far from both; a hop within one \
         region is {NEAR_MS} ms. New visitors join a fresh issue open loop at each rate for {:.0} s. The RateLimiter \
         (near the client in production) gets no delay. *Objects p50*: the Worker's wait for its objects, the \
         modelled hop included; *in the counter*: queued / the group's transaction, and the group's size. \
         Command: `cargo xtask bench`.\n\n\
         | path | hops: Worker→object / object→primary | offered | errors | join p50 | p95 | p99 | objects p50 | in the counter p50: queued / commit | group p50 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n{summary}",
        step.as_secs_f64()
    )
}

/// The two builds' sides, side by side: each path's highest sustained rate
/// and its p50/p95 at each rate both builds ran.
fn before_after(label: &str, before: &[Side], after: &[Side]) -> String {
    let rate = |s: &Side| {
        s.sustained()
            .map_or("none".to_owned(), |r| format!("{r:.0} joins/s"))
    };
    let mut t = format!(
        "## Hot issue, before and after\n\n\
         The benchmark above run on the Worker of {label} (*before*, built by that commit's own `cargo xtask \
         build-worker`) and then on this checkout's (*after*), one after the other in one run \
         (`cargo xtask bench --before {label}`), each on a fresh stack. p50 / p95 of the joins at each rate.\n\n\
         | path | build | highest sustained | counter UPDATEs | count exact |"
    );
    let mut rates: Vec<f64> = after
        .iter()
        .chain(before)
        .flat_map(|s| s.steps.iter().map(|(r, _)| *r))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    for r in &rates {
        t += &format!(" {r:.0}/s |");
    }
    t += &format!("\n|---|---|---:|---:|---|{}\n", "---:|".repeat(rates.len()));
    for (i, side) in after.iter().enumerate() {
        for (build, s) in [("before", before.get(i)), ("after", Some(side))] {
            let Some(s) = s else { continue };
            t += &format!(
                "| {} | {build} | {} | {} | {} |",
                s.name,
                rate(s),
                s.counter_updates,
                if s.rioter_count == s.members {
                    "yes"
                } else {
                    "**no**"
                }
            );
            for r in &rates {
                match s.steps.iter().find(|(sr, _)| sr == r) {
                    Some((_, run)) => {
                        t += &format!(
                            " {:.0} / {:.0} ms |",
                            support::pct_ms(&run.latencies, 0.5),
                            support::pct_ms(&run.latencies, 0.95)
                        )
                    }
                    None => t += " - |",
                }
            }
            t += "\n";
        }
    }
    let ratio = |sides: &[Side]| match (
        sides.first().and_then(Side::sustained),
        sides.get(1).and_then(Side::sustained),
    ) {
        (Some(o), Some(n)) => format!("{:.2}x", o / n),
        _ => "not comparable".to_owned(),
    };
    t += &format!(
        "\nThe object path's highest sustained rate against the naive path's: before **{}**, after **{}**.\n",
        ratio(before),
        ratio(after)
    );
    t
}
