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

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

/// Most counts an isolate remembers.
const REMEMBERED: usize = 4096;

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

thread_local! {
    static LEARNED: RefCell<HashMap<String, LiveCount>> = RefCell::new(HashMap::new());
}

/// Counts this isolate learned from the counter objects (its own joins and
/// leaves): what the writer sees at once.
pub struct Learned;

impl LiveCounts for Learned {
    fn get(&self, issue_id: &str) -> Option<LiveCount> {
        LEARNED.with(|l| l.borrow().get(issue_id).copied())
    }
}

impl Learned {
    pub fn is_empty() -> bool {
        LEARNED.with(|l| l.borrow().is_empty())
    }
}

/// Keeps the newest count of an issue; bounded (the oldest are dropped).
pub fn remember(issue_id: &str, count: LiveCount) {
    LEARNED.with(|l| {
        let mut l = l.borrow_mut();
        let newer = l.get(issue_id).is_none_or(|c| c.as_of_ms <= count.as_of_ms);
        if newer {
            l.insert(issue_id.to_owned(), count);
        }
        if l.len() > REMEMBERED {
            let mut ages: Vec<(u64, String)> =
                l.iter().map(|(k, c)| (c.as_of_ms, k.clone())).collect();
            ages.sort_unstable();
            for (_, k) in ages.into_iter().take(REMEMBERED / 4) {
                l.remove(&k);
            }
        }
    });
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

    #[test]
    fn the_isolate_keeps_the_newest_count() {
        let at = |count, as_of_ms| LiveCount { count, as_of_ms };
        remember("x", at(5, 100));
        remember("x", at(4, 50));
        assert_eq!(
            Learned.get("x"),
            Some(at(5, 100)),
            "an older answer arrives late"
        );
        remember("x", at(6, 150));
        assert_eq!(Learned.get("x").map(|c| c.count), Some(6));
    }
}
