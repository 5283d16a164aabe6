//! Messages the Worker sends: chat replies and one-time codes, to the
//! WhatsApp Graph API or the Telegram Bot API.
//!
//! Each send has a deadline per attempt and is retried when the provider is
//! overloaded or failing (`429`, `5xx`, no answer), after a growing pause or
//! the provider's `Retry-After` (capped). A message still not accepted after
//! [`MAX_ATTEMPTS`], or refused outright (`4xx`), is recorded in
//! `outbound_messages` with the reason: nothing is dropped silently.

use std::time::Duration;

use crate::runtime::Timeout;
use crate::store::value as v;
use futures::future::{select, Either};
use serde_json::Value;
use worker::{AbortController, Fetch, Headers, Method, Request, RequestInit};

use crate::http::context::Ctx;
use crate::store::db::Query;

pub const MAX_ATTEMPTS: u32 = 4;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause; each later one is four times longer.
const FIRST_PAUSE_MS: u64 = 200;
const MAX_PAUSE_MS: u64 = 3_000;

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `whatsapp` or `telegram`.
    pub provider: &'static str,
    /// Phone number or chat id, for the failure record.
    pub recipient: String,
    pub url: String,
    /// The `Authorization` header, if the provider wants one.
    pub authorization: Option<String>,
    pub body: Value,
    /// The inbound event that caused it, if any.
    pub event_id: Option<String>,
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Sent,
    RetryAfterMs(u64),
    GiveUp(String),
}

/// The decision after attempt number `attempt` (1-based) answered `status`
/// (`None`: no answer in time), with the provider's `Retry-After` seconds.
pub fn next(attempt: u32, status: Option<u16>, retry_after_secs: Option<u64>) -> Next {
    let retryable = match status {
        Some(200..=299) => return Next::Sent,
        None | Some(429) | Some(500..=599) => true,
        Some(_) => false,
    };
    let answered = status.map_or_else(
        || "no answer in time".to_owned(),
        |s| format!("answered {s}"),
    );
    if !retryable {
        return Next::GiveUp(format!("{answered}; not retried"));
    }
    if attempt >= MAX_ATTEMPTS {
        return Next::GiveUp(format!("{answered} after {attempt} attempts"));
    }
    let backoff = FIRST_PAUSE_MS.saturating_mul(4u64.saturating_pow(attempt - 1));
    let pause = retry_after_secs.map_or(backoff, |s| s.saturating_mul(1000).max(backoff));
    Next::RetryAfterMs(pause.min(MAX_PAUSE_MS))
}

/// One attempt: the status and body, or `None` when there was no answer in
/// time (or no connection).
async fn attempt(out: &Outgoing) -> Option<(u16, Option<u64>, String)> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json").ok()?;
    if let Some(auth) = &out.authorization {
        headers.set("Authorization", auth).ok()?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(out.body.to_string().into()));
    let request = Request::new_with_init(&out.url, &init).ok()?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let work = Box::pin(async {
        let mut response = Fetch::Request(request).send_with_signal(&signal).await?;
        let status = response.status_code();
        let retry_after = response
            .headers()
            .get("Retry-After")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<u64>().ok());
        let text = response.text().await.unwrap_or_default();
        Ok::<_, worker::Error>((status, retry_after, text))
    });
    let outcome = select(work, Timeout::after(ATTEMPT_TIMEOUT)).await;
    match outcome {
        Either::Left((Ok(answer), _)) => Some(answer),
        Either::Left((Err(e), _)) => {
            // The URL (and an error that quotes it) may hold Telegram's token.
            let url = loggable_url(&out.url);
            let error = redacted(&e.to_string(), &out.url);
            tracing::warn!(provider = out.provider, %url, %error, "outbound message: no connection");
            None
        }
        Either::Right(_) => {
            controller.abort();
            None
        }
    }
}

/// The token of a Telegram Bot API path segment (`bot<TOKEN>`, the token
/// being `<bot id>:<secret>`), if `segment` is one.
fn bot_token(segment: &str) -> Option<&str> {
    let token = segment.get(3..)?;
    let is_token = segment
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("bot"))
        && token.split_once(':').is_some_and(|(id, secret)| {
            !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !secret.is_empty()
        });
    is_token.then_some(token)
}

/// `url` as it may be logged: scheme, host and path only (no credentials,
/// query or fragment), with the Telegram Bot API's `bot<TOKEN>` path segment
/// shown as `bot<redacted>`: the Bot API takes its token in the path.
pub fn loggable_url(url: &str) -> String {
    let Ok(parsed) = worker::Url::parse(url) else {
        return "<not a URL>".to_owned();
    };
    let path = parsed
        .path()
        .split('/')
        .map(|segment| match bot_token(segment) {
            Some(_) => "bot<redacted>",
            None => segment,
        })
        .collect::<Vec<_>>()
        .join("/");
    format!("{}{path}", parsed.origin().ascii_serialization())
}

/// `text` (an error that may quote `url`, exactly or normalised) with the
/// secrets `url` holds (a bot token in its path, credentials, its query)
/// replaced, wherever they appear.
fn redacted(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &loggable_url(url));
    let Ok(parsed) = worker::Url::parse(url) else {
        return out;
    };
    let mut secrets: Vec<String> = parsed
        .path()
        .split('/')
        .filter_map(bot_token)
        .map(str::to_owned)
        .collect();
    secrets.extend(parsed.password().map(str::to_owned));
    secrets.extend(parsed.query().map(str::to_owned));
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "<redacted>");
    }
    out
}

/// Sends `out`, retrying as [`next`] says; a message that is never accepted
/// is recorded as failed. Returns whether it was sent.
pub async fn send(ctx: &Ctx, out: &Outgoing) -> bool {
    let mut attempt_no = 1;
    loop {
        let answer = attempt(out).await;
        let status = answer.as_ref().map(|a| a.0);
        let retry_after = answer.as_ref().and_then(|a| a.1);
        match next(attempt_no, status, retry_after) {
            Next::Sent => return true,
            Next::RetryAfterMs(ms) => {
                tracing::info!(request_id = %ctx.request_id, provider = out.provider, attempt = attempt_no, ?status, pause_ms = ms, "outbound message: retrying");
                Timeout::after(Duration::from_millis(ms)).await;
                attempt_no += 1;
            }
            Next::GiveUp(reason) => {
                let detail = answer
                    .map(|a| a.2.chars().take(300).collect::<String>())
                    .unwrap_or_default();
                let reason = if detail.is_empty() {
                    reason
                } else {
                    format!("{reason}: {detail}")
                };
                tracing::error!(request_id = %ctx.request_id, provider = out.provider, recipient = %out.recipient, %reason, "outbound message failed");
                record_failure(ctx, out, attempt_no, &reason).await;
                return false;
            }
        }
    }
}

pub fn failure_query(id: &str, out: &Outgoing, attempts: u32, reason: &str) -> Query {
    let text = |s: &str| v::text(s.to_owned());
    Query::new(
        "INSERT INTO outbound_messages \
         (id, provider, recipient, body, status, attempts, last_error, event_id) \
         VALUES (?1, ?2, ?3, ?4, 'failed', ?5, ?6, ?7)",
        vec![
            text(id),
            text(out.provider),
            text(&out.recipient),
            text(&out.body.to_string()),
            v::int(i64::from(attempts)),
            text(reason),
            out.event_id.as_deref().map_or(v::null(), text),
        ],
    )
}

async fn record_failure(ctx: &Ctx, out: &Outgoing, attempts: u32, reason: &str) {
    let id = uuid::Uuid::new_v4().to_string();
    if let Err(e) = ctx
        .db()
        .transaction(vec![failure_query(&id, out, attempts, reason)])
        .await
    {
        // The log line above still has it.
        tracing::error!(request_id = %ctx.request_id, code = %e.code, "could not record a failed outbound message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_stops() {
        assert_eq!(next(1, Some(200), None), Next::Sent);
        assert_eq!(next(3, Some(201), None), Next::Sent);
    }

    #[test]
    fn overload_and_silence_are_retried_with_growing_pauses() {
        assert_eq!(next(1, Some(500), None), Next::RetryAfterMs(200));
        assert_eq!(next(2, Some(503), None), Next::RetryAfterMs(800));
        assert_eq!(next(3, None, None), Next::RetryAfterMs(3_000));
        assert_eq!(next(1, Some(429), Some(2)), Next::RetryAfterMs(2_000));
        // A huge Retry-After is capped so the work ends in time.
        assert_eq!(next(1, Some(429), Some(86_400)), Next::RetryAfterMs(3_000));
    }

    #[test]
    fn gives_up_with_a_reason() {
        match next(MAX_ATTEMPTS, Some(502), None) {
            Next::GiveUp(r) => assert!(r.contains("502") && r.contains("4 attempts"), "{r}"),
            other => panic!("{other:?}"),
        }
        match next(1, Some(400), None) {
            Next::GiveUp(r) => assert!(r.contains("not retried"), "{r}"),
            other => panic!("{other:?}"),
        }
        match next(MAX_ATTEMPTS, None, None) {
            Next::GiveUp(r) => assert!(r.contains("no answer"), "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn logged_urls_hold_no_token() {
        let token = "12345:AAHsecret-token_xyz";
        let url = format!("https://api.telegram.test/bot{token}/sendMessage");
        let logged = loggable_url(&url);
        assert_eq!(
            logged,
            "https://api.telegram.test/bot<redacted>/sendMessage"
        );
        assert!(!logged.contains("secret") && !logged.contains("12345"));
        // Under a base with a path, and with credentials or a query.
        let logged = loggable_url(&format!(
            "http://user:pw@127.0.0.1:9000/tg/BOT{token}/sendMessage?token={token}#f"
        ));
        assert_eq!(logged, "http://127.0.0.1:9000/tg/bot<redacted>/sendMessage");
        // Other providers' URLs are kept as they are.
        assert_eq!(
            loggable_url("https://graph.example.test/v21.0/PN1/messages"),
            "https://graph.example.test/v21.0/PN1/messages"
        );
        assert_eq!(loggable_url("not a url bot123"), "<not a URL>");
        // A path segment that only starts with "bot" is not a token.
        assert_eq!(
            loggable_url("https://example.test/bottles/botany"),
            "https://example.test/bottles/botany"
        );
    }

    #[test]
    fn errors_that_quote_the_url_in_another_form_hold_no_token() {
        let token = "12345:AAHsecret-token_xyz";
        let url = format!("HTTP://API.Telegram.test:80/bot{token}/sendMessage");
        let error =
            format!("network error: GET http://api.telegram.test/bot{token}/sendMessage: refused");
        let logged = redacted(&error, &url);
        assert!(!logged.contains("AAHsecret"), "{logged}");
        assert!(logged.contains("<redacted>"), "{logged}");
    }

    #[test]
    fn failure_record_names_its_columns() {
        let out = Outgoing {
            provider: "whatsapp",
            recipient: "+447700900123".into(),
            url: "http://x".into(),
            authorization: None,
            body: serde_json::json!({"a": 1}),
            event_id: Some("wamid.1".into()),
        };
        let q = failure_query("id", &out, 4, "answered 500 after 4 attempts");
        assert_eq!(q.args.len(), 7);
        assert!(q.sql.contains("'failed'"));
    }
}
