//! Inbound chat events, shared by the WhatsApp and Telegram webhooks:
//! claiming each event once in `webhook_events`, marking it processed, and
//! the per-sender `bot` rate limit.
//!
//! A claim is one row per (provider, event id). A redelivery finds the row
//! and does nothing, unless the claim is unfinished (`processed_at` unset)
//! and older than [`RECLAIM_AFTER_SECS`]: then the isolate that took it
//! died before finishing, and the redelivery takes it over.

use crate::store::value as v;

use super::ChatUser;
use crate::domain::rate_limit;
use crate::http::context::Ctx;
use crate::http::error::AppResult;
use crate::store::db::Query;

/// An unfinished claim older than this may be taken by a redelivery.
pub const RECLAIM_AFTER_SECS: u64 = 300;

/// Claims an inbound event: one row affected when it is new (or an
/// unfinished claim old enough to be taken over).
pub fn claim_query(provider: &str, event_id: &str) -> Query {
    Query::new(
        format!(
            "INSERT INTO webhook_events (provider, event_id) VALUES (?1, ?2) \
             ON CONFLICT (provider, event_id) DO UPDATE \
             SET received_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE webhook_events.processed_at IS NULL \
             AND webhook_events.received_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{RECLAIM_AFTER_SECS} seconds')"
        ),
        vec![v::text(provider.to_owned()), v::text(event_id.to_owned())],
    )
}

pub fn processed_query(provider: &str, event_id: &str) -> Query {
    Query::new(
        "UPDATE webhook_events SET processed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE provider = ?1 AND event_id = ?2",
        vec![v::text(provider.to_owned()), v::text(event_id.to_owned())],
    )
}

/// Gives back unfinished claims (events deferred to a redelivery), in one
/// round trip.
pub fn release_query(provider: &str, event_ids: &[String]) -> Query {
    Query::new(
        "DELETE FROM webhook_events WHERE provider = ?1 AND processed_at IS NULL \
         AND event_id IN (SELECT value FROM json_each(?2))",
        vec![
            v::text(provider.to_owned()),
            v::text(serde_json::Value::from(event_ids.to_vec()).to_string()),
        ],
    )
}

pub async fn release(ctx: &Ctx, provider: &str, event_ids: &[String]) -> AppResult<()> {
    ctx.db()
        .transaction(vec![release_query(provider, event_ids)])
        .await
        .map(|_| ())
}

/// Claims every event of a delivery in one round trip; the ids that are new.
pub async fn claim(ctx: &Ctx, provider: &str, ids: &[String]) -> AppResult<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let queries = ids.iter().map(|id| claim_query(provider, id)).collect();
    let written = ctx.db().transaction(queries).await?;
    Ok(ids
        .iter()
        .zip(written)
        .filter(|(_, w)| w.affected == 1)
        .map(|(id, _)| id.clone())
        .collect())
}

pub async fn mark_processed(ctx: &Ctx, provider: &str, id: &str) {
    if let Err(e) = ctx
        .db()
        .transaction(vec![processed_query(provider, id)])
        .await
    {
        tracing::warn!(request_id = %ctx.request_id, code = %e.code, event = id, "could not mark an event processed");
    }
}

/// The bot policy, per sender; a sender over it gets no answer (answering
/// would feed a flood), and a limiter failure lets the message through.
pub async fn limited(ctx: &Ctx, who: &ChatUser) -> bool {
    let policy = ctx.config.rate_limits.bot;
    match crate::edge::limits::take(ctx, &policy, &who.limit_subject(), 1, false).await {
        Ok(t) if t.granted > 0 => false,
        Ok(t) => {
            tracing::warn!(request_id = %ctx.request_id, who = %who.limit_subject(), retry_after_s = rate_limit::retry_after_secs_of(t.retry_after_ms), "chat message over the bot limit; not answered");
            true
        }
        Err(e) => {
            tracing::warn!(request_id = %ctx.request_id, code = %e.code, "rate limiter failed; chat message answered");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_taken_over_only_when_unfinished_and_old() {
        let q = claim_query("whatsapp", "wamid.1");
        assert!(q.sql.contains("processed_at IS NULL"));
        assert!(q.sql.contains("-300 seconds"));
        assert_eq!(q.args.len(), 2);
    }
}
