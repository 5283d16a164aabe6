//! Writes kept while the primary is away: the outbox.
//!
//! When a write (create an issue, post, synonym, action, join, leave) finds
//! the primary unavailable, the Worker hands it to the Outbox Durable
//! Object ([`crate::objects::outbox`]) instead of failing, and answers `202`
//! with the entry's id and `Location: /api/outbox/{id}`, where its status
//! (`queued`, `applied` or `failed`, with the reason) can be read. The
//! object keeps entries in its SQLite storage (durable once it answered),
//! and replays them in the order they arrived, one at a time, from its
//! alarm, as soon as the primary answers again.
//!
//! Nothing is applied twice:
//! - an issue write is replayed with the ids and time it was first planned
//!   with ([`Queued::Write`]); if the first attempt did commit (the primary
//!   answered too late), the replay meets the row's own id and is recorded
//!   as applied, not written again;
//! - a join or leave is replayed through the issue's counter object and is
//!   idempotent by nature (insert-if-absent, delete).
//!
//! Order: entries are replayed strictly in arrival order; one that keeps
//! failing for a reason that is not the primary's absence is marked failed
//! after [`MAX_ATTEMPTS`] and the queue moves on. A write made directly
//! while older entries still wait (after the primary came back) can come
//! before them, and the rule is that the latest intent wins:
//! - a join or leave carries the time it was asked for, and a replayed one
//!   older than the latest recorded for the same user and issue changes
//!   nothing: its status ends `superseded` ([`crate::store::membership`]), and
//!   the newer answer the client got stays true;
//! - posts, synonyms, actions and new issues are new rows each, kept with
//!   the time they were first planned: a replay adds them where they
//!   belong, whatever came in between.
//!
//! One outbox object serves the whole deployment: it only takes writes
//! while the primary is away, when throughput is bounded by the clients'
//! retries anyway.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{Method, Response};

use crate::domain::writes::{Fresh, Idempotency, StoredWrite};
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult, Code};
use crate::objects::client;
use crate::store::membership::Change;

/// The name of the one outbox object.
pub const OBJECT_NAME: &str = "outbox";
/// Replays of one entry that fail for another reason than an absent
/// primary before it is marked failed.
pub const MAX_ATTEMPTS: u32 = 5;
/// Applied and failed entries are kept this long for their status URL.
pub const KEEP_DONE_MS: u64 = 24 * 3600 * 1000;

/// A write waiting for the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Queued {
    /// A new issue, post, synonym or action, exactly as first planned.
    Write {
        write: StoredWrite,
        user_id: String,
        fresh: Fresh,
        now_ms: u64,
        idempotency: Option<Idempotency>,
    },
    Membership {
        change: Change,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Applied,
    /// A join or leave that a newer one of the same user and issue, made
    /// after it, overtook: not applied, so the newer one stands.
    Superseded,
    Failed,
}

/// The reason a superseded entry's status gives.
pub const SUPERSEDED: &str = "a newer join or leave of the same issue by the same user was made after this one; this one was not applied";

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Applied => "applied",
            Status::Superseded => "superseded",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "queued" => Some(Status::Queued),
            "applied" => Some(Status::Applied),
            "superseded" => Some(Status::Superseded),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// Is this failure one to keep the write for (the primary, or the counter
/// object in front of it, is away)?
pub fn should_queue(e: &AppError) -> bool {
    matches!(e.code, Code::PrimaryUnavailable | Code::CounterUnavailable)
}

/// What a replay's result means for the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    Applied,
    /// The primary is still away: stop, keep the order, try again later.
    Wait,
    /// Try this entry again later (until [`MAX_ATTEMPTS`]).
    Retry(String),
    Failed(String),
}

/// `row_table.id` is the write's own row (e.g. `feed.id`): meeting it means
/// an earlier attempt committed.
pub fn replayed(result: &AppResult<()>, row_table: Option<&str>, attempts: u32) -> Replayed {
    let e = match result {
        Ok(()) => return Replayed::Applied,
        Err(e) => e,
    };
    if should_queue(e) {
        return Replayed::Wait;
    }
    let reason = e
        .details
        .as_ref()
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_default();
    if e.code == Code::Conflict {
        let own_row = row_table.is_some_and(|t| reason.contains(&format!("{t}.id")));
        // The idempotency record of this very request exists: applied too.
        if own_row || reason.contains("idempotency_keys") {
            return Replayed::Applied;
        }
    }
    let why = format!("{} {}: {}", e.status, e.code, e.message);
    if e.status >= 500 && attempts < MAX_ATTEMPTS {
        Replayed::Retry(why)
    } else {
        Replayed::Failed(why)
    }
}

/// The pause before the next replay while the primary is away: growing
/// from 1 s to 30 s.
pub fn wait_ms(consecutive_waits: u32) -> u64 {
    1_000u64
        .saturating_mul(2u64.saturating_pow(consecutive_waits.min(5)))
        .min(30_000)
}

/// The answer a queued entry's enqueue gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    /// How many entries wait ahead of it.
    pub ahead: u64,
}

fn unavailable(e: impl std::fmt::Display) -> AppError {
    let mut err = AppError::new(
        503,
        Code::PrimaryUnavailable,
        "the database is unavailable and the write could not be kept; retry shortly",
    )
    .with_details(json!({ "reason": format!("outbox: {e}") }));
    err.retry_after = Some(5);
    err
}

async fn call(
    ctx: &Ctx,
    method: Method,
    path: &str,
    body: Option<String>,
) -> AppResult<(u16, String)> {
    let reply = client::call(ctx, "OUTBOX", OBJECT_NAME, method, path, body)
        .await
        .map_err(unavailable)?;
    Ok((reply.status, reply.text))
}

/// Keeps `queued` in the outbox; its receipt.
pub async fn enqueue(ctx: &Ctx, queued: &Queued) -> AppResult<Receipt> {
    let body = serde_json::to_string(queued).map_err(AppError::internal)?;
    let (status, text) = call(ctx, Method::Post, "/enqueue", Some(body)).await?;
    if status != 200 {
        return Err(unavailable(format!("answered {status}: {text:.200}")));
    }
    let receipt: Receipt = serde_json::from_str(&text).map_err(unavailable)?;
    tracing::warn!(request_id = %ctx.request_id, outbox_id = %receipt.id, ahead = receipt.ahead, "primary unavailable: write kept in the outbox");
    Ok(receipt)
}

/// The `202` for a kept write.
pub fn accepted(receipt: &Receipt, extra: Value, set_cookies: &[String]) -> AppResult<Response> {
    let location = format!("/api/outbox/{}", receipt.id);
    let mut body = json!({
        "queued": true,
        "id": receipt.id,
        "status": "queued",
        "status_url": location,
        "ahead": receipt.ahead,
    });
    if let (Some(b), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(extra.clone());
    }
    let mut response = json_response(202, &body)?;
    let headers = response.headers_mut();
    headers.set("Location", &location)?;
    headers.set("Retry-After", "5")?;
    for cookie in set_cookies {
        headers.append("Set-Cookie", cookie)?;
    }
    Ok(response)
}

/// `GET /api/outbox/:id`.
pub async fn status(ctx: &Ctx, id: &crate::domain::ids::Id) -> AppResult<Response> {
    let (status, text) = call(ctx, Method::Get, &format!("/status/{}", id.as_str()), None).await?;
    match status {
        200 => {
            let body: Value = serde_json::from_str(&text).map_err(AppError::internal)?;
            Ok(json_response(200, &body)?)
        }
        404 => Err(AppError::not_found(format!(
            "no queued write has the id {} (entries are kept a day after they are done)",
            id.as_str()
        ))),
        other => Err(AppError::internal(format!(
            "outbox answered {other}: {text:.200}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(reason: &str) -> AppResult<()> {
        Err(AppError::new(409, Code::Conflict, "x").with_details(json!({ "reason": reason })))
    }

    #[test]
    fn replays() {
        assert_eq!(replayed(&Ok(()), Some("feed"), 1), Replayed::Applied);
        assert_eq!(
            replayed(&Err(AppError::primary_unavailable("down")), Some("feed"), 9),
            Replayed::Wait
        );
        // The first attempt had committed after all.
        assert_eq!(
            replayed(
                &conflict("UNIQUE constraint failed: feed.id"),
                Some("feed"),
                1
            ),
            Replayed::Applied
        );
        assert_eq!(
            replayed(
                &conflict("UNIQUE constraint failed: idempotency_keys.scope, idempotency_keys.key"),
                Some("feed"),
                1
            ),
            Replayed::Applied
        );
        // Someone else's row: a real conflict.
        assert!(matches!(
            replayed(
                &conflict("UNIQUE constraint failed: synonyms.issue_id, synonyms.term"),
                Some("synonyms"),
                1
            ),
            Replayed::Failed(_)
        ));
        assert!(matches!(
            replayed(&Err(AppError::not_found("no issue")), Some("feed"), 1),
            Replayed::Failed(r) if r.contains("404")
        ));
        assert!(matches!(
            replayed(&Err(AppError::internal("x")), None, 1),
            Replayed::Retry(_)
        ));
        assert!(matches!(
            replayed(&Err(AppError::internal("x")), None, MAX_ATTEMPTS),
            Replayed::Failed(_)
        ));
    }

    #[test]
    fn waits_grow_and_cap() {
        assert_eq!(wait_ms(0), 1_000);
        assert_eq!(wait_ms(1), 2_000);
        assert_eq!(wait_ms(4), 16_000);
        assert_eq!(wait_ms(5), 30_000);
        assert_eq!(wait_ms(50), 30_000);
    }

    #[test]
    fn what_is_queued() {
        assert!(should_queue(&AppError::primary_unavailable("x")));
        assert!(should_queue(&AppError::new(
            503,
            Code::CounterUnavailable,
            "x"
        )));
        assert!(!should_queue(&AppError::new(
            503,
            Code::LimiterUnavailable,
            "x"
        )));
        assert!(!should_queue(&AppError::not_found("x")));
    }

    #[test]
    fn entries_round_trip_as_json() {
        let q = Queued::Write {
            write: StoredWrite {
                kind: crate::domain::writes::WriteKind::Post,
                issue_id: Some("x".into()),
                body: Some(json!({"content": "hi"})),
            },
            user_id: "u".into(),
            fresh: Fresh {
                row: "r".into(),
                links: vec![],
            },
            now_ms: 5,
            idempotency: None,
        };
        let json = serde_json::to_string(&q).expect("json");
        assert!(json.contains("\"kind\":\"write\""));
        assert_eq!(serde_json::from_str::<Queued>(&json).expect("back"), q);
    }
}
