//! Joining and leaving an issue: the statements one membership change sends
//! to the primary (one transaction, one round trip) and what their results
//! mean. The IssueCounter object runs them ([`crate::objects::issue_counter`]),
//! which the join route sends changes to ([`crate::routes::membership`]).
//!
//! A join inserts into `user_issues` with `ON CONFLICT DO NOTHING`, a leave
//! deletes; only a real change (one row affected) counts, into the live count
//! and into today's `issue_daily` row, so repeating either changes nothing.
//! A join may name the organisation the member holds responsible; it must
//! be one linked to the issue. The member's user row is created in the same
//! transaction when it does not exist yet (a first write from a new
//! session), and only when the join is valid.
//!
//! **The latest intent wins.** Each change carries the time its request
//! came in (`intent_ms`, the Worker's clock; stored as ISO-8601 text with
//! milliseconds, which sorts as time). Its transaction first records
//! that time in `membership_intents` unless a later one is there, and the
//! join or leave itself runs only if the recorded time is its own. So a
//! change kept in the outbox while the primary was away, and replayed
//! after a newer join or leave of the same user and issue was made
//! directly, changes nothing (`superseded`): the answer the client got for
//! its newer change stays true. Two changes of the same millisecond apply
//! in the order they reach the primary.

use crate::store::value as v;
use serde::{Deserialize, Serialize};

use crate::domain::counter::Counts;
use crate::http::error::{AppError, AppResult};
use crate::store::db::{Query, Record, Written};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Join,
    Leave,
}

/// One membership change, as the Worker hands it to the issue's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub op: Op,
    pub issue_id: String,
    pub user_id: String,
    /// Join only: the organisation the member holds responsible.
    pub organisation_id: Option<String>,
    /// Join only: the id of the new `user_issues` row.
    pub membership_id: String,
    /// Passed to the primary, so its round trips line up with the API call.
    pub request_id: String,
    /// Benchmark builds only: the object calls the primary the way the
    /// `libsql` wasm client would ([`crate::bench`]).
    #[cfg(feature = "bench")]
    #[serde(default)]
    pub per_statement: bool,
    /// When the client asked (unix ms): a change older than the latest
    /// recorded for the same user and issue is not applied. Changes kept
    /// before this existed read as 0 (older than any recorded).
    #[serde(default)]
    pub intent_ms: u64,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// A row was inserted or deleted.
    pub changed: bool,
    /// Whether the user is a member afterwards.
    pub member: bool,
    /// The organisation whose count the change moves (join: the one given;
    /// leave: the one the membership had).
    pub organisation_id: Option<String>,
    /// The issue's counts, when the change was asked to take them.
    pub counts: Option<Counts>,
    /// A later change of the same user and issue was recorded first; this
    /// one changed nothing.
    #[serde(default)]
    pub superseded: bool,
}

const ISSUE_EXISTS: &str = "EXISTS (SELECT 1 FROM issues WHERE id = ?3)";
const ORG_LINKED: &str = "(?4 IS NULL OR EXISTS (SELECT 1 FROM issue_organisation \
     WHERE issue_id = ?3 AND organisation_id = ?4))";
/// This change is the latest intent recorded for its user and issue.
const CURRENT: &str = "EXISTS (SELECT 1 FROM membership_intents \
     WHERE user_id = ?2 AND issue_id = ?3 AND intent_at = ?5)";

/// The statements of `change`, with a count of the issue's members by
/// organisation at the end when `count` is set.
pub fn statements(change: &Change, count: bool) -> Vec<Query> {
    let text = |s: &str| v::text(s.to_owned());
    let org = change.organisation_id.as_deref().map_or(v::null(), text);
    // ?1 membership id, ?2 user, ?3 issue, ?4 organisation, ?5 intent time
    let args = vec![
        text(&change.membership_id),
        text(&change.user_id),
        text(&change.issue_id),
        org,
        v::text(crate::domain::time::iso(change.intent_ms)),
    ];
    let intent = Query::new(
        format!(
            "INSERT INTO membership_intents (user_id, issue_id, intent_at) \
             SELECT ?2, ?3, ?5 WHERE {ISSUE_EXISTS} \
             ON CONFLICT (user_id, issue_id) DO UPDATE SET intent_at = excluded.intent_at \
             WHERE excluded.intent_at >= membership_intents.intent_at"
        ),
        args.clone(),
    );
    let mut qs = match change.op {
        Op::Join => vec![
            intent,
            Query::new(
                format!(
                    "INSERT INTO users (id) SELECT ?2 \
                     WHERE {ISSUE_EXISTS} AND {ORG_LINKED} AND {CURRENT} \
                     ON CONFLICT (id) DO NOTHING"
                ),
                args.clone(),
            ),
            Query::new(
                format!(
                    "INSERT INTO user_issues (id, user_id, issue_id, organisation_id) \
                     SELECT ?1, ?2, ?3, ?4 WHERE {ISSUE_EXISTS} AND {ORG_LINKED} AND {CURRENT} \
                     ON CONFLICT (user_id, issue_id) DO NOTHING"
                ),
                args.clone(),
            ),
            daily("joins", &change.issue_id),
        ],
        Op::Leave => vec![
            intent,
            Query::new(
                // ?1 and ?4 are unused; the primary counts arguments up to
                // the highest one a statement names (?5).
                format!(
                    "DELETE FROM user_issues WHERE user_id = ?2 AND issue_id = ?3 AND {CURRENT} \
                     RETURNING organisation_id"
                ),
                args.clone(),
            ),
            daily("leaves", &change.issue_id),
        ],
    };
    qs.push(Query::new(
        format!(
            "SELECT {ISSUE_EXISTS} AS issue_exists, {ORG_LINKED} AS org_linked, \
             EXISTS (SELECT 1 FROM user_issues WHERE user_id = ?2 AND issue_id = ?3) AS member, \
             {CURRENT} AS current"
        ),
        args,
    ));
    if count {
        qs.push(count_query(&change.issue_id));
    }
    qs
}

/// Where the membership change is among [`statements`] (after the intent,
/// and for a join the user row).
pub(crate) fn change_index(op: Op) -> usize {
    match op {
        Op::Join => 2,
        Op::Leave => 1,
    }
}

/// Today's joins or leaves of the issue, counted only when the statement
/// before it changed a row.
fn daily(column: &str, issue_id: &str) -> Query {
    Query::new(
        format!(
            "INSERT INTO issue_daily (issue_id, day, {column}) \
             SELECT ?1, strftime('%Y-%m-%d', 'now'), 1 WHERE changes() = 1 \
             ON CONFLICT (issue_id, day) DO UPDATE SET {column} = {column} + 1"
        ),
        vec![v::text(issue_id.to_owned())],
    )
}

/// Members of the issue by organisation: the exact count, from the source.
pub fn count_query(issue_id: &str) -> Query {
    Query::new(
        "SELECT organisation_id, count(*) AS n FROM user_issues WHERE issue_id = ?1 \
         GROUP BY organisation_id",
        vec![v::text(issue_id.to_owned())],
    )
}

pub fn counts_of(rows: &[Record]) -> Counts {
    Counts::from_groups(rows.iter().map(|r| {
        (
            r.get("organisation_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            r.get("n").and_then(|v| v.as_i64()).unwrap_or(0),
        )
    }))
}

fn flag(row: Option<&Record>, name: &str) -> bool {
    row.and_then(|r| r.get(name)).and_then(|v| v.as_i64()) == Some(1)
}

/// Reads the results of [`statements`]; an unknown issue is 404, an
/// organisation not linked to the issue 400.
pub fn outcome(change: &Change, written: Vec<Written>, count: bool) -> AppResult<Outcome> {
    let change_at = change_index(change.op);
    let check_at = change_at + 2;
    let check = written.get(check_at).and_then(|w| w.rows.first());
    if !flag(check, "issue_exists") {
        return Err(AppError::not_found("no issue with this id"));
    }
    if change.op == Op::Join && !flag(check, "org_linked") {
        return Err(AppError::validation(
            "organisation_id",
            "is not an organisation responsible for this issue",
        ));
    }
    let changed_row = written.get(change_at);
    let changed = changed_row.is_some_and(|w| w.affected == 1);
    let organisation_id = match change.op {
        Op::Join => change.organisation_id.clone(),
        Op::Leave => changed_row
            .and_then(|w| w.rows.first())
            .and_then(|r| r.get("organisation_id"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    };
    let counts = if count {
        let rows = written
            .get(check_at + 1)
            .ok_or_else(|| AppError::internal("the count is missing from the results"))?;
        Some(counts_of(&rows.rows))
    } else {
        None
    };
    Ok(Outcome {
        changed,
        member: flag(check, "member"),
        organisation_id,
        counts,
        superseded: !flag(check, "current"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub(crate) fn change(op: Op, org: Option<&str>) -> Change {
        Change {
            op,
            issue_id: "i".into(),
            user_id: "u".into(),
            organisation_id: org.map(str::to_owned),
            membership_id: "m".into(),
            request_id: "r".into(),
            #[cfg(feature = "bench")]
            per_statement: false,
            intent_ms: 1_796_122_417_300,
        }
    }

    fn rows(v: serde_json::Value) -> Vec<Record> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| r.as_object().expect("object").clone())
            .collect()
    }

    pub(crate) fn written(affected: u64, r: serde_json::Value) -> Written {
        Written {
            rows: rows(r),
            affected,
        }
    }

    #[test]
    fn a_join_is_intent_user_membership_daily_check_and_maybe_a_count() {
        let qs = statements(&change(Op::Join, Some("o")), true);
        assert_eq!(qs.len(), 6);
        assert!(qs[0].sql.starts_with("INSERT INTO membership_intents"));
        assert!(qs[0]
            .sql
            .contains("WHERE excluded.intent_at >= membership_intents.intent_at"));
        assert!(qs[1].sql.starts_with("INSERT INTO users"));
        assert!(qs[2]
            .sql
            .contains("ON CONFLICT (user_id, issue_id) DO NOTHING"));
        for q in &qs[1..3] {
            assert!(q.sql.contains(CURRENT), "only the latest intent writes");
        }
        assert!(qs[3].sql.contains("changes() = 1"));
        assert!(qs[4].sql.contains("AS current"));
        assert!(qs[5].sql.contains("GROUP BY organisation_id"));
        assert!([0, 1, 2, 4].iter().all(|i| qs[*i].args.len() == 5));
        let leave = statements(&change(Op::Leave, None), false);
        assert_eq!(leave.len(), 4);
        assert!(
            leave[1].sql.starts_with("DELETE FROM user_issues") && leave[1].sql.contains(CURRENT)
        );
    }

    fn check(issue: i64, org: i64, member: i64, current: i64) -> Written {
        written(
            0,
            json!([{"issue_exists": issue, "org_linked": org, "member": member, "current": current}]),
        )
    }

    #[test]
    fn outcomes() {
        let c = change(Op::Join, Some("o"));
        let done = outcome(
            &c,
            vec![
                written(1, json!([])),
                written(1, json!([])),
                written(1, json!([])),
                written(1, json!([])),
                check(1, 1, 1, 1),
                written(
                    0,
                    json!([{"organisation_id": null, "n": 4}, {"organisation_id": "o", "n": 2}]),
                ),
            ],
            true,
        )
        .expect("outcome");
        assert!(done.changed && done.member && !done.superseded);
        let counts = done.counts.expect("counts");
        assert_eq!(counts.total, 6);
        assert_eq!(counts.by_org["o"], 2);

        let nothing = |check: Written| {
            vec![
                written(1, json!([])),
                written(0, json!([])),
                written(0, json!([])),
                written(0, json!([])),
                check,
            ]
        };
        assert!(
            !outcome(&c, nothing(check(1, 1, 1, 1)), false)
                .expect("outcome")
                .changed
        );
        assert_eq!(
            outcome(&c, nothing(check(0, 0, 0, 0)), false)
                .unwrap_err()
                .status,
            404
        );
        let e = outcome(&c, nothing(check(1, 0, 0, 1)), false).unwrap_err();
        assert_eq!(e.details.expect("details")["field"], "organisation_id");

        let leave = change(Op::Leave, None);
        let left = outcome(
            &leave,
            vec![
                written(1, json!([])),
                written(1, json!([{"organisation_id": "o"}])),
                written(1, json!([])),
                check(1, 1, 0, 1),
            ],
            false,
        )
        .expect("outcome");
        assert!(left.changed && !left.member && !left.superseded);
        assert_eq!(left.organisation_id.as_deref(), Some("o"));

        // A leave older than the latest intent: nothing changed, and the
        // membership the newer change left stands.
        let stale = outcome(
            &leave,
            vec![
                written(0, json!([])),
                written(0, json!([])),
                written(0, json!([])),
                check(1, 1, 1, 0),
            ],
            false,
        )
        .expect("outcome");
        assert!(stale.superseded && !stale.changed && stale.member);
    }
}
