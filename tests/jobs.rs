//! Scheduled jobs against the real stack: each job's numbers on prepared
//! data and nothing changed by a second run; archive_feed on 10k old posts,
//! stopped half way and run again; one run at a time (a held lease, two
//! triggers at once), a lapsed lease taken over; drift in the primary and
//! in a counter object repaired; the admin routes behind CRON_SECRET; the
//! cron path running the right jobs; a pass continued by the next run.

mod common;

use std::time::Duration;

use common::{eventually, int, run_cases, session_cookie, TestApp, ADMIN_TOKEN};
use qr_primary::client::{text, Value as Hv};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn string(v: &Hv) -> String {
    match v {
        Hv::Text { value } => value.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

async fn scalar(app: &TestApp, sql: &str, args: Vec<Hv>) -> i64 {
    int(&app.sql(sql, args).await[0][0])
}

/// POST /api/admin/jobs/NAME with the admin token; status and body.
async fn run_job(app: &TestApp, name: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut rb = app
        .request(reqwest::Method::POST, &format!("/api/admin/jobs/{name}"))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("send");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Runs a job that must succeed; its run record.
async fn run_ok(app: &TestApp, name: &str) -> Value {
    let (status, body) = run_job(app, name, None).await;
    assert_eq!(status, StatusCode::OK, "{name}: {body}");
    assert_eq!(body["run"]["status"], "succeeded", "{body}");
    body["run"].clone()
}

/// Runs a job twice: the second run must change nothing. The first run.
async fn run_twice(app: &TestApp, name: &str) -> Value {
    let first = run_ok(app, name).await;
    let second = run_ok(app, name).await;
    assert_eq!(second["rows_touched"], 0, "second {name} run: {second}");
    first
}

async fn day(app: &TestApp, days_ago: i64) -> String {
    string(
        &app.sql(
            "SELECT date('now', ?)",
            vec![text(format!("-{days_ago} days"))],
        )
        .await[0][0],
    )
}

async fn daily(app: &TestApp, issue: &str, days_ago: i64, counts: [i64; 4]) {
    let d = day(app, days_ago).await;
    app.sql(
        "INSERT INTO issue_daily (issue_id, day, joins, leaves, posts, actions) VALUES (?, ?, ?, ?, ?, ?)",
        vec![
            text(issue),
            text(d),
            Hv::Integer { value: counts[0] },
            Hv::Integer { value: counts[1] },
            Hv::Integer { value: counts[2] },
            Hv::Integer { value: counts[3] },
        ],
    )
    .await;
}

/// `n` new users (with `country`, or none) who are members of `issue`,
/// written straight to the primary (the counter object does not see them).
async fn admin_routes_need_the_secret(app: &TestApp) {
    for token in [None, Some("wrong"), Some("")] {
        let mut post = app.request(reqwest::Method::POST, "/api/admin/jobs/trending");
        let mut get = app.get("/api/admin/jobs");
        if let Some(t) = token {
            post = post.bearer_auth(t);
            get = get.bearer_auth(t);
        }
        for rb in [post, get] {
            let r = rb.send().await.expect("send");
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let before = scalar(app, "SELECT count(*) FROM job_runs", vec![]).await;
    assert_eq!(before, 0, "no run without the secret");
    let (status, body) = run_job(app, "nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        body["error"]["details"]["jobs"].as_array().map(Vec::len),
        Some(5)
    );
    let (status, body) = run_job(app, "trending", Some(json!({ "max_batch": 1 }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["field"], "max_batch");
    let (status, body) = run_job(app, "trending", Some(json!({ "max_batches": 0 }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = run_job(app, "trending", Some(json!([1]))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn trending_is_this_weeks_joins_minus_last_weeks(app: &TestApp) {
    let rising = app.fresh_issue("Rising").await;
    let falling = app.fresh_issue("Falling").await;
    daily(app, &rising, 0, [5, 2, 0, 0]).await;
    daily(app, &rising, 6, [2, 0, 0, 0]).await;
    daily(app, &rising, 7, [4, 0, 0, 0]).await;
    daily(app, &rising, 20, [100, 0, 0, 0]).await;
    daily(app, &falling, 10, [3, 0, 0, 0]).await;
    let first = run_twice(app, "trending").await;
    assert!(first["rows_touched"].as_i64() >= Some(2), "{first}");
    let delta = |id: String| async move {
        scalar(
            app,
            "SELECT trending_delta FROM issues WHERE id = ?",
            vec![text(id)],
        )
        .await
    };
    assert_eq!(delta(rising.clone()).await, 7 - 4);
    assert_eq!(delta(falling.clone()).await, -3);
    let list = app.get_json("/api/issues?sort=trending&limit=1").await;
    assert_eq!(list["items"][0]["id"], rising.as_str(), "{list}");
}

async fn health_scores_follow_the_formula(app: &TestApp) {
    let issue = app.fresh_issue("Healthy").await;
    app.insert_members(&issue, 10, None).await;
    daily(app, &issue, 0, [3, 1, 5, 3]).await;
    daily(app, &issue, 27, [1, 0, 0, 0]).await;
    daily(app, &issue, 28, [50, 50, 50, 50]).await; // outside the window
    let path = format!("/api/issues/{issue}");
    let cached = app.get_json(&path).await;
    assert!(cached["health"].is_null(), "{cached}");
    run_twice(app, "health").await;
    let row = app
        .sql(
            "SELECT needs_met, membership, influence, connection FROM community_health WHERE issue_id = ?",
            vec![text(issue.as_str())],
        )
        .await;
    let scores: Vec<i64> = row[0].iter().map(int).collect();
    // 10 members; in the window J=4, L=1, P=5, A=3.
    assert_eq!(scores, [80, 30, 30, 50]);
    let detail = app.get_json(&path).await;
    assert_eq!(
        detail["health"]["needs_met"], 80,
        "the cached detail was invalidated: {detail}"
    );
}

async fn countries_count_members_by_country(app: &TestApp) {
    let issue = app.fresh_issue("Countries").await;
    app.insert_members(&issue, 3, Some("GB")).await;
    app.insert_members(&issue, 1, Some("FR")).await;
    app.insert_members(&issue, 2, None).await;
    app.sql(
        "INSERT INTO country_breakdown (id, issue_id, country_code, rioter_count) VALUES (?, ?, 'US', 9)",
        vec![text(uuid::Uuid::new_v4().to_string()), text(issue.as_str())],
    )
    .await;
    let path = format!("/api/issues/{issue}/countries");
    app.get_json(&path).await;
    run_twice(app, "countries").await;
    let rows = app
        .sql(
            "SELECT country_code, rioter_count FROM country_breakdown WHERE issue_id = ? ORDER BY country_code",
            vec![text(issue.as_str())],
        )
        .await;
    let got: Vec<(String, i64)> = rows.iter().map(|r| (string(&r[0]), int(&r[1]))).collect();
    assert_eq!(got, [("FR".to_owned(), 1), ("GB".to_owned(), 3)]);
    let api = app.get_json(&path).await;
    assert_eq!(api["items"][0]["country_code"], "GB", "{api}");
}

async fn join(app: &TestApp, issue: &str, body: Option<Value>) -> Value {
    let mut rb = app.request(reqwest::Method::POST, &format!("/api/issues/{issue}/join"));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("join");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(session_cookie(r.headers()).is_some());
    r.json().await.expect("json")
}

async fn wait_for_count(app: &TestApp, issue: &str, want: i64) {
    eventually("the issue's count", Duration::from_secs(15), || async {
        let n = scalar(
            app,
            "SELECT rioter_count FROM issues WHERE id = ?",
            vec![text(issue)],
        )
        .await;
        if n == want {
            Ok(())
        } else {
            Err(format!("it is {n}, not {want}"))
        }
    })
    .await
}

async fn reconcile_repairs_drift_in_the_primary_and_the_counter(app: &TestApp) {
    let issue = app.fresh_issue("Drifting").await;
    let org = app.fresh_organisation("Drifting council").await;
    app.link_organisation(&issue, &org).await;
    join(app, &issue, Some(json!({ "organisation_id": org }))).await;
    join(app, &issue, None).await;
    wait_for_count(app, &issue, 2).await; // the counter object flushed
                                          // Drift: wrong counts in the primary, and a member the counter object
                                          // never saw (its live count is one behind).
    app.sql(
        "UPDATE issues SET rioter_count = 40 WHERE id = ?",
        vec![text(issue.as_str())],
    )
    .await;
    app.sql(
        "UPDATE issue_organisation SET rioter_count = 9 WHERE issue_id = ?",
        vec![text(issue.as_str())],
    )
    .await;
    app.insert_members(&issue, 1, None).await;

    let first = run_twice(app, "reconcile_counts").await;
    let corrections = first["details"]["corrections"]
        .as_array()
        .expect("corrections");
    let mine: Vec<&Value> = corrections
        .iter()
        .filter(|c| c["issue_id"] == issue.as_str())
        .collect();
    assert!(
        mine.contains(&&json!({ "issue_id": issue, "rioter_count": { "was": 40, "now": 3 } })),
        "{first}"
    );
    assert!(
        mine.contains(&&json!({ "issue_id": issue, "organisation_id": org, "rioter_count": { "was": 9, "now": 1 } })),
        "{first}"
    );
    assert!(
        mine.contains(&&json!({ "issue_id": issue, "counter": { "was": 2, "now": 3 } })),
        "the counter object was corrected too: {first}"
    );
    assert_eq!(
        scalar(
            app,
            "SELECT rioter_count FROM issues WHERE id = ?",
            vec![text(issue.as_str())]
        )
        .await,
        3
    );
    assert_eq!(
        scalar(
            app,
            "SELECT rioter_count FROM issue_organisation WHERE issue_id = ?",
            vec![text(issue.as_str())]
        )
        .await,
        1
    );
    // The live count goes on from the repaired one.
    let next = join(app, &issue, None).await;
    assert_eq!(next["rioter_count"], 4, "{next}");
    wait_for_count(app, &issue, 4).await;
    let logged = admin_json(app, "/api/admin/jobs?job=reconcile_counts&limit=2").await;
    assert_eq!(logged["runs"][1]["id"], first["id"], "{logged}");
    assert!(logged["runs"][1]["details"]["corrections"].is_array());
}

async fn archive_feed_moves_old_posts_exactly_once(app: &TestApp) {
    let a = app.fresh_issue("Old feed A").await;
    let b = app.fresh_issue("Old feed B").await;
    // 10,000 posts between 91 and 100 days old on two issues, and recent
    // ones (89 days, a day) that stay.
    app.sql(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) \
         INSERT INTO feed (id, issue_id, content, created_at) \
         SELECT 'arch-' || i, CASE i % 2 WHEN 0 THEN ?1 ELSE ?2 END, 'old post ' || i, \
           strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-91 days', printf('-%d minutes', i)) FROM n",
        vec![text(a.as_str()), text(b.as_str())],
    )
    .await;
    for (id, age) in [("keep-89d", "-89 days"), ("keep-1d", "-1 days")] {
        app.sql(
            "INSERT INTO feed (id, issue_id, content, created_at) \
             VALUES (?, ?, 'recent', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?))",
            vec![text(id), text(a.as_str()), text(age)],
        )
        .await;
    }
    let old = scalar(
        app,
        "SELECT count(*) FROM feed WHERE created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-90 days')",
        vec![],
    )
    .await;
    assert!(old >= 10_000);
    let all = scalar(app, "SELECT count(*) FROM feed_all", vec![]).await;
    let feed_path = format!("/api/issues/{a}/feed?limit=100");
    app.get_json(&feed_path).await;

    let exactly_once = || async {
        assert_eq!(
            scalar(app, "SELECT count(*) FROM feed_all", vec![]).await,
            all
        );
        assert_eq!(
            scalar(app, "SELECT count(DISTINCT id) FROM feed_all", vec![]).await,
            all
        );
        assert_eq!(
            scalar(
                app,
                "SELECT count(*) FROM feed JOIN feed_archive USING (id)",
                vec![]
            )
            .await,
            0
        );
    };
    // A run stopped half way: three batches, then it ends.
    let (status, part) = run_job(app, "archive_feed", Some(json!({ "max_batches": 3 }))).await;
    assert_eq!(status, StatusCode::OK, "{part}");
    assert_eq!(part["run"]["rows_touched"], 1500);
    assert_eq!(part["run"]["more"], true);
    exactly_once().await;
    // And one that died holding its lease.
    app.sql(
        "INSERT INTO job_runs (id, job, status, lease_until) VALUES (?, 'archive_feed', 'running', '2000-01-01T00:00:00.000Z')",
        vec![text(uuid::Uuid::new_v4().to_string())],
    )
    .await;
    let rest = run_twice(app, "archive_feed").await;
    assert_eq!(rest["rows_touched"].as_i64(), Some(old - 1500), "{rest}");
    assert_eq!(rest["more"], false);
    exactly_once().await;
    assert_eq!(
        scalar(
            app,
            "SELECT count(*) FROM feed_archive WHERE id LIKE 'arch-%'",
            vec![]
        )
        .await,
        10_000
    );
    assert_eq!(
        scalar(
            app,
            "SELECT count(*) FROM feed WHERE id IN ('keep-89d', 'keep-1d')",
            vec![]
        )
        .await,
        2
    );
    let feed = app.get_json(&feed_path).await;
    let posts = feed["items"].as_array().expect("items");
    assert_eq!(posts.len(), 100, "{feed}");
    assert_eq!(posts[0]["archived"], false);
    assert_eq!(
        posts[2]["archived"], true,
        "archived posts read through feed_all"
    );
}

async fn a_held_lease_refuses_and_two_triggers_run_once(app: &TestApp) {
    let held = uuid::Uuid::new_v4().to_string();
    app.sql(
        "INSERT INTO job_runs (id, job, status, lease_until) \
         VALUES (?, 'countries', 'running', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+60 seconds'))",
        vec![text(held.as_str())],
    )
    .await;
    let (status, body) = run_job(app, "countries", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "job_running");
    assert_eq!(body["error"]["details"]["running"]["id"], held.as_str());
    app.sql(
        "UPDATE job_runs SET status = 'failed', lease_until = NULL, finished_at = started_at WHERE id = ?",
        vec![text(held.as_str())],
    )
    .await;

    // Four triggers at once: each either runs or is told one is running,
    // and no two runs overlap.
    let results = futures::future::join_all((0..4).map(|_| run_job(app, "health", None))).await;
    assert!(
        results.iter().any(|(s, _)| *s == StatusCode::OK),
        "{results:?}"
    );
    for (status, body) in &results {
        if *status == StatusCode::CONFLICT {
            assert_eq!(body["error"]["code"], "job_running");
        } else {
            assert_eq!(*status, StatusCode::OK, "{body}");
        }
    }
    let overlapping = scalar(
        app,
        "SELECT count(*) FROM job_runs a JOIN job_runs b ON a.job = b.job AND a.id < b.id \
         WHERE a.job = 'health' AND a.started_at < coalesce(b.finished_at, '9') \
           AND b.started_at < coalesce(a.finished_at, '9')",
        vec![],
    )
    .await;
    assert_eq!(overlapping, 0, "no two runs of a job overlap");
}

async fn a_lapsed_lease_is_taken_over(app: &TestApp) {
    let dead = uuid::Uuid::new_v4().to_string();
    app.sql(
        "INSERT INTO job_runs (id, job, status, started_at, lease_until) \
         VALUES (?, 'trending', 'running', '2026-01-01T00:00:00.000Z', '2026-01-01T00:02:00.000Z')",
        vec![text(dead.as_str())],
    )
    .await;
    let run = run_ok(app, "trending").await;
    assert_eq!(run["details"]["took_over_lapsed"], 1, "{run}");
    let row = app
        .sql(
            "SELECT status, error FROM job_runs WHERE id = ?",
            vec![text(dead.as_str())],
        )
        .await;
    assert_eq!(string(&row[0][0]), "failed");
    assert!(string(&row[0][1]).starts_with("lease expired"));
}

async fn runs_are_listed_newest_first(app: &TestApp) {
    let all = admin_json(app, "/api/admin/jobs?limit=100").await;
    let runs = all["runs"].as_array().expect("runs");
    assert!(runs.len() >= 5, "{all}");
    let started: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["started_at"].as_str())
        .collect();
    assert!(started.windows(2).all(|w| w[0] >= w[1]), "{started:?}");
    let one = admin_json(app, "/api/admin/jobs?job=health&limit=1").await;
    assert_eq!(one["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["runs"][0]["job"], "health");
    assert!(one["runs"][0]["duration_ms"].as_i64() >= Some(0), "{one}");
    for bad in ["job=nope", "limit=0", "limit=101", "limit=x"] {
        let r = app
            .get(&format!("/api/admin/jobs?{bad}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

async fn runs_by_job(app: &TestApp) -> Vec<(String, i64)> {
    app.sql(
        "SELECT job, count(*) FROM job_runs WHERE status <> 'running' GROUP BY job ORDER BY job",
        vec![],
    )
    .await
    .iter()
    .map(|r| (string(&r[0]), int(&r[1])))
    .collect()
}

/// Triggers a cron through wrangler's test endpoint and waits until the
/// runs it should start are recorded.
async fn trigger(app: &TestApp, cron: &str, jobs: &[&str]) {
    let before = runs_by_job(app).await;
    let r = app
        .get(&format!(
            "/cdn-cgi/handler/scheduled?cron={}",
            cron.replace(' ', "+")
        ))
        .send()
        .await
        .expect("trigger");
    let status = r.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        r.text().await.unwrap_or_default()
    );
    let count = |runs: &[(String, i64)], job: &str| {
        runs.iter().find(|(j, _)| j == job).map_or(0, |(_, n)| *n)
    };
    let after = eventually(cron, Duration::from_secs(30), || async {
        let after = runs_by_job(app).await;
        let done = jobs
            .iter()
            .all(|j| count(&after, j) == count(&before, j) + 1);
        if done {
            Ok(after)
        } else {
            Err(format!("runs {before:?} -> {after:?}"))
        }
    })
    .await;
    for (job, _) in &after {
        if !jobs.contains(&job.as_str()) {
            assert_eq!(count(&after, job), count(&before, job), "{cron} ran {job}");
        }
    }
}

async fn cron_triggers_run_their_jobs(app: &TestApp) {
    trigger(app, "30 * * * *", &["archive_feed"]).await;
    trigger(app, "*/15 * * * *", &["reconcile_counts", "trending"]).await;
    trigger(app, "0 * * * *", &["health", "countries"]).await;
    // A job whose lease is held is skipped; the trigger's other job runs.
    let held = uuid::Uuid::new_v4().to_string();
    app.sql(
        "INSERT INTO job_runs (id, job, status, lease_until) \
         VALUES (?, 'trending', 'running', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+60 seconds'))",
        vec![text(held.as_str())],
    )
    .await;
    trigger(app, "*/15 * * * *", &["reconcile_counts"]).await;
    app.sql(
        "UPDATE job_runs SET status = 'failed', lease_until = NULL, finished_at = started_at WHERE id = ?",
        vec![text(held.as_str())],
    )
    .await;
    let before = runs_by_job(app).await;
    app.get("/cdn-cgi/handler/scheduled?cron=1+2+3+4+5")
        .send()
        .await
        .expect("trigger");
    // Then a known one: once its run is recorded, the unknown one (sent
    // first) has been handled too, and it ran nothing.
    trigger(app, "30 * * * *", &["archive_feed"]).await;
    let after = runs_by_job(app).await;
    for (job, n) in &after {
        let was = before.iter().find(|(j, _)| j == job).map_or(0, |(_, n)| *n);
        let want = was + i64::from(job == "archive_feed");
        assert_eq!(*n, want, "an unknown cron runs nothing ({job})");
    }
}

async fn a_pass_continues_in_the_next_run(app: &TestApp) {
    let limits = json!({ "batch_size": 3, "max_batches": 1 });
    let (status, first) = run_job(app, "trending", Some(limits.clone())).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["run"]["more"], true);
    let at = first["run"]["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    let (_, second) = run_job(app, "trending", Some(limits.clone())).await;
    let next = second["run"]["cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    assert!(next > at, "{at} then {next}");
    let issues = scalar(app, "SELECT count(*) FROM issues", vec![]).await;
    let mut batches = 2;
    loop {
        let (_, run) = run_job(app, "trending", Some(limits.clone())).await;
        batches += 1;
        if run["run"]["more"] == false {
            assert!(run["run"]["cursor"].is_null());
            break;
        }
        assert!(batches <= issues / 3 + 1, "the pass never ends: {run}");
    }
    assert_eq!(batches, issues / 3 + 1, "every issue once per pass");
}

/// GET an admin route with the token; the body of a 200.
async fn admin_json(app: &TestApp, path: &str) -> Value {
    let r = app
        .get(path)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("send");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs() {
    // Cron triggers cannot be sent to a Worker with assets under wrangler
    // dev; see `without_assets`.
    let app = TestApp::builder()
        .edit_config(common::without_assets)
        .start()
        .await;
    run_cases(vec![
        (
            "admin routes need the secret",
            Box::pin(admin_routes_need_the_secret(&app)),
        ),
        (
            "trending",
            Box::pin(trending_is_this_weeks_joins_minus_last_weeks(&app)),
        ),
        ("health", Box::pin(health_scores_follow_the_formula(&app))),
        (
            "countries",
            Box::pin(countries_count_members_by_country(&app)),
        ),
        (
            "reconcile_counts",
            Box::pin(reconcile_repairs_drift_in_the_primary_and_the_counter(&app)),
        ),
        (
            "archive_feed",
            Box::pin(archive_feed_moves_old_posts_exactly_once(&app)),
        ),
        (
            "one run at a time",
            Box::pin(a_held_lease_refuses_and_two_triggers_run_once(&app)),
        ),
        (
            "a lapsed lease",
            Box::pin(a_lapsed_lease_is_taken_over(&app)),
        ),
        (
            "runs are listed",
            Box::pin(runs_are_listed_newest_first(&app)),
        ),
        (
            "cron triggers",
            Box::pin(cron_triggers_run_their_jobs(&app)),
        ),
        (
            "a pass continues",
            Box::pin(a_pass_continues_in_the_next_run(&app)),
        ),
    ])
    .await;
}
