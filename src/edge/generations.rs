//! What an isolate knows of the cache tags' generations, and the log of
//! recent invalidations that keeps it current (pure: no runtime).
//!
//! A cached read's key holds its tags' generations ([`crate::edge::cache`]),
//! so before a read can be answered from memory the isolate must know each
//! tag's current generation. Reading `gen:<tag>` from KV for every tag not
//! read in the last few seconds costs a KV read for nearly every read of a
//! long tail of issues. Instead, the one [`InvalidationLog`] object keeps
//! the invalidations of the last [`LOG_WINDOW_MS`] and publishes them to one
//! KV key, [`LOG_KEY`], at most once a second. An isolate reads that key
//! every few seconds and then knows, for every tag it has seen, whether it
//! changed: a generation stays known for as long as the isolate keeps
//! reading the log without a gap, and only a tag seen for the first time
//! (or again after a gap longer than the log's window) costs a KV read of
//! its own.
//!
//! **Why this is exact.** A log says: every invalidation recorded at or
//! after `from` is in `tags`, as of `at` (the object's clock). A generation
//! the isolate learned at time `t` (a KV read of the tag, or an earlier log
//! published at `t`) is still current after applying a log if no
//! invalidation after `t` is missing from it, that is if `t >= from`
//! (less [`CLOCK_SKEW_MS`] for the distance between the isolate's clock and
//! the object's). Generations learned before `from` are forgotten and read
//! again. A log read late (KV shows a new value in other locations within
//! its propagation time) delays what an isolate learns by that much, as a
//! tag's own key would; it never skips an invalidation.
//!
//! [`InvalidationLog`]: crate::objects::InvalidationLog

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The KV key the log is published under.
pub const LOG_KEY: &str = "gen:recent";
/// How long the log keeps an invalidation. An isolate that does not read
/// the log for longer than this loses its chain and reads tags again.
pub const LOG_WINDOW_MS: u64 = 60_000;
/// The most the object's clock and an isolate's may differ by.
pub const CLOCK_SKEW_MS: u64 = 2_000;
/// How long a generation is trusted without news: after a KV read of the
/// tag, or after the last log the isolate applied.
pub const TRUST_MS: u64 = 5_000;
/// From this age of the last log read, the next read starts behind a
/// response, so under steady traffic no request waits for the log.
pub const REFRESH_MS: u64 = 3_000;
/// Generations an isolate remembers at most.
pub const KEPT: usize = 50_000;

/// The log as published: every invalidation recorded at or after `from`,
/// as of `at` (both Unix ms, the object's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Log {
    pub v: u32,
    pub from: u64,
    pub at: u64,
    /// tag -> its newest generation.
    pub tags: HashMap<String, String>,
}

impl Log {
    pub const VERSION: u32 = 1;
}

/// The newer of two generations (they are times in ms; a value that is not
/// a number loses to one that is).
pub fn newer<'a>(a: &'a str, b: &'a str) -> &'a str {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) if y > x => b,
        (Ok(_), _) => a,
        (Err(_), Ok(_)) => b,
        (Err(_), Err(_)) => a,
    }
}

/// The generation the log keeps when `recorded` arrives for a tag it holds
/// at `held`: always a move on (the larger of the writer's value and the
/// held one plus one), whatever order records arrive in and whatever the
/// writers' clocks say. A writer whose clock is behind would otherwise
/// record a generation some isolates already hold, and they would not see
/// its write.
pub fn next_generation(held: Option<&str>, recorded: &str) -> String {
    match (held.map(str::parse::<u64>), recorded.parse::<u64>()) {
        (Some(Ok(h)), Ok(r)) => r.max(h + 1).to_string(),
        (Some(Ok(h)), Err(_)) => (h + 1).to_string(),
        _ => recorded.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    value: String,
    /// When the isolate last read the tag's own key (isolate clock; 0 if
    /// it only came from a log).
    read_at: u64,
    /// The time up to which this value is known current (a read's time, or
    /// the `at` of a log that covered it).
    through: u64,
}

/// What to do about the log before answering a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDue {
    /// Read recently enough.
    No,
    /// Read it behind the response.
    Behind,
    /// Read it before answering: without it no generation is trusted.
    Now,
}

/// An isolate's generations and its place in the log.
#[derive(Debug, Default)]
pub struct Generations {
    known: HashMap<String, Known>,
    /// When the isolate last applied a log (its clock).
    applied_at: Option<u64>,
    /// When the isolate last tried to read the log, and whether a read is
    /// under way.
    tried_at: Option<u64>,
    reading: bool,
}

impl Generations {
    /// The tag's generation if it is trusted at `now`.
    pub fn get(&self, tag: &str, now: u64) -> Option<&str> {
        let k = self.known.get(tag)?;
        // Every generation held was either vouched for by the last log
        // applied or learned after it.
        let log_current = self
            .applied_at
            .is_some_and(|a| now.saturating_sub(a) < TRUST_MS);
        (log_current || now.saturating_sub(k.read_at) < TRUST_MS).then_some(k.value.as_str())
    }

    /// Notes a generation read from the tag's own key (or written by this
    /// isolate) at `now`, and returns the one now held: a value older than
    /// one already known is ignored.
    pub fn note(&mut self, tag: &str, value: String, now: u64) -> String {
        let value = match self.known.get(tag) {
            Some(k) => newer(&k.value, &value).to_owned(),
            None => value,
        };
        self.known.insert(
            tag.to_owned(),
            Known {
                value: value.clone(),
                read_at: now,
                through: now,
            },
        );
        self.bound(now);
        value
    }

    /// Applies a log read at `now`: forgets what it cannot vouch for, keeps
    /// the rest current through the log's time, and takes its generations.
    pub fn apply(&mut self, log: &Log, now: u64) {
        self.known.retain(|_, k| {
            let kept = k.through + CLOCK_SKEW_MS >= log.from;
            if kept {
                k.through = k.through.max(log.at);
            }
            kept
        });
        for (tag, value) in &log.tags {
            match self.known.get_mut(tag) {
                Some(k) => k.value = newer(&k.value, value).to_owned(),
                None => {
                    self.known.insert(
                        tag.clone(),
                        Known {
                            value: value.clone(),
                            read_at: 0,
                            through: log.at,
                        },
                    );
                }
            }
        }
        self.applied_at = Some(now);
        self.bound(now);
    }

    /// Whether the log should be read, and claims the read if so.
    pub fn log_due(&mut self, now: u64) -> LogDue {
        let age = self.tried_at.map(|t| now.saturating_sub(t));
        let due = match age {
            Some(a) if a < REFRESH_MS => LogDue::No,
            Some(a) if a < TRUST_MS => LogDue::Behind,
            _ => LogDue::Now,
        };
        match due {
            LogDue::Behind if self.reading => LogDue::No,
            LogDue::No => LogDue::No,
            due => {
                self.tried_at = Some(now);
                self.reading = true;
                due
            }
        }
    }

    /// A read of the log claimed by [`Generations::log_due`] is over
    /// (applied or not).
    pub fn log_read(&mut self) {
        self.reading = false;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.known.len()
    }

    /// Past [`KEPT`], forgets the untrusted, then any, down to three
    /// quarters (a forgotten tag costs one KV read when next needed).
    fn bound(&mut self, now: u64) {
        if self.known.len() <= KEPT {
            return;
        }
        let log_current = self
            .applied_at
            .is_some_and(|a| now.saturating_sub(a) < TRUST_MS);
        if !log_current {
            self.known
                .retain(|_, k| now.saturating_sub(k.read_at) < TRUST_MS);
        }
        let excess = self.known.len().saturating_sub(KEPT * 3 / 4);
        if excess > 0 {
            let gone: Vec<String> = self.known.keys().take(excess).cloned().collect();
            for tag in gone {
                self.known.remove(&tag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(from: u64, at: u64, tags: &[(&str, &str)]) -> Log {
        Log {
            v: Log::VERSION,
            from,
            at,
            tags: tags
                .iter()
                .map(|(t, g)| ((*t).to_owned(), (*g).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_read_generation_is_trusted_for_a_while_without_a_log() {
        let mut g = Generations::default();
        g.note("issue:a", "0".into(), 10_000);
        assert_eq!(g.get("issue:a", 14_999), Some("0"));
        assert_eq!(g.get("issue:a", 15_000), None);
        assert_eq!(g.get("issue:b", 10_000), None);
    }

    #[test]
    fn the_log_keeps_known_generations_current_without_reading_them() {
        let mut g = Generations::default();
        g.note("issue:a", "0".into(), 10_000);
        // Every 4 s a log that covers the last minute: the tag stays
        // trusted long after its own read.
        for i in 1..=20u64 {
            let now = 10_000 + i * 4_000;
            g.apply(&log(now.saturating_sub(LOG_WINDOW_MS), now, &[]), now);
            assert_eq!(g.get("issue:a", now + 4_999), Some("0"), "at {now}");
        }
    }

    #[test]
    fn an_invalidation_in_the_log_moves_the_generation() {
        let mut g = Generations::default();
        g.note("issue:a", "0".into(), 10_000);
        g.apply(
            &log(0, 12_000, &[("issue:a", "11500"), ("issue:z", "11000")]),
            12_100,
        );
        assert_eq!(g.get("issue:a", 12_100), Some("11500"));
        assert_eq!(
            g.get("issue:z", 12_100),
            Some("11000"),
            "a tag the log names is known from it"
        );
    }

    #[test]
    fn a_gap_in_the_chain_forgets_what_the_log_cannot_vouch_for() {
        let mut g = Generations::default();
        g.note("issue:old", "5".into(), 10_000);
        g.note("issue:new", "6".into(), 95_000);
        // The log now starts after the old tag was read: an invalidation of
        // it may have dropped out.
        g.apply(&log(40_000, 100_000, &[]), 100_000);
        assert_eq!(g.get("issue:old", 100_000), None);
        assert_eq!(g.get("issue:new", 100_000), Some("6"));
        // Within the clock skew it is kept.
        let mut g = Generations::default();
        g.note("issue:a", "5".into(), 39_000);
        g.apply(&log(40_000, 100_000, &[]), 100_000);
        assert_eq!(g.get("issue:a", 100_000), Some("5"));
    }

    #[test]
    fn a_late_log_never_moves_a_generation_back() {
        let mut g = Generations::default();
        // This isolate invalidated the tag itself a moment ago.
        g.note("issue:a", "20000".into(), 20_000);
        g.apply(&log(0, 19_000, &[("issue:a", "15000")]), 20_500);
        assert_eq!(g.get("issue:a", 20_500), Some("20000"));
        g.note("issue:a", "18000".into(), 21_000);
        assert_eq!(g.get("issue:a", 21_000), Some("20000"));
    }

    #[test]
    fn trust_through_the_log_ends_when_the_log_is_not_read() {
        let mut g = Generations::default();
        g.apply(&log(0, 1_000, &[("issue:a", "900")]), 1_000);
        assert_eq!(g.get("issue:a", 5_999), Some("900"));
        assert_eq!(g.get("issue:a", 6_000), None, "no log for 5 s");
    }

    #[test]
    fn the_log_is_read_behind_responses_then_before_them() {
        let mut g = Generations::default();
        assert_eq!(g.log_due(0), LogDue::Now, "never read");
        g.log_read();
        assert_eq!(g.log_due(2_999), LogDue::No);
        assert_eq!(g.log_due(3_000), LogDue::Behind);
        assert_eq!(g.log_due(3_001), LogDue::No, "one read at a time");
        g.log_read();
        assert_eq!(g.log_due(6_000), LogDue::Behind);
        g.log_read();
        assert_eq!(g.log_due(11_000), LogDue::Now, "too old to answer without");
    }

    #[test]
    fn a_record_always_moves_the_generation_on() {
        assert_eq!(next_generation(None, "1000"), "1000");
        assert_eq!(next_generation(Some("900"), "1000"), "1000");
        assert_eq!(
            next_generation(Some("1000"), "999"),
            "1001",
            "a writer whose clock is behind"
        );
        assert_eq!(next_generation(Some("1000"), "1000"), "1001");
        assert_eq!(next_generation(Some("1000"), "x"), "1001");
        assert_eq!(next_generation(Some("x"), "5"), "5");
    }

    #[test]
    fn newer_compares_as_numbers() {
        assert_eq!(newer("9", "10"), "10");
        assert_eq!(newer("10", "9"), "10");
        assert_eq!(newer("x", "3"), "3");
        assert_eq!(newer("3", "x"), "3");
    }

    #[test]
    fn memory_is_bounded() {
        let mut g = Generations::default();
        for i in 0..(KEPT + 1) {
            g.note(&format!("issue:{i}"), "0".into(), 0);
        }
        assert!(g.len() <= KEPT, "{}", g.len());
        assert!(g.len() >= KEPT * 3 / 4);
    }

    #[test]
    fn the_log_round_trips_as_json() {
        let l = log(1, 2, &[("issue:a", "3")]);
        let text = serde_json::to_string(&l).expect("json");
        assert_eq!(serde_json::from_str::<Log>(&text).expect("parse"), l);
    }
}
