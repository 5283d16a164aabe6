//! `POST` (join) and `DELETE` (leave) `/api/issues/:id/join`: a change sent
//! to the issue's counter object, which writes it ([`crate::store::membership`]
//! has the statements and what they mean); kept in the outbox while the
//! object or the primary is away.

use serde_json::json;
use worker::Response;

use crate::domain::ids::Id;
use crate::edge::identity;
use crate::edge::live_counts::{self, LiveCount};
use crate::edge::outbox;
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult};
use crate::objects::issue_counter::{self, Answer};
use crate::store::membership::{Change, Op};

/// The body a join may carry: `{"organisation_id": UUID}` or nothing.
pub fn join_organisation(body: Option<&serde_json::Value>) -> AppResult<Option<Id>> {
    let Some(body) = body else {
        return Ok(None);
    };
    let object = body
        .as_object()
        .ok_or_else(|| AppError::validation("body", "must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| k.as_str() != "organisation_id") {
        return Err(AppError::validation(unknown, "is not a field of a join"));
    }
    match object.get("organisation_id") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Id::parse(s, "organisation_id").map(Some),
        Some(_) => Err(AppError::validation("organisation_id", "must be a UUID")),
    }
}

/// Joins or leaves for `user_id` through the issue's counter object, and
/// remembers the live count it answers in this isolate.
pub async fn change(
    ctx: &Ctx,
    op: Op,
    issue: &Id,
    user_id: &str,
    organisation: Option<&Id>,
) -> AppResult<Answer> {
    apply(ctx, &new_change(ctx, op, issue, user_id, organisation)).await
}

fn new_change(ctx: &Ctx, op: Op, issue: &Id, user_id: &str, organisation: Option<&Id>) -> Change {
    Change {
        op,
        issue_id: issue.as_str().to_owned(),
        user_id: user_id.to_owned(),
        organisation_id: organisation.map(|o| o.as_str().to_owned()),
        membership_id: uuid::Uuid::new_v4().to_string(),
        request_id: ctx.request_id.clone(),
        #[cfg(feature = "bench")]
        per_statement: ctx.bench() == crate::bench::Mode::PerStatement,
        intent_ms: worker::Date::now().as_millis(),
    }
}

/// Sends a change to its issue's counter object (also the outbox's replay).
pub async fn apply(ctx: &Ctx, change: &Change) -> AppResult<Answer> {
    let answer = issue_counter::send_change(ctx, change).await?;
    let phases = answer.phases;
    ctx.add_phase("counter-queue", phases.queued_ms);
    ctx.add_phase("counter-commit", phases.commit_ms);
    ctx.add_phase("counter-after", phases.after_ms);
    ctx.add_figure("counter-group", u64::from(phases.group));
    let issue = change.issue_id.as_str();
    live_counts::remember(
        issue,
        LiveCount {
            count: answer.rioter_count,
            as_of_ms: answer.as_of_ms,
        },
    );
    Ok(answer)
}

/// `POST` (join) or `DELETE` (leave) `/api/issues/:id/join`: through the
/// issue's counter object, which writes to the primary. Writes fail closed:
/// an unreachable object is 503.
pub async fn handle(
    ctx: &Ctx,
    op: Op,
    issue: &Id,
    body: Option<&serde_json::Value>,
    cookie_header: Option<&str>,
) -> AppResult<Response> {
    let organisation = match op {
        Op::Join => join_organisation(body)?,
        Op::Leave => None,
    };
    let caller = identity::caller(ctx, cookie_header).await?;
    let change = new_change(ctx, op, issue, &caller.user_id, organisation.as_ref());
    let answer = match without_object(ctx, &change).await? {
        Some(answer) => answer,
        None => match apply(ctx, &change).await {
            Ok(answer) => answer,
            // The primary is away: keep the change and replay it later.
            Err(e) if outbox::should_queue(&e) => {
                let receipt = outbox::enqueue(ctx, &outbox::Queued::Membership { change }).await?;
                return outbox::accepted(
                    &receipt,
                    json!({ "issue_id": issue.as_str(), "op": op }),
                    &caller.set_cookies,
                );
            }
            Err(e) => return Err(e),
        },
    };
    let mut response = json_response(
        200,
        &json!({
            "issue_id": issue.as_str(),
            "member": answer.member,
            "changed": answer.changed,
            "rioter_count": answer.rioter_count,
        }),
    )?;
    for cookie in &caller.set_cookies {
        response.headers_mut().append("Set-Cookie", cookie)?;
    }
    Ok(response)
}

/// The hot-issue benchmark's baseline, when the request asked for it: the
/// seed's `UPDATE` per join, no object.
#[cfg(feature = "bench")]
async fn without_object(ctx: &Ctx, change: &Change) -> AppResult<Option<Answer>> {
    if ctx.bench() != crate::bench::Mode::CounterUpdate {
        return Ok(None);
    }
    crate::bench::counter_update::apply(ctx, change)
        .await
        .map(Some)
}

#[cfg(not(feature = "bench"))]
async fn without_object(_: &Ctx, _: &Change) -> AppResult<Option<Answer>> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_body_is_nothing_or_an_organisation() {
        assert_eq!(join_organisation(None).expect("none"), None);
        let org = "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11";
        let parsed = join_organisation(Some(&json!({ "organisation_id": org })));
        assert_eq!(parsed.expect("org").expect("some").as_str(), org);
        for (bad, field) in [
            (json!({"organisation_id": "x"}), "organisation_id"),
            (json!({"organisation_id": 7}), "organisation_id"),
            (json!({"org": org}), "org"),
            (json!([1]), "body"),
        ] {
            let e = join_organisation(Some(&bad)).unwrap_err();
            assert_eq!(e.details.expect("details")["field"], field, "{bad}");
        }
    }
}
