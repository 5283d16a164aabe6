//! Benchmark switches, compiled only with the `bench` cargo feature (the
//! development and test bundle; never a deployed one), and served only in
//! development: `/__bench/{mode}/api/...` serves
//! `/api/...` with one thing changed, so a benchmark can measure a path
//! against the baseline it replaced in the same run. Outside development
//! every `/__bench/...` path is 404, whatever follows.
//!
//! - `per-statement`: the primary is called the way the `libsql` wasm
//!   client calls it (see [`crate::store::db`]): per statement a `describe` and
//!   then the statement, one HTTP request each, one after another.
//! - `libsql-client`: reads go through the `libsql` wasm client itself
//!   (`libsql::wasm::Connection`); transactions as with `per-statement`.
//! - `counter-update`: a join runs in the Worker, without the IssueCounter
//!   object, with the seed's `UPDATE issues SET rioter_count =
//!   rioter_count + 1` in its transaction.
//! - `no-limit`: the request pays no rate limit.
//! - `elsewhere`: the request's cache invalidations are not noted in this
//!   isolate, as another isolate's would not be; they reach it through the
//!   log of invalidations like any other isolate's (the tests of that way
//!   run on one isolate).
//!
//! And one setting, `BENCH_HOP_DELAYS` ([`HopDelays`]): a modelled network
//! distance on each hop of a join, so one machine can stand for a far edge,
//! an IssueCounter placed here or there, and the primary's region.

pub mod client_pattern;
pub mod constant;
pub mod counter_update;

use futures::future::{FutureExt, LocalBoxFuture};

use crate::http::error::AppResult;
use crate::store::db::{Baseline, Db, Query, Record, Written};

/// How a benchmark request differs from a normal one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Normal,
    PerStatement,
    LibsqlClient,
    CounterUpdate,
    NoLimit,
    Elsewhere,
}

impl Mode {
    /// How the primary is called under this switch (`None`: as always).
    pub fn baseline(self) -> Option<&'static dyn Baseline> {
        match self {
            Mode::PerStatement => Some(&ClientPattern { via_client: false }),
            Mode::LibsqlClient => Some(&ClientPattern { via_client: true }),
            Mode::Normal | Mode::CounterUpdate | Mode::NoLimit | Mode::Elsewhere => None,
        }
    }
}

/// The `libsql` client's request pattern, rebuilt ([`client_pattern`]);
/// with `via_client`, reads go through the client itself.
struct ClientPattern {
    via_client: bool,
}

impl Baseline for ClientPattern {
    fn reads<'a>(
        &'a self,
        db: &'a Db,
        queries: &'a [Query],
    ) -> LocalBoxFuture<'a, AppResult<Vec<Vec<Record>>>> {
        if self.via_client {
            client_pattern::client_reads(db, queries).boxed_local()
        } else {
            client_pattern::reads(db, queries).boxed_local()
        }
    }

    fn transaction<'a>(
        &'a self,
        db: &'a Db,
        queries: &'a [Query],
    ) -> LocalBoxFuture<'a, AppResult<Vec<Written>>> {
        client_pattern::transaction(db, queries).boxed_local()
    }
}

pub const PREFIX: &str = "/__bench/";

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split<'a> {
    /// Not a benchmark switch: route the path as it is.
    Plain(&'a str),
    /// A known switch and the path it serves.
    Switch(Mode, &'a str),
    /// `/__bench/{unknown}/...`.
    Unknown,
}

/// Splits `/__bench/{mode}/api/...` into its mode and `/api/...`. Other
/// paths (also `/__bench/constant`, a route of its own) are plain.
pub fn split(path: &str) -> Split<'_> {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Split::Plain(path);
    };
    let Some(slash) = rest.find('/') else {
        return Split::Plain(path);
    };
    let (name, inner) = rest.split_at(slash);
    if !inner.starts_with("/api/") {
        return Split::Unknown;
    }
    let mode = match name {
        "per-statement" => Mode::PerStatement,
        "libsql-client" => Mode::LibsqlClient,
        "counter-update" => Mode::CounterUpdate,
        "no-limit" => Mode::NoLimit,
        "elsewhere" => Mode::Elsewhere,
        _ => return Split::Unknown,
    };
    Split::Switch(mode, inner)
}

/// Round trips added to the hops a request travels (`BENCH_HOP_DELAYS`,
/// e.g. `worker-object=150,object-primary=0,worker-primary=150`; hops not
/// named add nothing): each request on a hop waits that long before it is
/// sent, standing for the distance between the two places. The Worker is
/// where the person is; the IssueCounter object wherever it was created;
/// the primary in its region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HopDelays {
    /// The Worker's requests to an issue's IssueCounter.
    pub worker_object_ms: u64,
    /// The IssueCounter's requests to the primary.
    pub object_primary_ms: u64,
    /// The Worker's own requests to the primary.
    pub worker_primary_ms: u64,
}

/// The hops [`HopDelays::parse`] knows.
const HOPS: &str = "worker-object, object-primary, worker-primary";

impl HopDelays {
    /// The most a hop may be given: a round trip around the world and more.
    const MAX_MS: u64 = 2_000;

    pub fn parse(text: &str) -> Result<HopDelays, String> {
        let mut delays = HopDelays::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (hop, ms) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not HOP=MS"))?;
            let ms: u64 = ms
                .trim()
                .parse()
                .ok()
                .filter(|ms| *ms <= Self::MAX_MS)
                .ok_or_else(|| format!("{part:?}: the delay must be 0 to {} ms", Self::MAX_MS))?;
            let slot = match hop.trim() {
                "worker-object" => &mut delays.worker_object_ms,
                "object-primary" => &mut delays.object_primary_ms,
                "worker-primary" => &mut delays.worker_primary_ms,
                other => return Err(format!("unknown hop {other:?} (known: {HOPS})")),
            };
            *slot = ms;
        }
        Ok(delays)
    }
}

/// Waits out a hop's modelled round trip.
pub async fn hop(ms: u64) {
    if ms > 0 {
        crate::runtime::Timeout::after(std::time::Duration::from_millis(ms)).await;
    }
}

/// Whether benchmark routes exist in this environment.
pub fn allowed(environment: &str) -> bool {
    environment == "development"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_delays_name_their_hops() {
        assert_eq!(
            HopDelays::parse("worker-object=150, object-primary=0,worker-primary=150"),
            Ok(HopDelays {
                worker_object_ms: 150,
                object_primary_ms: 0,
                worker_primary_ms: 150,
            })
        );
        assert_eq!(HopDelays::parse(""), Ok(HopDelays::default()));
        assert_eq!(
            HopDelays::parse("object-primary=80"),
            Ok(HopDelays {
                object_primary_ms: 80,
                ..HopDelays::default()
            })
        );
        for bad in [
            "worker-object",
            "browser-worker=10",
            "worker-object=-1",
            "worker-object=5000",
        ] {
            assert!(HopDelays::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn switches_wrap_api_paths_only() {
        assert_eq!(split("/api/issues"), Split::Plain("/api/issues"));
        assert_eq!(
            split("/__bench/constant"),
            Split::Plain("/__bench/constant")
        );
        assert_eq!(
            split("/__bench/per-statement/api/issues/x"),
            Split::Switch(Mode::PerStatement, "/api/issues/x")
        );
        assert_eq!(
            split("/__bench/counter-update/api/issues/x/join"),
            Split::Switch(Mode::CounterUpdate, "/api/issues/x/join")
        );
        assert_eq!(
            split("/__bench/no-limit/api/issues"),
            Split::Switch(Mode::NoLimit, "/api/issues")
        );
        assert_eq!(
            split("/__bench/elsewhere/api/admin/cache/invalidate"),
            Split::Switch(Mode::Elsewhere, "/api/admin/cache/invalidate")
        );
        assert_eq!(
            split("/__bench/libsql-client/api/issues"),
            Split::Switch(Mode::LibsqlClient, "/api/issues")
        );
        assert_eq!(split("/__bench/other/api/issues"), Split::Unknown);
        assert_eq!(split("/__bench/no-limit/health"), Split::Unknown);
        assert!(allowed("development"));
        assert!(!allowed("staging") && !allowed("production"));
    }
}
