//! `POST /api/bot`: the seed's bot contract, `Authorization: Bearer
//! BOT_TOKEN` and `{"action": ..., "params": {...}}`.
//!
//! Every action names the person it is for by `params.phone` (E.164): the
//! bot relays what a person asked, so the limit (the `bot` policy) is per
//! phone and an unknown phone gets a user on its first write. Answers are
//! the same JSON the HTTP routes give (`search_issues` is `GET
//! /api/issues?q=`, `get_issue` is `GET /api/issues/:id`, ...), read
//! through the same cache.
//!
//! `link_phone`, which the seed's contract names, is known but refused
//! (400 `link_on_web`, saying how to link): linking is started and finished
//! on the web (`POST /api/me/phone`, `POST /api/me/phone/verify`), the code
//! going to the phone over WhatsApp. An action that finished a link from
//! the phone's side would let someone who asked for a code for another
//! person's number talk them into linking it to the asker's account.

use serde_json::{json, Map, Value};
use worker::Response;

use super::ChatUser;
use crate::domain::ids::Id;
use crate::domain::phone::PhoneE164;
use crate::domain::writes::NewPost;
use crate::edge::limits;
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult, Code};
use crate::routes::issue_writes::Write;
use crate::routes::membership;
use crate::store::membership::Op;

/// The most issues `search_issues` returns.
const SEARCH_LIMIT: usize = 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    SearchIssues { query: String, limit: usize },
    GetIssue(Id),
    JoinIssue { issue: Id, organisation: Option<Id> },
    LeaveIssue(Id),
    MyIssues,
    PostFeed { issue: Id, post: NewPost },
    GetActions(Id),
}

pub const ACTIONS: &[&str] = &[
    "search_issues",
    "get_issue",
    "join_issue",
    "leave_issue",
    "my_issues",
    "post_feed",
    "get_actions",
];

/// The seed's action for linking a phone, answered with [`link_on_web`].
pub const LINK_PHONE: &str = "link_phone";

/// How a phone is linked, for `link_phone` callers: on the web, never from
/// the bot side.
pub const LINK_STEPS: [&str; 2] = [
    "POST /api/me/phone {\"phone\"} from the web session of the account to link it to",
    "POST /api/me/phone/verify {\"phone\", \"code\"} from that session, with the 6-digit code WhatsApp sends to the phone",
];

/// The answer to `link_phone`: a 400 that says how to link instead.
pub fn link_on_web() -> AppError {
    AppError::new(
        400,
        Code::LinkOnWeb,
        "a phone is linked on the web, not through the bot: from the web session, \
         POST /api/me/phone with the phone, then POST /api/me/phone/verify with the code sent to it",
    )
    .with_details(json!({ "field": "action", "steps": LINK_STEPS }))
}

/// A parsed request: who it is for and what they asked.
#[derive(Debug, Clone, PartialEq)]
pub struct BotRequest {
    pub phone: PhoneE164,
    pub action: Action,
}

fn field(name: &str) -> String {
    format!("params.{name}")
}

/// Reads `{action, params}`: an unknown action, a missing or unknown
/// parameter or a bad value is a 400 naming it.
pub fn parse(body: Option<&Value>) -> AppResult<BotRequest> {
    let body = body
        .and_then(Value::as_object)
        .ok_or_else(|| AppError::validation("body", "must be a JSON object {action, params}"))?;
    if let Some(unknown) = body
        .keys()
        .find(|k| !["action", "params"].contains(&k.as_str()))
    {
        return Err(AppError::validation(
            unknown,
            "is not a field of a bot request",
        ));
    }
    let name = body
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::validation("action", "is required (a string)"))?;
    if name == LINK_PHONE {
        return Err(link_on_web());
    }
    if !ACTIONS.contains(&name) {
        return Err(AppError::new(
            400,
            Code::UnknownAction,
            format!("no bot action is called {name:?}"),
        )
        .with_details(json!({ "field": "action", "actions": ACTIONS })));
    }
    let empty = Map::new();
    let params = match body.get("params") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(AppError::validation("params", "must be a JSON object")),
    };
    let allowed: &[&str] = match name {
        "search_issues" => &["phone", "query", "limit"],
        "join_issue" => &["phone", "issue_id", "organisation_id"],
        "post_feed" => &["phone", "issue_id", "content"],
        "my_issues" => &["phone"],
        _ => &["phone", "issue_id"],
    };
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(AppError::validation(
            &field(unknown),
            format!("is not a parameter of {name}"),
        ));
    }
    let string = |key: &str| -> AppResult<&str> {
        match params.get(key) {
            Some(Value::String(s)) => Ok(s.as_str()),
            None | Some(Value::Null) => Err(AppError::validation(&field(key), "is required")),
            Some(_) => Err(AppError::validation(&field(key), "must be a string")),
        }
    };
    let phone = PhoneE164::parse(string("phone")?, &field("phone"))?;
    let issue = || Id::parse(string("issue_id")?, &field("issue_id"));
    let action = match name {
        "search_issues" => {
            let query = string("query")?.trim().to_owned();
            let limit = match params.get("limit") {
                None | Some(Value::Null) => 5,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=SEARCH_LIMIT as u64).contains(n))
                    .ok_or_else(|| {
                        AppError::validation(
                            &field("limit"),
                            format!("must be a whole number from 1 to {SEARCH_LIMIT}"),
                        )
                    })? as usize,
            };
            Action::SearchIssues { query, limit }
        }
        "get_issue" => Action::GetIssue(issue()?),
        "get_actions" => Action::GetActions(issue()?),
        "leave_issue" => Action::LeaveIssue(issue()?),
        "my_issues" => Action::MyIssues,
        "join_issue" => Action::JoinIssue {
            issue: issue()?,
            organisation: match params.get("organisation_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(Id::parse(s, &field("organisation_id"))?),
                Some(_) => {
                    return Err(AppError::validation(
                        &field("organisation_id"),
                        "must be a UUID",
                    ))
                }
            },
        },
        "post_feed" => {
            let content =
                json!({ "content": params.get("content").cloned().unwrap_or(Value::Null) });
            let post = NewPost::parse(Some(&content)).map_err(|e| {
                // Named as the bot sent it.
                let problem = e
                    .details
                    .as_ref()
                    .and_then(|d| d["problem"].as_str())
                    .unwrap_or("is not a valid post")
                    .to_owned();
                AppError::validation(&field("content"), problem)
            })?;
            Action::PostFeed {
                issue: issue()?,
                post,
            }
        }
        _ => return Err(AppError::internal("an action without a parser")),
    };
    Ok(BotRequest { phone, action })
}

/// The body, then the per-phone limit. The token (`BOT_TOKEN`) was checked
/// by the pipeline before the body was read, so a wrong or missing token
/// learns nothing about the body.
pub async fn handle(ctx: &Ctx, body: Option<&Value>) -> AppResult<Response> {
    let request = parse(body)?;
    let who = ChatUser::phone(&request.phone);
    limits::write(ctx, &ctx.config.rate_limits.bot, &who.limit_subject()).await?;
    let (status, result) = run(ctx, &who, request.action).await?;
    Ok(json_response(status, &result)?)
}

async fn run(ctx: &Ctx, who: &ChatUser, action: Action) -> AppResult<(u16, Value)> {
    Ok(match action {
        Action::SearchIssues { query, limit } => (200, super::search(ctx, &query, limit).await?),
        Action::GetIssue(id) => (200, super::issue(ctx, &id).await?),
        Action::GetActions(id) => (200, super::actions(ctx, &id).await?),
        Action::MyIssues => {
            let issues = match super::find_user(ctx, who).await? {
                Some(user) => super::my_issues(ctx, &user).await?,
                None => Vec::new(),
            };
            (200, json!({ "phone": who.subject, "items": issues }))
        }
        Action::JoinIssue {
            issue,
            organisation,
        } => {
            let user = super::ensure_user(ctx, who).await?;
            let a = membership::change(ctx, Op::Join, &issue, &user, organisation.as_ref()).await?;
            (200, membership_json(&issue, &a))
        }
        Action::LeaveIssue(issue) => match super::find_user(ctx, who).await? {
            Some(user) => {
                let a = membership::change(ctx, Op::Leave, &issue, &user, None).await?;
                (200, membership_json(&issue, &a))
            }
            // Never a member: nothing to leave, nothing written.
            None => (
                200,
                json!({ "issue_id": issue.as_str(), "member": false, "changed": false }),
            ),
        },
        Action::PostFeed { issue, post } => {
            let user = super::ensure_user(ctx, who).await?;
            let write = Write::Post(issue, post);
            let (reply, _) = crate::routes::issue_writes::perform(
                ctx,
                &write,
                &user,
                None,
                crate::domain::time::now_ms(),
            )
            .await?;
            let body = serde_json::from_str(&reply.body).map_err(AppError::internal)?;
            (reply.status, body)
        }
    })
}

fn membership_json(issue: &Id, a: &crate::objects::issue_counter::Answer) -> Value {
    json!({
        "issue_id": issue.as_str(),
        "member": a.member,
        "changed": a.changed,
        "rioter_count": a.rioter_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE: &str = "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11";

    fn parsed(v: Value) -> AppResult<BotRequest> {
        parse(Some(&v))
    }

    #[test]
    fn each_action_parses() {
        let p = "+447700900123";
        let ok = |v: Value| parsed(v).expect("parses").action;
        assert_eq!(
            ok(json!({"action": "search_issues", "params": {"phone": p, "query": " bus "}})),
            Action::SearchIssues {
                query: "bus".into(),
                limit: 5
            }
        );
        assert!(matches!(
            ok(json!({"action": "get_issue", "params": {"phone": p, "issue_id": ISSUE}})),
            Action::GetIssue(_)
        ));
        assert!(matches!(
            ok(json!({"action": "join_issue", "params": {"phone": p, "issue_id": ISSUE}})),
            Action::JoinIssue {
                organisation: None,
                ..
            }
        ));
        assert!(matches!(
            ok(json!({"action": "leave_issue", "params": {"phone": p, "issue_id": ISSUE}})),
            Action::LeaveIssue(_)
        ));
        assert_eq!(
            ok(json!({"action": "my_issues", "params": {"phone": p}})),
            Action::MyIssues
        );
        assert!(matches!(
            ok(
                json!({"action": "post_feed", "params": {"phone": p, "issue_id": ISSUE, "content": "hi"}})
            ),
            Action::PostFeed { .. }
        ));
        assert!(matches!(
            ok(json!({"action": "get_actions", "params": {"phone": p, "issue_id": ISSUE}})),
            Action::GetActions(_)
        ));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let p = "+447700900123";
        let cases = [
            (json!(null), "body"),
            (json!([]), "body"),
            (json!({"params": {}}), "action"),
            (json!({"action": "x", "extra": 1}), "extra"),
            (json!({"action": "my_issues"}), "params.phone"),
            (
                json!({"action": "my_issues", "params": {"phone": "0770"}}),
                "params.phone",
            ),
            (json!({"action": "my_issues", "params": []}), "params"),
            (
                json!({"action": "get_issue", "params": {"phone": p}}),
                "params.issue_id",
            ),
            (
                json!({"action": "get_issue", "params": {"phone": p, "issue_id": "1"}}),
                "params.issue_id",
            ),
            (
                json!({"action": "get_issue", "params": {"phone": p, "issue_id": ISSUE, "q": 1}}),
                "params.q",
            ),
            (
                json!({"action": "search_issues", "params": {"phone": p}}),
                "params.query",
            ),
            (
                json!({"action": "search_issues", "params": {"phone": p, "query": "x", "limit": 0}}),
                "params.limit",
            ),
            (
                json!({"action": "search_issues", "params": {"phone": p, "query": "x", "limit": 500}}),
                "params.limit",
            ),
            (
                json!({"action": "join_issue", "params": {"phone": p, "issue_id": ISSUE, "organisation_id": 3}}),
                "params.organisation_id",
            ),
            (
                json!({"action": "post_feed", "params": {"phone": p, "issue_id": ISSUE}}),
                "params.content",
            ),
            (
                json!({"action": "post_feed", "params": {"phone": p, "issue_id": ISSUE, "content": ""}}),
                "params.content",
            ),
        ];
        for (body, field) in cases {
            let e = parsed(body.clone()).expect_err("refused");
            assert_eq!(e.status, 400, "{body}");
            let named = e
                .details
                .as_ref()
                .and_then(|d| d["field"].as_str())
                .unwrap_or("");
            assert!(
                named == field || e.message.starts_with(field),
                "{body}: {} / {:?}",
                e.message,
                e.details
            );
        }
    }

    #[test]
    fn link_phone_is_known_and_says_how_to_link() {
        for params in [json!({"phone": "+447700900123"}), json!({}), json!(null)] {
            let e = parsed(json!({"action": "link_phone", "params": params})).expect_err("refused");
            assert_eq!((e.status, e.code.as_str()), (400, "link_on_web"));
            assert!(e.message.contains("POST /api/me/phone"), "{}", e.message);
            assert_eq!(e.details.expect("details")["steps"][1], LINK_STEPS[1]);
        }
    }

    #[test]
    fn an_unknown_action_lists_the_known_ones() {
        let e = parsed(json!({"action": "delete_everything", "params": {}})).expect_err("refused");
        assert_eq!((e.status, e.code.as_str()), (400, "unknown_action"));
        assert_eq!(e.details.expect("details")["actions"][0], "search_issues");
    }
}
