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
}

impl Mode {
    /// How the primary is called under this switch (`None`: as always).
    pub fn baseline(self) -> Option<&'static dyn Baseline> {
        match self {
            Mode::PerStatement => Some(&ClientPattern { via_client: false }),
            Mode::LibsqlClient => Some(&ClientPattern { via_client: true }),
            Mode::Normal | Mode::CounterUpdate | Mode::NoLimit => None,
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
        _ => return Split::Unknown,
    };
    Split::Switch(mode, inner)
}

/// Whether benchmark routes exist in this environment.
pub fn allowed(environment: &str) -> bool {
    environment == "development"
}

#[cfg(test)]
mod tests {
    use super::*;

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
            split("/__bench/libsql-client/api/issues"),
            Split::Switch(Mode::LibsqlClient, "/api/issues")
        );
        assert_eq!(split("/__bench/other/api/issues"), Split::Unknown);
        assert_eq!(split("/__bench/no-limit/health"), Split::Unknown);
        assert!(allowed("development"));
        assert!(!allowed("staging") && !allowed("production"));
    }
}
