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
use crate::http::error::{AppError, AppResult};

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
    fn tags() {
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
