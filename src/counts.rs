//! The seam for live rioter counts.
//!
//! A cached body's `rioter_count` can be older than the exact count the
//! IssueCounter Durable Object keeps once joins go through it (the write
//! path). Before a cached issue detail or list is sent, [`overlay`] puts in
//! every count for which a newer live value is known, and says whether the
//! body changed (its ETag must then be recomputed). Bodies stay cacheable
//! and shared; only counts are per moment.
//!
//! Wiring: the write path gives the pipeline a [`LiveCounts`] backed by the
//! counter objects (or by counts the isolate learned from its own writes),
//! and `pipeline::cached_response` calls [`overlay`] for `issues.get` and
//! `issues.list` when that source knows anything.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCount {
    pub count: i64,
    /// Unix milliseconds at which the count was exact.
    pub as_of_ms: u64,
}

pub trait LiveCounts {
    fn get(&self, issue_id: &str) -> Option<LiveCount>;
}

/// Replaces `rioter_count` of the issue in `body` (a detail) or of each item
/// (a list) with a live count newer than `generated_at_ms`, the time the body
/// was loaded. Returns how many counts changed.
pub fn overlay(body: &mut Value, generated_at_ms: u64, live: &dyn LiveCounts) -> usize {
    let mut changed = 0;
    let mut apply = |issue: &mut Value| {
        let Some(id) = issue.get("id").and_then(Value::as_str) else {
            return;
        };
        if let Some(newer) = live.get(id).filter(|c| c.as_of_ms > generated_at_ms) {
            if issue.get("rioter_count").and_then(Value::as_i64) != Some(newer.count) {
                issue["rioter_count"] = Value::from(newer.count);
                changed += 1;
            }
        }
    };
    match body.get_mut("items").and_then(Value::as_array_mut) {
        Some(items) => items.iter_mut().for_each(&mut apply),
        None => apply(body),
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    struct Known(HashMap<&'static str, LiveCount>);

    impl LiveCounts for Known {
        fn get(&self, issue_id: &str) -> Option<LiveCount> {
            self.0.get(issue_id).copied()
        }
    }

    #[test]
    fn only_newer_counts_replace_cached_ones() {
        let live = Known(HashMap::from([
            (
                "a",
                LiveCount {
                    count: 11,
                    as_of_ms: 2_000,
                },
            ),
            (
                "b",
                LiveCount {
                    count: 99,
                    as_of_ms: 500,
                },
            ),
        ]));
        let mut list = json!({"items": [
            {"id": "a", "rioter_count": 10},
            {"id": "b", "rioter_count": 20},
            {"id": "c", "rioter_count": 30}
        ]});
        assert_eq!(overlay(&mut list, 1_000, &live), 1);
        assert_eq!(list["items"][0]["rioter_count"], 11);
        assert_eq!(list["items"][1]["rioter_count"], 20, "older than the body");
        let mut detail = json!({"id": "a", "rioter_count": 10, "name": "x"});
        assert_eq!(overlay(&mut detail, 1_000, &live), 1);
        assert_eq!(detail["rioter_count"], 11);
        assert_eq!(
            overlay(&mut detail, 1_000, &live),
            0,
            "nothing new the second time"
        );
    }
}
