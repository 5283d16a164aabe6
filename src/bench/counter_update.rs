//! The hot-issue benchmark's baseline (`/__bench/counter-update/...`): a
//! join or leave run in the Worker without the IssueCounter object, with
//! the seed's `UPDATE issues SET rioter_count = rioter_count + 1` in its
//! transaction.

use crate::http::context::Ctx;
use crate::http::error::AppResult;
use crate::objects::issue_counter::Answer;
use crate::store::db::{Query, Written};
use crate::store::membership::{change_index, outcome, statements, Change, Op, Outcome};
use crate::store::value as v;

/// Runs `change` the seed's way, in one transaction.
pub async fn apply(ctx: &Ctx, change: &Change) -> AppResult<Answer> {
    let written = ctx
        .db()
        .transaction(counter_update_statements(change))
        .await?;
    let (outcome, rioter_count) = counter_update_outcome(change, written)?;
    Ok(Answer {
        changed: outcome.changed,
        member: outcome.member,
        rioter_count,
        as_of_ms: worker::Date::now().as_millis(),
        superseded: outcome.superseded,
        phases: Default::default(),
    })
}

/// The seed's way, for the hot-issue benchmark only (development, through
/// `/__bench/counter-update/...`): [`statements`] with `UPDATE issues SET
/// rioter_count = rioter_count +/- 1` right after the membership change
/// (only if it changed a row) and the issue's `rioter_count` read at the
/// end. [`counter_update_outcome`] reads the results.
fn counter_update_statements(change: &Change) -> Vec<Query> {
    let mut qs = statements(change, false);
    let sign = match change.op {
        Op::Join => '+',
        Op::Leave => '-',
    };
    let issue = || vec![v::text(change.issue_id.clone())];
    qs.insert(
        change_index(change.op) + 1,
        Query::new(
            format!(
                "UPDATE issues SET rioter_count = rioter_count {sign} 1 \
                 WHERE id = ?1 AND changes() = 1"
            ),
            issue(),
        ),
    );
    qs.push(Query::new(
        "SELECT rioter_count FROM issues WHERE id = ?1",
        issue(),
    ));
    qs
}

/// The outcome of [`counter_update_statements`] and the issue's
/// `rioter_count` after it.
fn counter_update_outcome(change: &Change, mut written: Vec<Written>) -> AppResult<(Outcome, i64)> {
    let count = written
        .pop()
        .and_then(|w| w.rows.first().and_then(|r| r.get("rioter_count")?.as_i64()))
        .unwrap_or(0);
    let update = change_index(change.op) + 1;
    if update < written.len() {
        written.remove(update);
    }
    Ok((outcome(change, written, false)?, count))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::membership::tests::{change, written};

    #[test]
    fn the_counter_update_baseline_moves_the_count_only_on_a_change() {
        let c = change(Op::Join, None);
        let qs = counter_update_statements(&c);
        assert_eq!(qs.len(), 7);
        assert!(qs[3]
            .sql
            .starts_with("UPDATE issues SET rioter_count = rioter_count + 1"));
        assert!(qs[3].sql.contains("changes() = 1"));
        assert!(qs[4].sql.starts_with("INSERT INTO issue_daily"));
        let check = json!([{"issue_exists": 1, "org_linked": 1, "member": 1, "current": 1}]);
        let (done, count) = counter_update_outcome(
            &c,
            vec![
                written(1, json!([])),
                written(1, json!([])),
                written(1, json!([])),
                written(1, json!([])),
                written(1, json!([])),
                written(0, check),
                written(0, json!([{"rioter_count": 7}])),
            ],
        )
        .expect("outcome");
        assert!(done.changed && done.member);
        assert_eq!(count, 7);
        let leave = counter_update_statements(&change(Op::Leave, None));
        assert!(leave[2].sql.contains("rioter_count - 1"));
    }
}
