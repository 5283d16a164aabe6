//! Bots: `POST /api/bot` (the seed's `{action, params}` contract), the
//! WhatsApp Cloud API and Telegram webhooks, and the chat command language
//! both channels share.
//!
//! - [`command`]: the text commands, parsed in plain Rust.
//! - [`chat`]: runs a command for a chat user and words the reply.
//! - [`api`]: `POST /api/bot`.
//! - [`whatsapp`], [`telegram`]: the webhooks (signature or secret first,
//!   then dedupe, `200` at once, the work after the response).
//! - [`inbox`]: each inbound event claimed once, the per-sender limit.
//! - [`outbound`]: replies sent with retries; a reply that cannot be sent
//!   is recorded in `outbound_messages` with the reason.
//!
//! Bot users are found by a linked identity (`user_identities`): a phone
//! number (E.164) for WhatsApp and `POST /api/bot`, a Telegram user id for
//! Telegram. An unknown user gets a `users` row on their first write, not on
//! a read.

pub mod api;
pub mod chat;
pub mod command;
pub mod inbox;
pub mod outbound;
pub mod telegram;
pub mod whatsapp;

use libsql::Value as V;
use serde_json::Value;

use crate::cache;
use crate::context::Ctx;
use crate::db::{Query, Record};
use crate::error::{AppError, AppResult};
use crate::ids::Id;
use crate::issues::ListQuery;
use crate::reads::Read;

/// Who is talking to a bot: a provider of `user_identities` and the
/// subject it knows them by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    /// `phone` or `telegram`.
    pub provider: &'static str,
    pub subject: String,
}

impl ChatUser {
    pub fn phone(phone: &crate::phone::PhoneE164) -> ChatUser {
        ChatUser {
            provider: "phone",
            subject: phone.as_str().to_owned(),
        }
    }

    pub fn telegram(user_id: i64) -> ChatUser {
        ChatUser {
            provider: "telegram",
            subject: user_id.to_string(),
        }
    }

    /// The rate-limit subject (the bot policy is per phone, or per
    /// Telegram user).
    pub fn limit_subject(&self) -> String {
        format!("{}:{}", self.provider, self.subject)
    }
}

fn text(s: &str) -> V {
    V::Text(s.to_owned())
}

/// The user of a chat identity, if they have one.
pub async fn find_user(ctx: &Ctx, who: &ChatUser) -> AppResult<Option<String>> {
    let rows = ctx
        .db()
        .queries(vec![lookup_query(who)])
        .await?
        .pop()
        .unwrap_or_default();
    Ok(user_of(&rows))
}

fn lookup_query(who: &ChatUser) -> Query {
    Query::new(
        "SELECT user_id FROM user_identities WHERE provider = ?1 AND subject = ?2",
        vec![text(who.provider), text(&who.subject)],
    )
}

fn user_of(rows: &[Record]) -> Option<String> {
    rows.first()
        .and_then(|r| r.get("user_id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The statements that give a chat identity a user when it has none (a new
/// `users` row and its verified identity), then read its user. Safe under
/// concurrency: a second first message finds the identity the first wrote.
pub fn ensure_queries(who: &ChatUser, new_user: &str, new_identity: &str) -> Vec<Query> {
    let phone = if who.provider == "phone" {
        text(&who.subject)
    } else {
        V::Null
    };
    let unknown = "NOT EXISTS (SELECT 1 FROM user_identities WHERE provider = ?3 AND subject = ?4)";
    vec![
        // ON CONFLICT without a target also covers the unique phone: a
        // seed-era user holding the number keeps it.
        Query::new(
            format!("INSERT INTO users (id, phone) SELECT ?1, ?2 WHERE {unknown} ON CONFLICT DO NOTHING"),
            vec![text(new_user), phone, text(who.provider), text(&who.subject)],
        ),
        Query::new(
            "INSERT INTO user_identities (id, user_id, provider, subject, verified_at) \
             SELECT ?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2) \
             ON CONFLICT (provider, subject) DO NOTHING",
            vec![
                text(new_identity),
                text(new_user),
                text(who.provider),
                text(&who.subject),
            ],
        ),
        lookup_query(who),
    ]
}

/// The user of a chat identity, created on the first write (one round trip).
pub async fn ensure_user(ctx: &Ctx, who: &ChatUser) -> AppResult<String> {
    let new_user = uuid::Uuid::new_v4().to_string();
    let new_identity = uuid::Uuid::new_v4().to_string();
    let written = ctx
        .db()
        .transaction(ensure_queries(who, &new_user, &new_identity))
        .await?;
    written
        .last()
        .and_then(|w| user_of(&w.rows))
        .ok_or_else(|| AppError::internal("a chat user could not be created"))
}

/// A read through the KV cache, as the HTTP routes serve it, parsed.
pub async fn cached(ctx: &Ctx, read: &Read) -> AppResult<Value> {
    let served = cache::serve(ctx, read).await?;
    serde_json::from_str(&served.entry.body).map_err(AppError::internal)
}

/// Issues matching `words`, at most `limit`, best first.
pub async fn search(ctx: &Ctx, words: &str, limit: usize) -> AppResult<Value> {
    let query = ListQuery::parse([("q", words.to_owned()), ("limit", limit.to_string())])?;
    cached(ctx, &Read::Issues(query)).await
}

pub async fn issue(ctx: &Ctx, id: &Id) -> AppResult<Value> {
    cached(ctx, &Read::Issue(id.clone())).await
}

pub async fn actions(ctx: &Ctx, id: &Id) -> AppResult<Value> {
    cached(ctx, &Read::Actions(id.clone())).await
}

/// The user's issues, newest membership first (never cached: per user).
pub async fn my_issues(ctx: &Ctx, user_id: &str) -> AppResult<Vec<Record>> {
    let mut results = ctx
        .db()
        .queries(crate::me::queries(user_id))
        .await?
        .into_iter();
    Ok(results.nth(1).unwrap_or_default())
}
