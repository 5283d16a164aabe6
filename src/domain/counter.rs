//! Live rioter counts: the logic of the IssueCounter Durable Object, free of
//! the JS runtime so it is tested natively.
//!
//! **The problem** (the seed's): `UPDATE issues SET rioter_count =
//! rioter_count + 1` on every join makes one row the lock hot spot of the
//! primary past about 100 joins a second on one issue.
//!
//! **The design.** Every membership change of an issue goes through that
//! issue's object. The object writes the membership through to the primary
//! (`user_issues`, in one transaction with the `issue_daily` row), learns
//! from the primary whether anything changed, and moves its own exact count
//! (total and per organisation) only for a real change. The count lives in
//! the object's storage; the primary's `rioter_count` columns are written
//! from it by alarm, as absolute values, at most once per [`FLUSH_EVERY_MS`]
//! per issue: a retried alarm writes the same numbers again (idempotent) and
//! 200 joins a second cost about one counter UPDATE a second.
//!
//! **Exactness.** Changes whose outcome is known are applied as deltas, in
//! any order (they commute). When the object has no count yet, or an outcome
//! is unknown (the primary timed out or could not be reached after the
//! request was sent), the count is taken again from `user_issues` inside the
//! next write transaction ([`trusted_after`]); so is it when the object
//! restarts (a deploy, an eviction) while its count is in doubt (it saves
//! that before sending a group, and until an outcome clears it). The object
//! sends one transaction at a time (changes that arrive meanwhile are
//! grouped into the next), so no other change of the issue is in flight
//! while a count is taken, and no change is counted twice or missed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// At most one flush of an issue's counts to the primary this often.
pub const FLUSH_EVERY_MS: u64 = 1_000;

/// The key under which members without an organisation are counted.
pub const NO_ORGANISATION: &str = "";

/// Exact member counts of one issue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: i64,
    /// Organisation id (or [`NO_ORGANISATION`]) -> members holding it responsible.
    pub by_org: BTreeMap<String, i64>,
}

impl Counts {
    /// From `SELECT organisation_id, count(*) ... GROUP BY organisation_id` rows.
    pub fn from_groups(groups: impl IntoIterator<Item = (Option<String>, i64)>) -> Counts {
        let mut counts = Counts::default();
        for (org, n) in groups {
            counts.total += n;
            *counts
                .by_org
                .entry(org.unwrap_or_else(|| NO_ORGANISATION.to_owned()))
                .or_default() += n;
        }
        counts
    }

    /// A member joined (+1) or left (-1) with this organisation.
    pub fn apply(&mut self, delta: i64, organisation_id: Option<&str>) {
        self.total = (self.total + delta).max(0);
        let entry = self
            .by_org
            .entry(organisation_id.unwrap_or(NO_ORGANISATION).to_owned())
            .or_default();
        *entry = (*entry + delta).max(0);
    }

    /// Organisations with their counts (members without one left out).
    pub fn organisations(&self) -> impl Iterator<Item = (&str, i64)> {
        self.by_org
            .iter()
            .filter(|(org, _)| org.as_str() != NO_ORGANISATION)
            .map(|(org, n)| (org.as_str(), *n))
    }
}

/// Whether the object may keep moving its count by deltas after a
/// transaction: only if the outcome is known (it committed, or certainly
/// did not) and, when the transaction was to take the count, it did.
pub fn trusted_after(counting: bool, known: bool, counted: bool) -> bool {
    known && (!counting || counted)
}

/// When the next flush may run, given the last one.
pub fn next_flush_at(last_flush_ms: u64, now_ms: u64) -> u64 {
    now_ms.max(last_flush_ms + FLUSH_EVERY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_groups_and_deltas() {
        let mut c = Counts::from_groups([(None, 3), (Some("org-a".to_owned()), 2)]);
        assert_eq!(c.total, 5);
        c.apply(1, Some("org-a"));
        c.apply(-1, None);
        c.apply(1, Some("org-b"));
        assert_eq!(c.total, 6);
        assert_eq!(c.by_org[NO_ORGANISATION], 2);
        let orgs: Vec<_> = c.organisations().collect();
        assert_eq!(orgs, [("org-a", 3), ("org-b", 1)]);
        c.apply(-9, Some("org-b"));
        assert_eq!(c.by_org["org-b"], 0, "never below zero");
    }

    #[test]
    fn only_known_outcomes_and_taken_counts_are_trusted() {
        assert!(trusted_after(false, true, false), "a delta that committed");
        assert!(!trusted_after(false, false, false), "a delta that may have");
        assert!(trusted_after(true, true, true), "a count taken");
        assert!(
            !trusted_after(true, true, false),
            "a count asked, not taken"
        );
        assert!(!trusted_after(true, false, false));
    }

    #[test]
    fn flushes_are_spaced() {
        assert_eq!(next_flush_at(0, 5_000), 5_000);
        assert_eq!(next_flush_at(5_000, 5_200), 6_000);
        assert_eq!(next_flush_at(5_000, 7_000), 7_000);
    }
}
