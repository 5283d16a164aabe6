//! Linking a phone number to a web user with a one-time code sent over
//! WhatsApp.
//!
//! 1. `POST /api/me/phone` `{"phone": "+447700900123"}`: a 6-digit code is
//!    drawn (uniformly, from the platform's CSPRNG), only its HMAC (keyed
//!    with `SESSION_SECRET`, bound to the user and the phone) is stored in
//!    `otp_codes`, earlier pending codes of this user for this phone are
//!    voided, and the code goes out as the WhatsApp authentication template.
//!    Limited by the `otp` policy per phone (5 an hour by default) on top
//!    of the per-IP write limit. `202`; the session is created if the
//!    caller had none. A code that cannot be sent is voided (`502`).
//! 2. `POST /api/me/phone/verify` `{"phone": ..., "code": "123456"}`: the
//!    attempt is counted first (one transaction: at most 5 per code, so
//!    concurrent guesses cannot exceed it), then compared in constant time.
//!    A code is good for 10 minutes and once.
//!
//! Linking merges: if the phone already belongs to another user (a
//! WhatsApp or `/api/bot` user, or a seed-era user with that phone), that
//! user's memberships, posts and identities move to the caller in the same
//! transaction. A membership both had is kept once (the other row is
//! deleted), the stored counts of the issues involved are recomputed from
//! `user_issues`, and those issues' counter objects are told to recount, so
//! no one is counted twice. Every statement of the merge is idempotent, so
//! two verifies racing with the same code leave the same result.

use crate::domain::time::now_ms;
use crate::store::value::{self as v, text};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use worker::Response;

use crate::domain::phone::PhoneE164;
use crate::domain::time::iso;
use crate::edge::cache;
use crate::edge::identity;
use crate::edge::limits;
use crate::edge::reads;
use crate::http::auth::constant_time_eq;
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult, Code};
use crate::objects;
use crate::routes::bot::{outbound, whatsapp};
use crate::store::db::{Query, Record};

pub const CODE_TTL_MS: u64 = 10 * 60 * 1000;
pub const MAX_ATTEMPTS: i64 = 5;

/// A uniform 6-digit code from 32 random bits (rejecting the top sliver
/// that would bias it).
pub fn code_from(random: u32) -> Option<String> {
    const LIMIT: u32 = 4_294_000_000; // the largest multiple of 10^6 below 2^32
    (random < LIMIT).then(|| format!("{:06}", random % 1_000_000))
}

fn new_code() -> AppResult<String> {
    loop {
        let mut bytes = [0u8; 4];
        getrandom::getrandom(&mut bytes).map_err(AppError::internal)?;
        if let Some(code) = code_from(u32::from_le_bytes(bytes)) {
            return Ok(code);
        }
    }
}

/// The stored form of a code: HMAC-SHA256 over user, phone and code.
pub fn code_hash(secret: &[u8], user_id: &str, phone: &str, code: &str) -> AppResult<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(AppError::internal)?;
    for part in ["otp-v1", user_id, phone, code] {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Exactly the fields `allowed`, each a string.
fn fields<'a>(body: Option<&'a Value>, allowed: &[&str]) -> AppResult<Vec<&'a str>> {
    let object = body
        .and_then(Value::as_object)
        .ok_or_else(|| AppError::validation("body", "must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(AppError::validation(
            unknown,
            "is not a field of this request",
        ));
    }
    allowed
        .iter()
        .map(|name| match object.get(*name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            None | Some(Value::Null) => Err(AppError::validation(name, "is required")),
            Some(_) => Err(AppError::validation(name, "must be a string")),
        })
        .collect()
}

pub fn parse_code(raw: &str) -> AppResult<&str> {
    let code = raw.trim();
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(AppError::validation("code", "must be the 6 digits we sent"))
    }
}

/// The statements that store a new code (and void older pending ones).
pub fn store_queries(
    user_id: &str,
    phone: &str,
    otp_id: &str,
    hash: &str,
    now_ms: u64,
) -> Vec<Query> {
    vec![
        Query::new(
            "INSERT INTO users (id) VALUES (?1) ON CONFLICT (id) DO NOTHING",
            vec![text(user_id)],
        ),
        Query::new(
            "UPDATE otp_codes SET consumed_at = ?3 \
             WHERE user_id = ?1 AND phone = ?2 AND consumed_at IS NULL",
            vec![text(user_id), text(phone), text(iso(now_ms))],
        ),
        Query::new(
            "INSERT INTO otp_codes (id, user_id, phone, code_hash, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            vec![
                text(otp_id),
                text(user_id),
                text(phone),
                text(hash),
                text(iso(now_ms + CODE_TTL_MS)),
            ],
        ),
    ]
}

fn void_query(otp_id: &str, now_ms: u64) -> Query {
    Query::new(
        "UPDATE otp_codes SET consumed_at = ?2 WHERE id = ?1 AND consumed_at IS NULL",
        vec![text(otp_id), text(iso(now_ms))],
    )
}

/// `POST /api/me/phone`.
pub async fn request(
    ctx: &Ctx,
    body: Option<&Value>,
    cookie_header: Option<&str>,
) -> AppResult<Response> {
    let [raw_phone] = fields(body, &["phone"])?[..] else {
        return Err(AppError::internal("fields"));
    };
    let phone = PhoneE164::parse(raw_phone, "phone")?;
    let wa = &ctx.config.whatsapp;
    let (Some(from_number), Some(_)) = (wa.phone_number_id.as_deref(), wa.access_token.as_deref())
    else {
        let mut e = AppError::new(
            503,
            Code::LinkingUnavailable,
            "phone linking is not configured (WHATSAPP_PHONE_NUMBER_ID, WHATSAPP_ACCESS_TOKEN)",
        );
        e.retry_after = Some(3600);
        return Err(e);
    };
    limits::write(ctx, &ctx.config.rate_limits.otp, phone.as_str()).await?;
    let caller = identity::caller(ctx, cookie_header).await?;
    let code = new_code()?;
    let otp_id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let hash = code_hash(
        &ctx.config.session_secret,
        &caller.user_id,
        phone.as_str(),
        &code,
    )?;
    ctx.db()
        .transaction(store_queries(
            &caller.user_id,
            phone.as_str(),
            &otp_id,
            &hash,
            now,
        ))
        .await?;
    // Committed (a new visitor's user row with it): an error from here on
    // still hands over the session, so a retry is the same person.
    ctx.keep_cookies(&caller.set_cookies);
    let to = phone.as_str().trim_start_matches('+');
    let message = whatsapp::code_message(ctx, from_number, to, &code);
    if !outbound::send(ctx, &message).await {
        // Best effort: a code never sent cannot be guessed from a message,
        // and it expires by itself. The answer says what happened: 502.
        if let Err(e) = ctx
            .db()
            .transaction(vec![void_query(&otp_id, now_ms())])
            .await
        {
            tracing::warn!(request_id = %ctx.request_id, code = %e.code, "an unsent one-time code was not voided; it expires by itself");
        }
        let mut e = AppError::new(
            502,
            Code::CodeNotSent,
            "WhatsApp did not accept the code; try again in a minute",
        );
        e.retry_after = Some(60);
        return Err(e);
    }
    let mut response = json_response(
        202,
        &json!({
            "phone": phone.as_str(),
            "sent_via": "whatsapp",
            "expires_in_secs": CODE_TTL_MS / 1000,
            "attempts": MAX_ATTEMPTS,
        }),
    )?;
    for cookie in &caller.set_cookies {
        response.headers_mut().append("Set-Cookie", cookie)?;
    }
    Ok(response)
}

/// Counts an attempt on the caller's latest live code for the phone (when
/// it has attempts left) and reads that code's state.
pub fn attempt_queries(user_id: &str, phone: &str, now_ms: u64) -> Vec<Query> {
    let now = iso(now_ms);
    vec![
        Query::new(
            "UPDATE otp_codes SET attempts = attempts + 1 WHERE id = \
             (SELECT id FROM otp_codes WHERE user_id = ?1 AND phone = ?2 AND consumed_at IS NULL \
              AND expires_at > ?3 ORDER BY created_at DESC LIMIT 1) \
             AND attempts < ?4 RETURNING id, code_hash, attempts",
            vec![text(user_id), text(phone), text(&now), v::int(MAX_ATTEMPTS)],
        ),
        Query::new(
            "SELECT attempts, expires_at > ?3 AS live FROM otp_codes \
             WHERE user_id = ?1 AND phone = ?2 AND consumed_at IS NULL \
             ORDER BY created_at DESC LIMIT 1",
            vec![text(user_id), text(phone), text(&now)],
        ),
    ]
}

/// What an attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The code to compare against, and the attempts used with this one.
    Counted {
        otp_id: String,
        hash: String,
        attempts: i64,
    },
    NoCode,
    Expired,
    TooManyAttempts,
}

pub fn attempt_of(counted: &[Record], latest: &[Record]) -> Attempt {
    let get_str = |r: &Record, k: &str| r.get(k).and_then(Value::as_str).map(str::to_owned);
    if let Some(r) = counted.first() {
        if let (Some(otp_id), Some(hash)) = (get_str(r, "id"), get_str(r, "code_hash")) {
            return Attempt::Counted {
                otp_id,
                hash,
                attempts: r
                    .get("attempts")
                    .and_then(Value::as_i64)
                    .unwrap_or(MAX_ATTEMPTS),
            };
        }
    }
    match latest.first() {
        None => Attempt::NoCode,
        Some(r) if r.get("live").and_then(Value::as_i64) != Some(1) => Attempt::Expired,
        Some(_) => Attempt::TooManyAttempts,
    }
}

/// `B`, the user the phone belongs to now (if not the caller `?1`): by
/// linked identity, else by a seed-era `users.phone`. `?2` is the phone.
const OWNER: &str =
    "(SELECT user_id FROM user_identities WHERE provider = 'phone' AND subject = ?2 \
     UNION ALL SELECT id FROM users WHERE phone = ?2 LIMIT 1)";

/// The link and merge, in order (see the module doc). Statement 3's rows
/// are the issues where both users were members.
pub fn link_queries(
    user_id: &str,
    phone: &str,
    otp_id: &str,
    identity_id: &str,
    now_ms: u64,
) -> Vec<Query> {
    let now = iso(now_ms);
    let wp = || vec![text(user_id), text(phone)];
    let moved = |table: &str| {
        Query::new(
            format!("UPDATE {table} SET user_id = ?1 WHERE user_id = {OWNER} AND user_id <> ?1"),
            wp(),
        )
    };
    let recount_where = "IN (SELECT issue_id FROM user_issues WHERE user_id = ?1)";
    vec![
        Query::new(
            "UPDATE otp_codes SET consumed_at = ?2 WHERE id = ?1",
            vec![text(otp_id), text(&now)],
        ),
        Query::new(
            "INSERT INTO users (id) VALUES (?1) ON CONFLICT (id) DO NOTHING",
            vec![text(user_id)],
        ),
        // Memberships the caller lacks move over...
        Query::new(
            format!(
                "UPDATE OR IGNORE user_issues SET user_id = ?1 \
                 WHERE user_id = {OWNER} AND user_id <> ?1"
            ),
            wp(),
        ),
        // ...and the ones both had are kept once.
        Query::new(
            format!(
                "DELETE FROM user_issues WHERE user_id = {OWNER} AND user_id <> ?1 \
                 RETURNING issue_id"
            ),
            wp(),
        ),
        moved("feed"),
        moved("feed_archive"),
        Query::new(
            format!(
                "UPDATE issues SET rioter_count = \
                 (SELECT count(*) FROM user_issues ui WHERE ui.issue_id = issues.id) \
                 WHERE id {recount_where}"
            ),
            vec![text(user_id)],
        ),
        Query::new(
            format!(
                "UPDATE issue_organisation SET rioter_count = \
                 (SELECT count(*) FROM user_issues ui WHERE ui.issue_id = issue_organisation.issue_id \
                  AND ui.organisation_id = issue_organisation.organisation_id) \
                 WHERE issue_id {recount_where}"
            ),
            vec![text(user_id)],
        ),
        // The other user's other identities (Telegram, a legacy cookie) now
        // lead to the caller too.
        Query::new(
            format!(
                "UPDATE OR IGNORE user_identities SET user_id = ?1 \
                 WHERE user_id = {OWNER} AND user_id <> ?1"
            ),
            wp(),
        ),
        Query::new(
            "UPDATE users SET phone = NULL WHERE phone = ?2 AND id <> ?1",
            wp(),
        ),
        Query::new("UPDATE users SET phone = ?2 WHERE id = ?1", wp()),
        Query::new(
            "INSERT INTO user_identities (id, user_id, provider, subject, verified_at) \
             VALUES (?1, ?2, 'phone', ?3, ?4) \
             ON CONFLICT (provider, subject) DO UPDATE \
             SET user_id = excluded.user_id, verified_at = excluded.verified_at",
            vec![text(identity_id), text(user_id), text(phone), text(&now)],
        ),
    ]
}

/// `POST /api/me/phone/verify`.
pub async fn verify(
    ctx: &Ctx,
    body: Option<&Value>,
    cookie_header: Option<&str>,
) -> AppResult<Response> {
    let [raw_phone, raw_code] = fields(body, &["phone", "code"])?[..] else {
        return Err(AppError::internal("fields"));
    };
    let phone = PhoneE164::parse(raw_phone, "phone")?;
    let code = parse_code(raw_code)?;
    let Some(session) = identity::session(ctx, cookie_header)? else {
        return Err(AppError::new(
            401,
            Code::NoSession,
            "verify from the browser that asked for the code",
        ));
    };
    let user = session.user_id;
    let now = now_ms();
    let mut written = ctx
        .db()
        .transaction(attempt_queries(&user, phone.as_str(), now))
        .await?
        .into_iter();
    let counted = written.next().map(|w| w.rows).unwrap_or_default();
    let latest = written.next().map(|w| w.rows).unwrap_or_default();
    let (otp_id, attempts) = match attempt_of(&counted, &latest) {
        Attempt::Counted {
            otp_id,
            hash,
            attempts,
        } => {
            let given = code_hash(&ctx.config.session_secret, &user, phone.as_str(), code)?;
            if !constant_time_eq(given.as_bytes(), hash.as_bytes()) {
                let left = (MAX_ATTEMPTS - attempts).max(0);
                return Err(AppError::new(
                    400,
                    Code::WrongCode,
                    format!("that is not the code we sent; {left} attempts left"),
                )
                .with_details(json!({ "field": "code", "attempts_left": left })));
            }
            (otp_id, attempts)
        }
        Attempt::NoCode => {
            return Err(AppError::new(
                400,
                Code::NoCode,
                "no code is pending for this phone; ask for one first",
            )
            .with_details(json!({ "field": "phone" })))
        }
        Attempt::Expired => {
            return Err(AppError::new(
                400,
                Code::CodeExpired,
                "the code has expired; ask for a new one",
            )
            .with_details(json!({ "field": "code" })))
        }
        Attempt::TooManyAttempts => {
            return Err(AppError::new(
                429,
                Code::TooManyAttempts,
                "too many wrong codes; ask for a new one",
            )
            .with_details(json!({ "field": "code" })))
        }
    };
    let identity_id = uuid::Uuid::new_v4().to_string();
    let written = ctx
        .db()
        .transaction(link_queries(
            &user,
            phone.as_str(),
            &otp_id,
            &identity_id,
            now,
        ))
        .await?;
    let moved = written.get(2).map_or(0, |w| w.affected);
    let doubled: Vec<String> = written
        .get(3)
        .map(|w| {
            w.rows
                .iter()
                .filter_map(|r| r.get("issue_id").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // Committed: the counters and caches catch up; a failure here is logged,
    // the reconcile job repairs what is left.
    let mut tags = Vec::new();
    for issue in &doubled {
        if let Err(e) = objects::issue_counter::recount(ctx, issue).await {
            tracing::warn!(request_id = %ctx.request_id, issue, code = %e.code, "recount after a merge failed");
        }
        tags.push(reads::issue_tag_of(issue));
    }
    if !tags.is_empty() {
        tags.push(reads::ISSUES_TAG.to_owned());
        if let Err(e) = cache::invalidate(ctx, &tags).await {
            tracing::warn!(request_id = %ctx.request_id, code = %e.code, "cache invalidation after a merge failed");
        }
    }
    Ok(json_response(
        200,
        &json!({
            "phone": phone.as_str(),
            "linked": true,
            "attempts_used": attempts,
            "merged": { "memberships_moved": moved, "memberships_in_both": doubled.len() },
        }),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_unbiased() {
        assert_eq!(code_from(0).as_deref(), Some("000000"));
        assert_eq!(code_from(1_234_567).as_deref(), Some("234567"));
        assert_eq!(code_from(4_293_999_999).as_deref(), Some("999999"));
        assert_eq!(code_from(4_294_000_000), None);
        assert_eq!(code_from(u32::MAX), None);
        // Every residue has the same number of sources below the limit.
        assert_eq!(4_294_000_000u64 % 1_000_000, 0);
    }

    #[test]
    fn hashes_bind_user_phone_and_code() {
        let h = |k: &[u8], u: &str, p: &str, c: &str| code_hash(k, u, p, c).expect("hash");
        let hash = h(b"k", "u", "+447700900123", "123456");
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, h(b"k", "u", "+447700900123", "123456"));
        assert_ne!(hash, h(b"k", "v", "+447700900123", "123456"));
        assert_ne!(hash, h(b"k", "u", "+447700900124", "123456"));
        assert_ne!(hash, h(b"k", "u", "+447700900123", "123457"));
        assert_ne!(hash, h(b"j", "u", "+447700900123", "123456"));
        // Parts cannot run into each other.
        assert_ne!(h(b"k", "ab", "c", "1"), h(b"k", "a", "bc", "1"));
    }

    #[test]
    fn code_input() {
        assert_eq!(parse_code(" 012345 ").ok(), Some("012345"));
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", "12 456"] {
            assert!(parse_code(bad).is_err(), "{bad:?}");
        }
    }

    fn rows(v: Value) -> Vec<Record> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|r| r.as_object().expect("object").clone())
            .collect()
    }

    #[test]
    fn attempts() {
        let counted = rows(json!([{"id": "o", "code_hash": "h", "attempts": 2}]));
        assert_eq!(
            attempt_of(&counted, &[]),
            Attempt::Counted {
                otp_id: "o".into(),
                hash: "h".into(),
                attempts: 2
            }
        );
        assert_eq!(attempt_of(&[], &[]), Attempt::NoCode);
        assert_eq!(
            attempt_of(&[], &rows(json!([{"attempts": 0, "live": 0}]))),
            Attempt::Expired
        );
        assert_eq!(
            attempt_of(&[], &rows(json!([{"attempts": 5, "live": 1}]))),
            Attempt::TooManyAttempts
        );
    }

    #[test]
    fn fields_are_strict() {
        let ok = json!({"phone": "+1", "code": "1"});
        assert_eq!(
            fields(Some(&ok), &["phone", "code"]).expect("ok"),
            ["+1", "1"]
        );
        for (body, field) in [
            (json!({"phone": "+1"}), "code"),
            (json!({"phone": "+1", "code": 1}), "code"),
            (json!({"phone": "+1", "code": "1", "x": 1}), "x"),
            (json!([]), "body"),
        ] {
            let e = fields(Some(&body), &["phone", "code"]).expect_err("refused");
            assert_eq!(e.details.expect("details")["field"], field);
        }
    }

    #[test]
    fn the_merge_moves_before_it_repoints_the_identity() {
        let qs = link_queries("w", "+447700900123", "o", "i", 0);
        let pos = |needle: &str| {
            qs.iter()
                .position(|q| q.sql.contains(needle))
                .unwrap_or_else(|| panic!("{needle}"))
        };
        // Everything that finds the other user by the phone's identity runs
        // before the identity is pointed at the caller.
        let repoint = pos("ON CONFLICT (provider, subject) DO UPDATE");
        for needle in [
            "UPDATE OR IGNORE user_issues",
            "DELETE FROM user_issues",
            "UPDATE feed ",
            "UPDATE OR IGNORE user_identities",
        ] {
            assert!(pos(needle) < repoint, "{needle}");
        }
        assert_eq!(pos("DELETE FROM user_issues"), 3);
        assert!(pos("UPDATE users SET phone = NULL") < pos("UPDATE users SET phone = ?2"));
    }
}
