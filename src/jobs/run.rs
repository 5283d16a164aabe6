//! Running jobs in the Worker: a run (lease, batches, record, cache tags),
//! each job's batch, the admin routes and the cron entry point.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{json, Value};
use worker::{Env, Response};

use super::countries::{self, Breakdown};
use super::health::{self, Activity, Scores};
use super::sql::{self, HEARTBEAT_LEN};
use super::{jobs_for_cron, Job, Plan, Progress, Tags, MAX_CORRECTIONS_LISTED, MAX_COUNTER_CALLS};
use crate::domain::time::now_ms;
use crate::edge::cache;
use crate::edge::reads;
use crate::http::config::Config;
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult, Code};
use crate::objects::issue_counter;
use crate::store::db::{Query, Record, Written};

/// What the primary said when the run took its lease.
struct Clock {
    today: String,
    archive_before: String,
    /// Where the last run stopped.
    cursor: Option<String>,
}

/// A finished run, as the admin routes show it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub job: &'static str,
    pub status: &'static str,
    pub rows_touched: u64,
    pub batches: u32,
    /// The pass is not complete: the next run continues at `cursor`.
    pub more: bool,
    pub cursor: Option<String>,
    pub details: Value,
}

/// What one batch did.
struct Batch {
    touched: u64,
    progress: Progress,
}

/// What a run collects across its batches.
#[derive(Default)]
struct Collected {
    tags: Tags,
    /// The first [`MAX_CORRECTIONS_LISTED`] corrections; `corrected`
    /// counts them all.
    corrections: Vec<Value>,
    corrected: usize,
    counter_calls: usize,
    counter_failures: usize,
    /// Live counter objects not asked this run (the call budget was spent).
    counter_skipped: usize,
}

impl Collected {
    /// Logs and lists a correction (`what` names the count corrected).
    fn correction(&mut self, what: &str, entry: Value) {
        self.corrected += 1;
        if self.corrections.len() < MAX_CORRECTIONS_LISTED {
            tracing::warn!(job = "reconcile_counts", correction = %entry, "corrected {what}");
            self.corrections.push(entry);
        }
    }
}

fn str_of(r: &Record, key: &str) -> Option<String> {
    r.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn int_of(r: &Record, key: &str) -> i64 {
    r.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// The statement results after the heartbeat.
fn own(written: Vec<Written>) -> Vec<Written> {
    written.into_iter().skip(HEARTBEAT_LEN).collect()
}

/// Rows the statements changed; the issue of each statement that changed
/// one (`ids[i]` for `written[i]`) is tagged for invalidation.
fn tag_changed(ids: &[String], written: &[Written], tags: &mut Tags) -> u64 {
    let mut changed = 0;
    for (id, w) in ids.iter().zip(written) {
        if w.affected > 0 {
            changed += w.affected;
            tags.add(reads::issue_tag_of(id));
        }
    }
    changed
}

/// A batch whose fence failed lost its lease to another run.
fn lease_lost(e: AppError) -> AppError {
    let overflow = e
        .details
        .as_ref()
        .is_some_and(|d| d.to_string().contains("integer overflow"));
    if overflow {
        AppError::new(
            409,
            Code::LeaseLost,
            "another run of this job took over its lease; this run stopped",
        )
    } else {
        e
    }
}

fn bounds(written: &[Written], at: usize) -> (u64, Option<String>) {
    let row = written.get(at).and_then(|w| w.rows.first());
    (
        row.map_or(0, |r| int_of(r, "n")).max(0) as u64,
        row.and_then(|r| str_of(r, "last")),
    )
}

/// Runs `job` now: takes its lease (409 `job_running` if another run holds
/// it), works through batches within `plan`, records the run, and
/// invalidates the cache tags of what it changed.
pub async fn run(ctx: &Ctx, job: Job, plan: Plan) -> AppResult<Report> {
    let db = ctx.db();
    let run_id = uuid::Uuid::new_v4().to_string();
    let taken = db.transaction(sql::acquire(job, &run_id)).await?;
    let lapsed = taken.first().map_or(0, |w| w.affected);
    let ours = taken.get(1).is_some_and(|w| w.affected == 1);
    let row = taken
        .get(2)
        .and_then(|w| w.rows.first())
        .cloned()
        .unwrap_or_default();
    if !ours {
        let holder = str_of(&row, "holder")
            .and_then(|h| serde_json::from_str::<Value>(&h).ok())
            .unwrap_or(Value::Null);
        return Err(AppError::new(
            409,
            Code::JobRunning,
            format!("{} is running already; try again later", job.name()),
        )
        .with_details(json!({ "job": job.name(), "running": holder })));
    }
    if lapsed > 0 {
        tracing::warn!(job = job.name(), run_id = %run_id, lapsed, "took over a lapsed lease");
    }
    let clock = Clock {
        today: str_of(&row, "today").unwrap_or_default(),
        archive_before: str_of(&row, "archive_before").unwrap_or_default(),
        cursor: str_of(&row, "cursor"),
    };

    let started = now_ms();
    let mut cursor = clock.cursor.clone();
    let mut touched = 0u64;
    let mut batches = 0u32;
    let mut more = true;
    let mut collected = Collected::default();
    let mut failure = None;
    while plan.another_batch(batches, now_ms().saturating_sub(started)) {
        let step = Step {
            ctx,
            run_id: &run_id,
            clock: &clock,
            cursor: cursor.as_deref(),
            touched,
            size: plan.batch_size,
        };
        match batch(job, &step, &mut collected).await {
            Ok(b) => {
                touched += b.touched;
                batches += 1;
                cursor = b.progress.cursor().map(str::to_owned);
                if b.progress == Progress::Done {
                    more = false;
                    break;
                }
            }
            Err(e) => {
                failure = Some(lease_lost(e));
                break;
            }
        }
    }

    let mut details = json!({
        "batches": batches,
        "took_over_lapsed": lapsed,
        "cache_tags": collected.tags.tags.len() + collected.tags.dropped,
    });
    if job == Job::ReconcileCounts {
        details["corrected"] = Value::from(collected.corrected);
        details["corrections"] = Value::from(collected.corrections.clone());
        details["counter_calls"] = Value::from(collected.counter_calls);
        details["counter_failures"] = Value::from(collected.counter_failures);
        details["counter_skipped"] = Value::from(collected.counter_skipped);
    }
    let status = if failure.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    // job_runs is for operators: an internal error keeps its cause there.
    let error = failure.as_ref().map(|e| match &e.details {
        Some(d) if e.code == Code::Internal => format!("{}: {}", e.code, d["log"]),
        _ => format!("{}: {}", e.code, e.message),
    });
    let finish = sql::finish(
        &run_id,
        status,
        touched,
        error.as_deref(),
        cursor.as_deref(),
        Some(&details.to_string()),
    );
    match db.transaction(vec![finish]).await {
        Ok(w) if w.first().is_some_and(|w| w.affected == 1) => {}
        Ok(_) => {
            tracing::warn!(job = job.name(), run_id = %run_id, "the run lost its lease before it finished")
        }
        Err(e) => {
            tracing::error!(job = job.name(), run_id = %run_id, code = %e.code, details = ?e.details, "cannot record the run's end; its lease will lapse")
        }
    }
    if !collected.tags.tags.is_empty() {
        if let Err(e) = cache::invalidate(ctx, &collected.tags.tags).await {
            tracing::warn!(job = job.name(), code = %e.code, details = ?e.details, "cannot invalidate cache tags after a job");
        }
    }
    tracing::info!(
        job = job.name(),
        run_id = %run_id,
        status,
        rows_touched = touched,
        batches,
        duration_ms = now_ms().saturating_sub(started),
        "job run"
    );
    if let Some(mut e) = failure {
        let mut d = e.details.take().unwrap_or_else(|| json!({}));
        if d.is_object() {
            d["run_id"] = Value::from(run_id.clone());
        }
        e.details = Some(d);
        return Err(e);
    }
    Ok(Report {
        id: run_id,
        job: job.name(),
        status,
        rows_touched: touched,
        batches,
        more,
        cursor,
        details,
    })
}

/// One batch to do: where it starts, and what the run did before it.
struct Step<'a> {
    ctx: &'a Ctx,
    run_id: &'a str,
    clock: &'a Clock,
    cursor: Option<&'a str>,
    touched: u64,
    size: u32,
}

impl Step<'_> {
    /// The statements every batch transaction starts with.
    fn heartbeat(&self) -> Vec<Query> {
        sql::heartbeat(self.run_id, self.cursor, self.touched)
    }
}

async fn batch(job: Job, step: &Step<'_>, collected: &mut Collected) -> AppResult<Batch> {
    match job {
        Job::Trending => trending_batch(step, collected).await,
        Job::ReconcileCounts => reconcile_batch(step, collected).await,
        Job::Health => health_batch(step, collected).await,
        Job::Countries => countries_batch(step, collected).await,
        Job::ArchiveFeed => archive_batch(step, collected).await,
    }
}

/// trending: one statement per batch.
async fn trending_batch(step: &Step<'_>, collected: &mut Collected) -> AppResult<Batch> {
    let (db, cursor, size) = (step.ctx.db(), step.cursor, step.size);
    let mut qs = step.heartbeat();
    qs.push(sql::batch_bounds(cursor, size));
    qs.push(sql::trending(cursor, size, &step.clock.today));
    let w = own(db.transaction(qs).await?);
    let (n, last) = bounds(&w, 0);
    let changed = w.get(1).cloned().unwrap_or_default();
    if changed.affected > 0 {
        collected.tags.add(reads::ISSUES_TAG.to_owned());
    }
    for r in &changed.rows {
        if let Some(id) = str_of(r, "id") {
            collected.tags.add(reads::issue_tag_of(&id));
        }
    }
    Ok(Batch {
        touched: changed.affected,
        progress: Progress::after(n, size, last),
    })
}

/// reconcile_counts: the primary corrected in one transaction, then the
/// counter objects asked to recount.
async fn reconcile_batch(step: &Step<'_>, collected: &mut Collected) -> AppResult<Batch> {
    let (db, cursor, size) = (step.ctx.db(), step.cursor, step.size);
    let mut qs = step.heartbeat();
    qs.push(sql::batch_bounds(cursor, size));
    qs.extend(sql::reconcile(cursor, size, &step.clock.today));
    let w = own(db.transaction(qs).await?);
    let (n, last) = bounds(&w, 0);
    let rows = |i: usize| w.get(i).map(|w| w.rows.clone()).unwrap_or_default();
    let affected = |i: usize| w.get(i).map_or(0, |w| w.affected);
    // Objects of corrected issues first, then the live ones.
    let mut drifted = BTreeSet::new();
    for r in rows(1) {
        let id = str_of(&r, "id").unwrap_or_default();
        let entry = json!({
            "issue_id": id,
            "rioter_count": { "was": int_of(&r, "was"), "now": int_of(&r, "now") },
        });
        collected.correction("an issue's rioter_count", entry);
        collected.tags.add(reads::issue_tag_of(&id));
        drifted.insert(id);
    }
    for r in rows(2) {
        let id = str_of(&r, "issue_id").unwrap_or_default();
        let org = str_of(&r, "organisation_id").unwrap_or_default();
        let entry = json!({
            "issue_id": id, "organisation_id": org,
            "rioter_count": { "was": int_of(&r, "was"), "now": int_of(&r, "now") },
        });
        collected.correction("an organisation's rioter_count", entry);
        collected.tags.add(reads::issue_tag_of(&id));
        collected.tags.add(reads::org_tag_of(&org));
        drifted.insert(id);
    }
    if affected(3) + affected(4) > 0 {
        collected.tags.add(reads::ISSUES_TAG.to_owned());
    }
    let live = rows(5)
        .iter()
        .filter_map(|r| str_of(r, "id"))
        .filter(|id| !drifted.contains(id))
        .collect::<Vec<_>>();
    let recount = drifted.into_iter().chain(live).collect();
    recount_counters(step.ctx, recount, collected).await;
    Ok(Batch {
        touched: affected(3) + affected(4),
        progress: Progress::after(n, size, last),
    })
}

/// health: read the batch's activity, compute the scores here, write those
/// that differ.
async fn health_batch(step: &Step<'_>, collected: &mut Collected) -> AppResult<Batch> {
    let (db, cursor, size) = (step.ctx.db(), step.cursor, step.size);
    let mut qs = step.heartbeat();
    let q = sql::health_inputs(cursor, size, &step.clock.today);
    let rows = db.query(&q.sql, q.args).await?;
    let mut ids = Vec::new();
    for r in &rows {
        let Some(id) = str_of(r, "id") else { continue };
        let wanted = health::scores(&Activity {
            members: int_of(r, "members"),
            joins: int_of(r, "joins"),
            leaves: int_of(r, "leaves"),
            posts: int_of(r, "posts"),
            actions: int_of(r, "actions"),
        });
        let stored = r.get("needs_met").filter(|v| !v.is_null()).map(|_| Scores {
            needs_met: int_of(r, "needs_met"),
            membership: int_of(r, "membership"),
            influence: int_of(r, "influence"),
            connection: int_of(r, "connection"),
        });
        if stored != Some(wanted) {
            qs.push(sql::health_upsert(&id, &wanted));
            ids.push(id);
        }
    }
    let w = own(db.transaction(qs).await?);
    let changed = tag_changed(&ids, &w, &mut collected.tags);
    let last = rows.last().and_then(|r| str_of(r, "id"));
    Ok(Batch {
        touched: changed,
        progress: Progress::after(rows.len() as u64, size, last),
    })
}

/// countries: read what the breakdown should be and is, write the difference.
async fn countries_batch(step: &Step<'_>, collected: &mut Collected) -> AppResult<Batch> {
    let (db, cursor, size) = (step.ctx.db(), step.cursor, step.size);
    let mut qs = step.heartbeat();
    let read = db.queries(sql::countries_inputs(cursor, size)).await?;
    let rows = |i: usize| read.get(i).cloned().unwrap_or_default();
    let breakdown = |rows: Vec<Record>| -> Breakdown {
        rows.iter()
            .filter_map(|r| {
                Some((
                    (str_of(r, "issue_id")?, str_of(r, "country_code")?),
                    int_of(r, "n"),
                ))
            })
            .collect()
    };
    let issues = rows(0);
    let changes = countries::diff(&breakdown(rows(1)), &breakdown(rows(2)));
    let mut ids = Vec::new();
    for change in &changes {
        let id = match change {
            countries::Change::Set { issue_id, .. }
            | countries::Change::Remove { issue_id, .. } => issue_id.clone(),
        };
        qs.push(sql::country_change(
            change,
            &uuid::Uuid::new_v4().to_string(),
        ));
        ids.push(id);
    }
    let w = own(db.transaction(qs).await?);
    let changed = tag_changed(&ids, &w, &mut collected.tags);
    let last = issues.last().and_then(|r| str_of(r, "id"));
    Ok(Batch {
        touched: changed,
        progress: Progress::after(issues.len() as u64, size, last),
    })
}

/// archive_feed: copy, then delete, the oldest posts, in one transaction.
async fn archive_batch(step: &Step<'_>, collected: &mut Collected) -> AppResult<Batch> {
    let (db, size) = (step.ctx.db(), step.size);
    let mut qs = step.heartbeat();
    qs.extend(sql::archive(&step.clock.archive_before, size));
    let w = own(db.transaction(qs).await?);
    for r in w.first().map(|w| w.rows.as_slice()).unwrap_or_default() {
        if let Some(id) = str_of(r, "issue_id") {
            collected.tags.add(format!("feed:{id}"));
        }
    }
    let moved = w.get(2).map_or(0, |w| w.affected);
    Ok(Batch {
        touched: moved,
        progress: Progress::after(moved, size, None),
    })
}

/// Asks the counter objects of `issues` to take their counts again (after
/// the primary was corrected, or because they are live), and records the
/// ones whose count was wrong.
async fn recount_counters(ctx: &Ctx, issues: Vec<String>, collected: &mut Collected) {
    for id in issues {
        if collected.counter_calls >= MAX_COUNTER_CALLS {
            collected.counter_skipped += 1;
            continue;
        }
        collected.counter_calls += 1;
        match issue_counter::recount(ctx, &id).await {
            Ok(r) => {
                if let Some(before) = r.before.filter(|b| *b != r.after) {
                    let entry = json!({
                        "issue_id": id, "counter": { "was": before, "now": r.after },
                    });
                    collected.correction("an issue counter object", entry);
                    collected.tags.add(reads::issue_tag_of(&id));
                }
            }
            Err(e) => {
                collected.counter_failures += 1;
                tracing::warn!(issue_id = %id, code = %e.code, details = ?e.details, "reconcile_counts: cannot recount a counter object");
            }
        }
    }
}

/// The job a path segment names; 404 listing the jobs otherwise.
fn job_named(name: &str) -> AppResult<Job> {
    Job::parse(name).ok_or_else(|| {
        AppError::not_found(format!("no job named {name:.60}"))
            .with_details(json!({ "jobs": Job::names() }))
    })
}

/// An optional whole number in the body.
fn body_int(body: &Value, field: &str) -> AppResult<Option<i64>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| AppError::validation(field, "must be a whole number")),
    }
}

/// `POST /api/admin/jobs/:name`, optional body `{"max_batches", "batch_size"}`.
/// Behind `CRON_SECRET`, checked by the pipeline before the body is read.
pub async fn run_now(ctx: &Ctx, name: &str, body: Option<&Value>) -> AppResult<Response> {
    let job = job_named(name)?;
    let empty = json!({});
    let body = body.unwrap_or(&empty);
    let fields = body
        .as_object()
        .ok_or_else(|| AppError::validation("body", "must be a JSON object"))?;
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["max_batches", "batch_size"].contains(&k.as_str()))
    {
        return Err(AppError::validation(
            unknown,
            "unknown field (max_batches, batch_size)",
        ));
    }
    let plan = Plan::with_overrides(
        job,
        body_int(body, "max_batches")?,
        body_int(body, "batch_size")?,
    )
    .map_err(|(field, problem)| AppError::validation(field, problem))?;
    let report = run(ctx, job, plan).await?;
    Ok(json_response(200, &json!({ "run": report }))?)
}

/// `GET /api/admin/jobs?job=NAME&limit=N`: recent runs, newest first.
/// Behind `CRON_SECRET`, checked by the pipeline.
pub async fn list(ctx: &Ctx, params: &[(String, String)]) -> AppResult<Response> {
    let mut job = None;
    let mut limit = 20;
    for (k, v) in params {
        match k.as_str() {
            "job" => {
                job = Some(Job::parse(v).ok_or_else(|| {
                    AppError::validation("job", format!("one of {}", Job::names().join(", ")))
                })?)
            }
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| AppError::validation("limit", "must be from 1 to 100"))?
            }
            _ => {}
        }
    }
    let q = sql::list_runs(job, limit);
    let mut rows = ctx.db().query(&q.sql, q.args).await?;
    for r in &mut rows {
        if let Some(Value::String(d)) = r.get("details") {
            let parsed = serde_json::from_str(d).unwrap_or(Value::Null);
            r.insert("details".to_owned(), parsed);
        }
    }
    Ok(json_response(200, &json!({ "runs": rows }))?)
}

/// The cron entry point: runs the trigger's jobs one after another. A job
/// whose lease is held is skipped (its running run does the work).
pub async fn scheduled(cron: &str, env: Env) {
    let jobs = jobs_for_cron(cron);
    if jobs.is_empty() {
        tracing::warn!(cron, "no job is scheduled for this cron trigger");
        return;
    }
    let config = match Config::load(&env) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(cron, error = %e, "configuration; no job ran");
            return;
        }
    };
    let request_id = format!("cron-{}", uuid::Uuid::new_v4());
    let ctx = Ctx::for_object(config, env, request_id);
    for job in jobs {
        match run(&ctx, *job, Plan::for_job(*job)).await {
            Ok(_) => {}
            Err(e) if e.code == Code::JobRunning => {
                tracing::info!(cron, job = job.name(), "skipped: a run holds the lease")
            }
            Err(e) => {
                tracing::error!(cron, job = job.name(), code = %e.code, details = ?e.details, "job failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fence_is_a_lost_lease_and_other_errors_stay() {
        let fenced = AppError::internal("statement failed: integer overflow (SQLITE_ERROR)");
        assert_eq!(lease_lost(fenced).code, "lease_lost");
        let busy = AppError::primary_unavailable("busy");
        assert_eq!(lease_lost(busy.clone()), busy);
    }

    #[test]
    fn corrections_are_counted_and_listed_up_to_a_bound() {
        let mut c = Collected::default();
        for i in 0..MAX_CORRECTIONS_LISTED + 3 {
            c.correction("a count", json!({ "i": i }));
        }
        assert_eq!(c.corrected, MAX_CORRECTIONS_LISTED + 3);
        assert_eq!(c.corrections.len(), MAX_CORRECTIONS_LISTED);
    }
}
