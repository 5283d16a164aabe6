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
//! Telegram; a phone with no identity row is also found in a seed-era
//! `users.phone`, and gets its identity on its first write. An unknown user
//! gets a `users` row on their first write, not on a read.

pub mod api;
pub mod chat;
pub mod command;
pub mod inbox;
pub mod outbound;
pub mod telegram;
pub mod whatsapp;

use crate::store::value::{self as v, text};
use serde_json::Value;

use crate::domain::ids::Id;
use crate::domain::paging::Page;
use crate::edge::cache;
use crate::edge::reads::Read;
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult};
use crate::store::db::{Query, Record};
use crate::store::issues::ListQuery;

/// Who is talking to a bot: a provider of `user_identities` and the
/// subject it knows them by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatUser {
    /// `phone` or `telegram`.
    pub provider: &'static str,
    pub subject: String,
}

impl ChatUser {
    pub fn phone(phone: &crate::domain::phone::PhoneE164) -> ChatUser {
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

/// The user of a chat identity: its `user_identities` row, else (for a
/// phone) a seed-era user holding the number in `users.phone`, the way
/// [`crate::routes::phone_link`] finds the owner of a phone.
fn lookup_query(who: &ChatUser) -> Query {
    Query::new(
        "SELECT user_id FROM (\
           SELECT user_id, 0 AS pref FROM user_identities WHERE provider = ?1 AND subject = ?2 \
           UNION ALL SELECT id, 1 FROM users WHERE ?1 = 'phone' AND phone = ?2\
         ) ORDER BY pref LIMIT 1",
        vec![text(who.provider), text(&who.subject)],
    )
}

fn user_of(rows: &[Record]) -> Option<String> {
    rows.first()
        .and_then(|r| r.get("user_id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The statements that give a chat identity a user when it has none, then
/// read its user: a new `users` row unless the identity is known or (for a
/// phone) a seed-era user already holds the number, then the verified
/// identity, pointing at the new user or at that seed-era user. Safe under
/// concurrency: a second first message finds the identity the first wrote.
pub fn ensure_queries(who: &ChatUser, new_user: &str, new_identity: &str) -> Vec<Query> {
    let phone = if who.provider == "phone" {
        text(&who.subject)
    } else {
        v::null()
    };
    let unknown = "NOT EXISTS (SELECT 1 FROM user_identities WHERE provider = ?3 AND subject = ?4)";
    vec![
        // ON CONFLICT without a target also covers the unique phone: a
        // seed-era user holding the number keeps it, and no user is added.
        Query::new(
            format!("INSERT INTO users (id, phone) SELECT ?1, ?2 WHERE {unknown} ON CONFLICT DO NOTHING"),
            vec![text(new_user), phone, text(who.provider), text(&who.subject)],
        ),
        // The new user, else the user holding the phone (the new user holds
        // it too when it was written, so the phone alone would do; the id
        // covers Telegram).
        Query::new(
            "INSERT INTO user_identities (id, user_id, provider, subject, verified_at) \
             SELECT ?1, u.id, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') FROM users u \
             WHERE u.id = ?2 OR (?3 = 'phone' AND u.phone = ?4) \
             ORDER BY u.id = ?2 DESC LIMIT 1 \
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

/// The issue's first page of actions (oldest first).
pub async fn actions(ctx: &Ctx, id: &Id) -> AppResult<Value> {
    cached(ctx, &Read::Actions(id.clone(), Page::first())).await
}

/// The user's issues, newest membership first (never cached: per user).
pub async fn my_issues(ctx: &Ctx, user_id: &str) -> AppResult<Vec<Record>> {
    let mut results = ctx
        .db()
        .queries(crate::routes::me::queries(user_id))
        .await?
        .into_iter();
    Ok(results.nth(1).unwrap_or_default())
}

/// The lookup and first-write statements against the real engine.
#[cfg(test)]
mod on_libsql {
    use super::*;
    use crate::store::test_db::TestDb;

    const SEED_ERA: &str = "10000000-0000-4000-8000-000000000001";

    fn phone(p: &str) -> ChatUser {
        ChatUser {
            provider: "phone",
            subject: p.to_owned(),
        }
    }

    fn find(db: &mut TestDb, who: &ChatUser) -> Option<String> {
        let rows = db.reads(vec![lookup_query(who)]).expect("lookup");
        user_of(&rows[0])
    }

    fn ensure(db: &mut TestDb, who: &ChatUser, new_user: &str) -> Option<String> {
        let written = db
            .transaction(ensure_queries(
                who,
                new_user,
                &uuid::Uuid::new_v4().to_string(),
            ))
            .expect("ensure");
        written.last().and_then(|w| user_of(&w.rows))
    }

    #[test]
    fn a_seed_era_phone_user_is_found_and_gets_its_identity() {
        let mut db = TestDb::migrated();
        db.exec(&format!(
            "INSERT INTO users (id, phone) VALUES ('{SEED_ERA}', '+447700900001');"
        ));
        let who = phone("+447700900001");
        assert_eq!(find(&mut db, &who).as_deref(), Some(SEED_ERA));
        assert_eq!(ensure(&mut db, &who, "new-1").as_deref(), Some(SEED_ERA));
        assert_eq!(ensure(&mut db, &who, "new-2").as_deref(), Some(SEED_ERA));
        assert_eq!(
            db.int(&format!(
                "SELECT count(*) FROM user_identities WHERE user_id = '{SEED_ERA}' \
                 AND provider = 'phone' AND subject = '+447700900001'"
            )),
            1
        );
        assert_eq!(db.int("SELECT count(*) FROM users"), 1, "no user added");
    }

    #[test]
    fn an_identity_wins_over_users_phone() {
        let mut db = TestDb::migrated();
        db.exec(&format!(
            "INSERT INTO users (id, phone) VALUES ('{SEED_ERA}', '+447700900002'), ('linked', NULL);
             INSERT INTO user_identities (id, user_id, provider, subject)
               VALUES ('i', 'linked', 'phone', '+447700900002');"
        ));
        let who = phone("+447700900002");
        assert_eq!(find(&mut db, &who).as_deref(), Some("linked"));
        assert_eq!(ensure(&mut db, &who, "new").as_deref(), Some("linked"));
        assert_eq!(db.int("SELECT count(*) FROM users"), 2);
    }

    #[test]
    fn unknown_people_get_a_user_on_the_first_write_only() {
        let mut db = TestDb::migrated();
        let tg = ChatUser::telegram(42);
        let who = phone("+447700900003");
        assert_eq!(find(&mut db, &who), None);
        assert_eq!(find(&mut db, &tg), None);
        assert_eq!(ensure(&mut db, &who, "p-1").as_deref(), Some("p-1"));
        assert_eq!(ensure(&mut db, &who, "p-2").as_deref(), Some("p-1"));
        assert_eq!(ensure(&mut db, &tg, "t-1").as_deref(), Some("t-1"));
        assert_eq!(ensure(&mut db, &tg, "t-2").as_deref(), Some("t-1"));
        assert_eq!(db.int("SELECT count(*) FROM users"), 2);
    }
}
