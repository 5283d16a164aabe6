//! Counts of the Hrana requests the primary serves: per endpoint, and per
//! `X-Request-Id` (kept for a short window), so tests and benchmarks can see
//! how many round trips one API call cost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long per-request-id counts are kept.
pub const WINDOW: Duration = Duration::from_secs(120);
/// The most request ids remembered at once.
pub const MAX_IDS: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    V2Pipeline,
    V3Pipeline,
    V3Cursor,
}

#[derive(Default)]
pub struct Stats {
    v2_pipeline: AtomicU64,
    v3_pipeline: AtomicU64,
    v3_cursor: AtomicU64,
    by_id: Mutex<ById>,
}

#[derive(Default)]
struct ById {
    counts: HashMap<String, u64>,
    /// Arrival order, for forgetting the oldest.
    order: VecDeque<(Instant, String)>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub v2_pipeline: u64,
    pub v3_pipeline: u64,
    pub v3_cursor: u64,
    pub total: u64,
}

impl Stats {
    pub fn record(&self, endpoint: Endpoint, request_id: Option<&str>) {
        let counter = match endpoint {
            Endpoint::V2Pipeline => &self.v2_pipeline,
            Endpoint::V3Pipeline => &self.v3_pipeline,
            Endpoint::V3Cursor => &self.v3_cursor,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Some(id) = request_id.filter(|id| !id.is_empty() && id.len() <= 128) else {
            return;
        };
        let now = Instant::now();
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let ById { counts, order } = &mut *by_id;
        while let Some((at, old)) = order.front() {
            if now.duration_since(*at) < WINDOW && counts.len() < MAX_IDS {
                break;
            }
            counts.remove(old);
            order.pop_front();
        }
        let count = counts.entry(id.to_owned()).or_insert(0);
        if *count == 0 {
            order.push_back((now, id.to_owned()));
        }
        *count += 1;
    }

    pub fn snapshot(&self) -> Snapshot {
        let v2 = self.v2_pipeline.load(Ordering::Relaxed);
        let v3 = self.v3_pipeline.load(Ordering::Relaxed);
        let cursor = self.v3_cursor.load(Ordering::Relaxed);
        Snapshot {
            v2_pipeline: v2,
            v3_pipeline: v3,
            v3_cursor: cursor,
            total: v2 + v3 + cursor,
        }
    }

    /// Hrana requests seen with this request id within the window.
    pub fn for_request(&self, id: &str) -> u64 {
        let by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        by_id.counts.get(id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_endpoint_and_per_request() {
        let stats = Stats::default();
        stats.record(Endpoint::V3Pipeline, Some("a"));
        stats.record(Endpoint::V3Pipeline, Some("a"));
        stats.record(Endpoint::V3Cursor, Some("b"));
        stats.record(Endpoint::V2Pipeline, None);
        assert_eq!(
            stats.snapshot(),
            Snapshot {
                v2_pipeline: 1,
                v3_pipeline: 2,
                v3_cursor: 1,
                total: 4
            }
        );
        assert_eq!(stats.for_request("a"), 2);
        assert_eq!(stats.for_request("b"), 1);
        assert_eq!(stats.for_request("c"), 0);
    }
}
