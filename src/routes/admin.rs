//! Operator routes, behind `Authorization: Bearer CRON_SECRET` (checked by
//! the pipeline, before the body is read).
//!
//! `POST /api/admin/cache/invalidate` with `{"tags": ["issue:ID", ...]}`
//! makes cached reads under those tags miss (after a fix made straight in
//! the database, say). Writes invalidate their own tags.

use serde_json::{json, Value};
use worker::Response;

use crate::domain::ids::Id;
use crate::edge::cache;
use crate::edge::reads;
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult, Code};

/// Compares in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 403 of a route that is off because its secret `name` is not set.
pub fn disabled(name: &str) -> AppError {
    AppError::new(
        403,
        Code::RouteDisabled,
        format!("this route is off: {name} is not set"),
    )
}

/// Checks `Authorization: Bearer <token>` against the secret `name`, in
/// constant time; a route whose secret is unset is off (403). The pipeline
/// runs it for the routes behind a secret, before their body is read.
pub fn bearer(expected: Option<&str>, header: Option<&str>, name: &str) -> AppResult<()> {
    let Some(expected) = expected else {
        return Err(disabled(name));
    };
    let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::new(
            401,
            Code::Unauthorized,
            format!("send Authorization: Bearer <{name}>"),
        ))
    }
}

/// A tag as a read declares it: `issues`, `organisations`, or
/// `issue:`/`feed:`/`org:` followed by a UUID.
pub fn parse_tag(raw: &str) -> AppResult<String> {
    if raw == reads::ISSUES_TAG || raw == reads::ORGANISATIONS_TAG {
        return Ok(raw.to_owned());
    }
    let bad = || {
        AppError::validation(
            "tags",
            format!("{raw:.80} is not a tag (issues, organisations, issue:ID, feed:ID, org:ID)"),
        )
    };
    let (kind, id) = raw.split_once(':').ok_or_else(bad)?;
    let id = Id::parse(id, "tags").map_err(|_| bad())?;
    match kind {
        "issue" => Ok(reads::issue_tag(&id)),
        "feed" => Ok(reads::feed_tag(&id)),
        "org" => Ok(reads::org_tag(&id)),
        _ => Err(bad()),
    }
}

/// Behind `CRON_SECRET`, checked by the pipeline before the body is read.
pub async fn invalidate(ctx: &Ctx, body: Option<&Value>) -> AppResult<Response> {
    let tags = body
        .and_then(|b| b.get("tags"))
        .and_then(Value::as_array)
        .filter(|t| (1..=50).contains(&t.len()))
        .ok_or_else(|| AppError::validation("tags", "send {\"tags\": [...]} with 1 to 50 tags"))?;
    let tags = tags
        .iter()
        .map(|t| {
            t.as_str()
                .ok_or_else(|| AppError::validation("tags", "must be strings"))
                .and_then(parse_tag)
        })
        .collect::<AppResult<Vec<String>>>()?;
    cache::invalidate(ctx, &tags).await?;
    Ok(json_response(200, &json!({ "invalidated": tags }))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_tags() {
        let authorise = |expected, header| bearer(expected, header, "CRON_SECRET");
        assert!(authorise(Some("s3cret"), Some("Bearer s3cret")).is_ok());
        assert_eq!(
            authorise(Some("s3cret"), Some("Bearer nope"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(authorise(Some("s3cret"), None).unwrap_err().status, 401);
        assert_eq!(authorise(None, Some("Bearer x")).unwrap_err().status, 403);
        assert_eq!(parse_tag("issues").expect("tag"), "issues");
        assert_eq!(
            parse_tag("issue:0B7F6C1E-5A1D-4C3E-9B8A-2F4D6E8A0C11").expect("tag"),
            "issue:0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11"
        );
        for bad in [
            "",
            "issue",
            "issue:x",
            "user:0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11",
            "gen:issues",
        ] {
            assert!(parse_tag(bad).is_err(), "{bad}");
        }
    }
}
