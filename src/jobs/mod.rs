//! Scheduled jobs: what each job is, when it runs, how a run holds its
//! lease, and how much work a run does. Plain Rust (no JS runtime), tested
//! natively; [`run`] is the wiring to the Worker.
//!
//! **Runs.** Every run is a row of `job_runs`. A run starts by taking the
//! job's lease in one transaction: a `running` row whose lease has lapsed
//! (its run crashed or was cut off) is marked `failed`, then the new row is
//! inserted only if no `running` row of the job is left. Two triggers at
//! the same moment are serialised by the primary (`BEGIN IMMEDIATE`), so
//! exactly one of them gets the lease; the other is told `job_running`.
//!
//! **Batches.** A run works in batches of issues (or posts), each one
//! transaction. Each batch transaction starts with the lease's heartbeat:
//! it extends the lease, records the progress so far, and fails the whole
//! transaction if the lease is no longer this run's ([`FENCE`]), so a run
//! that lost its lease cannot write. A run stops after [`Plan::max_batches`]
//! batches or when its time budget is spent, and records where it stopped
//! (`cursor`); the next run continues there. Every write is conditional on
//! the value being different, so a second run in a row changes nothing.

pub mod countries;
pub mod health;
pub mod run;
pub mod sql;

use serde::Serialize;

/// A job, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    Trending,
    Health,
    Countries,
    ReconcileCounts,
    ArchiveFeed,
}

impl Job {
    pub const ALL: [Job; 5] = [
        Job::Trending,
        Job::Health,
        Job::Countries,
        Job::ReconcileCounts,
        Job::ArchiveFeed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Job::Trending => "trending",
            Job::Health => "health",
            Job::Countries => "countries",
            Job::ReconcileCounts => "reconcile_counts",
            Job::ArchiveFeed => "archive_feed",
        }
    }

    /// A job from its exact name.
    pub fn parse(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        Job::ALL.iter().map(|j| j.name()).collect()
    }

    /// Issues (or posts, for `archive_feed`) per batch.
    pub fn batch_size(self) -> u32 {
        match self {
            // Set-based statements: the primary does the work.
            Job::Trending | Job::ReconcileCounts => 500,
            // Read, compute here, write: bounded by the write statements.
            Job::Health => 200,
            Job::Countries => 100,
            Job::ArchiveFeed => 500,
        }
    }
}

/// The cron triggers of wrangler.toml and the jobs each runs, in order.
pub const SCHEDULE: &[(&str, &[Job])] = &[
    ("*/15 * * * *", &[Job::ReconcileCounts, Job::Trending]),
    ("0 * * * *", &[Job::Health, Job::Countries]),
    ("30 * * * *", &[Job::ArchiveFeed]),
];

/// The jobs a cron trigger runs (none for a trigger we do not know).
pub fn jobs_for_cron(cron: &str) -> &'static [Job] {
    let cron = cron.split_whitespace().collect::<Vec<_>>().join(" ");
    SCHEDULE
        .iter()
        .find(|(c, _)| *c == cron)
        .map_or(&[], |(_, jobs)| *jobs)
}

/// A run holds its job's lease this long past its last heartbeat (one per
/// batch). A batch takes well under this, so only a dead run loses it.
pub const LEASE_SECS: u32 = 120;
/// A run starts no new batch after this long: well inside a Worker's
/// limits (a cron invocation may run 15 minutes; a request's `fetch` far
/// less), leaving room for the batch in flight.
pub const BUDGET_MS: u64 = 20_000;
/// Batches per run unless the caller asks for fewer.
pub const MAX_BATCHES: u32 = 50;
/// Cache tags one run invalidates at most; beyond that, cached reads catch
/// up within their fresh TTL.
pub const MAX_TAGS: usize = 50;
/// IssueCounter objects one reconcile run asks to recount at most (each
/// call is a subrequest): those of corrected issues first, then live ones.
pub const MAX_COUNTER_CALLS: usize = 200;
/// Corrections one reconcile run lists in its `details` (all are counted).
pub const MAX_CORRECTIONS_LISTED: usize = 100;

/// How much one run may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub max_batches: u32,
    pub batch_size: u32,
    pub budget_ms: u64,
}

impl Plan {
    pub fn for_job(job: Job) -> Plan {
        Plan {
            max_batches: MAX_BATCHES,
            batch_size: job.batch_size(),
            budget_ms: BUDGET_MS,
        }
    }

    /// With the operator's limits (`max_batches`, `batch_size`), checked.
    pub fn with_overrides(
        job: Job,
        max_batches: Option<i64>,
        batch_size: Option<i64>,
    ) -> Result<Plan, (&'static str, String)> {
        let mut plan = Plan::for_job(job);
        if let Some(n) = max_batches {
            plan.max_batches = u32::try_from(n)
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or(("max_batches", "must be from 1 to 1000".to_owned()))?;
        }
        if let Some(n) = batch_size {
            plan.batch_size = u32::try_from(n)
                .ok()
                .filter(|n| (1..=job.batch_size()).contains(n))
                .ok_or((
                    "batch_size",
                    format!("must be from 1 to {} for {}", job.batch_size(), job.name()),
                ))?;
        }
        Ok(plan)
    }

    /// Whether a run that has done `batches` batches in `elapsed_ms`
    /// starts another.
    pub fn another_batch(&self, batches: u32, elapsed_ms: u64) -> bool {
        batches < self.max_batches && elapsed_ms < self.budget_ms
    }
}

/// Where a batch left the pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More to do after this id (issue jobs) or more posts (archive).
    More(Option<String>),
    /// The pass is complete.
    Done,
}

impl Progress {
    /// After a batch that took `taken` of at most `limit` rows, the last
    /// of them `last`: a short batch ends the pass.
    pub fn after(taken: u64, limit: u32, last: Option<String>) -> Progress {
        if taken < u64::from(limit) {
            Progress::Done
        } else {
            Progress::More(last)
        }
    }

    /// The cursor to record: where the next run starts.
    pub fn cursor(&self) -> Option<&str> {
        match self {
            Progress::More(c) => c.as_deref(),
            Progress::Done => None,
        }
    }
}

/// Rounds `num / den` to the nearest whole number (halves up), for
/// non-negative values; 0 when `den` is 0.
pub fn ratio_round(num: i64, den: i64) -> i64 {
    if den <= 0 || num <= 0 {
        return 0;
    }
    (2 * num + den) / (2 * den)
}

/// Collects cache tags without repeats, up to [`MAX_TAGS`]; counts the rest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tags {
    pub tags: Vec<String>,
    pub dropped: usize,
}

impl Tags {
    /// Adds a tag; past [`MAX_TAGS`], one item's tag (`issue:ID`) is
    /// dropped, never a list's (`issues`, `organisations`): a list changes
    /// with any of its items, and a stale list is the staleness users see.
    pub fn add(&mut self, tag: String) {
        if self.tags.contains(&tag) {
            return;
        }
        if self.tags.len() < MAX_TAGS {
            self.tags.push(tag);
            return;
        }
        self.dropped += 1;
        if !tag.contains(':') {
            if let Some(i) = self.tags.iter().rposition(|t| t.contains(':')) {
                self.tags[i] = tag;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for job in Job::ALL {
            assert_eq!(Job::parse(job.name()), Some(job));
        }
        for bad in [
            "",
            "Trending",
            "trending ",
            "reconcile-counts",
            "all",
            "../x",
        ] {
            assert_eq!(Job::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Job::names().len(), 5);
    }

    #[test]
    fn every_job_is_scheduled_and_crons_map_to_jobs() {
        for job in Job::ALL {
            assert!(
                SCHEDULE.iter().any(|(_, jobs)| jobs.contains(&job)),
                "{} has no trigger",
                job.name()
            );
        }
        assert_eq!(
            jobs_for_cron("*/15  * * * *"),
            &[Job::ReconcileCounts, Job::Trending]
        );
        assert_eq!(jobs_for_cron("30 * * * *"), &[Job::ArchiveFeed]);
        assert!(jobs_for_cron("* * * * *").is_empty());
        assert!(jobs_for_cron("").is_empty());
    }

    #[test]
    fn a_run_stops_at_its_batch_limit_or_budget() {
        let plan = Plan {
            max_batches: 3,
            batch_size: 10,
            budget_ms: 1_000,
        };
        assert!(plan.another_batch(0, 0));
        assert!(plan.another_batch(2, 999));
        assert!(!plan.another_batch(3, 0), "batch limit");
        assert!(!plan.another_batch(1, 1_000), "budget spent");
    }

    #[test]
    fn operator_limits_are_checked() {
        let p = Plan::with_overrides(Job::ArchiveFeed, Some(3), Some(100)).expect("plan");
        assert_eq!((p.max_batches, p.batch_size), (3, 100));
        assert_eq!(
            Plan::with_overrides(Job::Trending, None, None).expect("defaults"),
            Plan::for_job(Job::Trending)
        );
        for (max, size) in [(Some(0), None), (Some(1001), None), (None, Some(0))] {
            assert!(Plan::with_overrides(Job::Health, max, size).is_err());
        }
        let (field, _) = Plan::with_overrides(Job::Countries, None, Some(101)).unwrap_err();
        assert_eq!(field, "batch_size", "above the job's own batch size");
    }

    #[test]
    fn a_short_batch_ends_the_pass() {
        assert_eq!(Progress::after(3, 10, Some("c".into())), Progress::Done);
        assert_eq!(
            Progress::after(10, 10, Some("c".into())),
            Progress::More(Some("c".into()))
        );
        assert_eq!(Progress::Done.cursor(), None);
        assert_eq!(Progress::More(Some("x".into())).cursor(), Some("x"));
    }

    #[test]
    fn ratios_round_half_up_and_never_divide_by_zero() {
        assert_eq!(ratio_round(1, 3), 0);
        assert_eq!(ratio_round(1, 2), 1);
        assert_eq!(ratio_round(2, 3), 1);
        assert_eq!(ratio_round(250, 100), 3);
        assert_eq!(ratio_round(5, 0), 0);
        assert_eq!(ratio_round(-5, 2), 0);
    }

    #[test]
    fn tags_are_unique_and_capped() {
        let mut t = Tags::default();
        t.add("issues".into());
        t.add("issues".into());
        for i in 0..MAX_TAGS + 5 {
            t.add(format!("issue:{i}"));
        }
        assert_eq!(t.tags.len(), MAX_TAGS);
        assert_eq!(t.tags[0], "issues");
        assert_eq!(t.dropped, 6);
        // A list's tag coming late still makes it, in place of an item's.
        t.add("organisations".into());
        assert_eq!(t.tags.len(), MAX_TAGS);
        assert!(t.tags.contains(&"organisations".to_owned()));
        assert_eq!(t.dropped, 7);
    }
}
