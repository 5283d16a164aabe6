//! Who is calling: the signed session cookie ([`crate::domain::session`]), a legacy
//! `qr_user_id` cookie upgraded once, or no one yet.
//!
//! Sessions are created on first need: a read never creates one; the first
//! write of a new visitor does (a new user id, whose `users` row is written
//! in the same transaction as the write itself) and the response sets the
//! cookie.
//!
//! A legacy cookie (the seed app's raw user id) is accepted once: the
//! upgrade records `('cookie', <id>)` in `user_identities`, which only
//! succeeds for an existing user whose legacy id was never upgraded before;
//! the response then carries the signed cookie and clears the legacy one
//! (an error response too: the upgrade has committed). A
//! legacy id presented again later is ignored, so a leaked seed-era id
//! cannot be turned into a session twice.

use crate::store::value as v;

use crate::domain::ids::Id;
use crate::domain::session::{self, Presented, Session, SessionKeys};
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult};
use crate::store::db::Query;

/// The caller, once known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    /// `Set-Cookie` headers the response must carry (a new or upgraded
    /// session, the legacy cookie cleared).
    pub set_cookies: Vec<String>,
}

pub fn keys(ctx: &Ctx) -> AppResult<SessionKeys> {
    SessionKeys::new(
        &ctx.config.session_key_id,
        &ctx.config.session_secret,
        &ctx.config.session_previous,
    )
    .map_err(|e| AppError::internal(format!("session keys: {e}")))
}

fn now_secs() -> u64 {
    worker::Date::now().as_millis() / 1000
}

/// The session the cookies carry, if any; no primary round trip.
pub fn session(ctx: &Ctx, cookie_header: Option<&str>) -> AppResult<Option<Session>> {
    Ok(
        match session::presented(&keys(ctx)?, cookie_header, now_secs()) {
            Presented::Session(s) => Some(s),
            _ => None,
        },
    )
}

/// The caller of a write: the session's user, an upgraded legacy user, or a
/// new user (with a new session).
pub async fn caller(ctx: &Ctx, cookie_header: Option<&str>) -> AppResult<Caller> {
    let keys = keys(ctx)?;
    let now = now_secs();
    match session::presented(&keys, cookie_header, now) {
        Presented::Session(s) => Ok(Caller {
            user_id: s.user_id,
            set_cookies: Vec::new(),
        }),
        Presented::Legacy(id) if upgrade_legacy(ctx, &id).await? => {
            let user = Id::parse(&id, session::LEGACY_COOKIE_NAME)?;
            let cookie = keys.sign(&Session::start(&user, now));
            let set_cookies = vec![
                session::set_cookie_header(&cookie),
                session::clear_legacy_cookie_header(),
            ];
            // Committed: a write that fails after this still hands it over.
            ctx.keep_cookies(&set_cookies);
            Ok(Caller {
                user_id: id,
                set_cookies,
            })
        }
        Presented::Legacy(_) | Presented::None => {
            let user = Id::parse(&uuid::Uuid::new_v4().to_string(), "user")?;
            let cookie = keys.sign(&Session::start(&user, now));
            Ok(Caller {
                user_id: user.as_str().to_owned(),
                set_cookies: vec![session::set_cookie_header(&cookie)],
            })
        }
    }
}

/// The statement that upgrades a legacy id: one row when the user exists
/// and its legacy id was never upgraded.
pub fn upgrade_query(identity_id: &str, legacy_user_id: &str) -> Query {
    Query::new(
        "INSERT INTO user_identities (id, user_id, provider, subject, verified_at) \
         SELECT ?1, ?2, 'cookie', ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2) \
         ON CONFLICT (provider, subject) DO NOTHING",
        vec![
            v::text(identity_id.to_owned()),
            v::text(legacy_user_id.to_owned()),
        ],
    )
}

async fn upgrade_legacy(ctx: &Ctx, legacy_user_id: &str) -> AppResult<bool> {
    let identity = uuid::Uuid::new_v4().to_string();
    let written = ctx
        .db()
        .transaction(vec![upgrade_query(&identity, legacy_user_id)])
        .await?;
    let upgraded = written.first().is_some_and(|w| w.affected == 1);
    if !upgraded {
        tracing::info!(request_id = %ctx.request_id, "legacy cookie ignored: unknown or already upgraded");
    }
    Ok(upgraded)
}
