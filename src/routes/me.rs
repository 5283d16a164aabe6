//! `GET /api/me` (who the session says you are, and your issues) and
//! `POST /api/logout`. Per-user: never cached (`Cache-Control: no-store`,
//! the pipeline's default).

use crate::store::value as v;
use serde_json::{json, Value};
use worker::Response;

use crate::domain::session;
use crate::edge::identity;
use crate::http::context::{json_response, Ctx};
use crate::http::error::AppResult;
use crate::store::db::Query;

/// Most memberships listed.
pub const ISSUES_LISTED: i64 = 200;

pub fn queries(user_id: &str) -> Vec<Query> {
    let user = || v::text(user_id.to_owned());
    vec![
        Query::new(
            "SELECT id, display_name, created_at, \
             (SELECT subject FROM user_identities WHERE user_id = ?1 AND provider = 'phone' \
              AND verified_at IS NOT NULL LIMIT 1) AS phone \
             FROM users WHERE id = ?1",
            vec![user()],
        ),
        Query::new(
            "SELECT ui.issue_id AS id, i.name, i.category, i.rioter_count, \
             ui.organisation_id, ui.joined_at \
             FROM user_issues ui JOIN issues i ON i.id = ui.issue_id \
             WHERE ui.user_id = ?1 ORDER BY ui.joined_at DESC, ui.issue_id LIMIT ?2",
            vec![user(), v::int(ISSUES_LISTED)],
        ),
    ]
}

/// The caller and their issues; `{"user": null, "issues": []}` without a
/// session (no session is created by reading).
pub async fn get(ctx: &Ctx, cookie_header: Option<&str>) -> AppResult<Response> {
    let Some(session) = identity::session(ctx, cookie_header)? else {
        return Ok(json_response(200, &json!({ "user": null, "issues": [] }))?);
    };
    let mut results = ctx
        .db()
        .queries(queries(&session.user_id))
        .await?
        .into_iter();
    let user = results.next().unwrap_or_default().into_iter().next();
    let issues = results.next().unwrap_or_default();
    let user = match user {
        Some(u) => Value::Object(u),
        // Signed but not written yet (a session whose first write failed).
        None => json!({ "id": session.user_id, "display_name": null, "phone": null }),
    };
    Ok(json_response(
        200,
        &json!({ "user": user, "issues": issues }),
    )?)
}

/// Clears the session cookie (and any legacy one). Sessions are stateless,
/// so a copy of the cookie kept elsewhere stays valid until it expires or
/// its key is retired.
pub fn logout() -> AppResult<Response> {
    let mut response = json_response(200, &json!({ "logged_out": true }))?;
    let headers = response.headers_mut();
    headers.append("Set-Cookie", &session::clear_cookie_header())?;
    headers.append("Set-Cookie", &session::clear_legacy_cookie_header())?;
    Ok(response)
}
