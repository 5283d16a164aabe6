//! The Telegram webhook: `POST /webhooks/telegram`.
//!
//! Telegram sends the secret given to `setWebhook` in
//! `X-Telegram-Bot-Api-Secret-Token`; it is compared in constant time
//! before the body is read. Each `update_id` is claimed in `webhook_events`
//! (Telegram redelivers until it gets a `200`), the answer is `200` at once,
//! and the command runs after the response; the reply goes out with
//! `sendMessage` at `TELEGRAM_API_BASE`. Messages (and edited messages) with
//! text and inline-button presses (`callback_query`, whose data is read as
//! a command) are handled; other updates are acknowledged and ignored.

use serde_json::{json, Value};
use worker::Response;

use super::inbox::{claim, limited, mark_processed};
use super::outbound::{self, Outgoing};
use super::whatsapp::UNSUPPORTED_REPLY;
use super::{chat, ChatUser};
use crate::http::auth::constant_time_eq;
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult, Code};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub update_id: i64,
    /// The sender's Telegram user id.
    pub from: i64,
    pub chat_id: i64,
    /// `None`: a message without text (a photo, a sticker...).
    pub text: Option<String>,
}

/// The update, if it is one the bot answers; `Err` when the body is not an
/// update at all.
pub fn parse(payload: &Value) -> Result<Option<Update>, &'static str> {
    let update_id = payload
        .get("update_id")
        .and_then(Value::as_i64)
        .ok_or("update_id is required (an integer)")?;
    let (message, text) = if let Some(m) = payload
        .get("message")
        .or_else(|| payload.get("edited_message"))
    {
        (m, m.get("text").and_then(Value::as_str))
    } else if let Some(q) = payload.get("callback_query") {
        let Some(m) = q.get("message") else {
            return Ok(None);
        };
        // The presser, not the bot that wrote the message.
        let from = q
            .get("from")
            .and_then(|f| f.get("id"))
            .and_then(Value::as_i64);
        let chat_id = m
            .get("chat")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_i64);
        return Ok(match (from, chat_id) {
            (Some(from), Some(chat_id)) => Some(Update {
                update_id,
                from,
                chat_id,
                text: q.get("data").and_then(Value::as_str).map(str::to_owned),
            }),
            _ => None,
        });
    } else {
        return Ok(None);
    };
    let from = message
        .get("from")
        .and_then(|f| f.get("id"))
        .and_then(Value::as_i64);
    let chat_id = message
        .get("chat")
        .and_then(|c| c.get("id"))
        .and_then(Value::as_i64);
    let is_bot = message
        .get("from")
        .and_then(|f| f.get("is_bot"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(match (from, chat_id) {
        (Some(from), Some(chat_id)) if !is_bot => Some(Update {
            update_id,
            from,
            chat_id,
            text: text.map(str::to_owned),
        }),
        _ => None,
    })
}

pub async fn receive(ctx: &Ctx, secret_header: Option<&str>, raw: &[u8]) -> AppResult<Response> {
    let Some(expected) = ctx.config.telegram.secret_token.as_deref() else {
        return Err(crate::http::auth::disabled("TELEGRAM_SECRET_TOKEN"));
    };
    let given = secret_header.unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(AppError::new(
            401,
            Code::BadSecret,
            "X-Telegram-Bot-Api-Secret-Token is missing or wrong",
        ));
    }
    let payload: Value = serde_json::from_slice(raw).map_err(|e| {
        AppError::bad_request(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let update = parse(&payload).map_err(|problem| AppError::validation("update_id", problem))?;
    let Some(update) = update else {
        return Ok(json_response(200, &json!({ "handled": false }))?);
    };
    let id = update.update_id.to_string();
    let new = !claim(ctx, "telegram", std::slice::from_ref(&id))
        .await?
        .is_empty();
    if new {
        let background = ctx.detached();
        ctx.wait_until(async move { process(&background, update).await });
    }
    Ok(json_response(200, &json!({ "handled": true, "new": new }))?)
}

async fn process(ctx: &Ctx, update: Update) {
    let who = ChatUser::telegram(update.from);
    if !limited(ctx, &who).await {
        let reply = match &update.text {
            Some(text) => chat::answer(ctx, &who, text).await,
            None => UNSUPPORTED_REPLY.to_owned(),
        };
        match send_message(ctx, update.chat_id, &reply) {
            Some(out) => {
                outbound::send(ctx, &out.with_event(&update.update_id.to_string())).await;
            }
            None => {
                tracing::error!(request_id = %ctx.request_id, "TELEGRAM_BOT_TOKEN is not set; reply not sent")
            }
        }
    }
    mark_processed(ctx, "telegram", &update.update_id.to_string()).await;
}

/// `sendMessage` to a chat; `None` without a bot token.
pub fn send_message(ctx: &Ctx, chat_id: i64, text: &str) -> Option<Outgoing> {
    let tg = &ctx.config.telegram;
    let token = tg.bot_token.as_deref()?;
    Some(Outgoing {
        provider: "telegram",
        recipient: chat_id.to_string(),
        url: format!("{}/bot{}/sendMessage", tg.api_base, token),
        authorization: None,
        body: json!({ "chat_id": chat_id, "text": text }),
        event_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates() {
        let message = json!({
            "update_id": 10,
            "message": { "message_id": 1, "date": 0, "text": "help",
                         "from": { "id": 42, "is_bot": false, "first_name": "A" },
                         "chat": { "id": 42, "type": "private" } }
        });
        assert_eq!(
            parse(&message),
            Ok(Some(Update {
                update_id: 10,
                from: 42,
                chat_id: 42,
                text: Some("help".into())
            }))
        );
        let photo = json!({
            "update_id": 11,
            "message": { "message_id": 2, "date": 0, "photo": [],
                         "from": { "id": 42, "is_bot": false }, "chat": { "id": 42 } }
        });
        assert_eq!(parse(&photo).expect("update").expect("handled").text, None);
        let button = json!({
            "update_id": 12,
            "callback_query": { "id": "q", "data": "join 1", "from": { "id": 7 },
                                "message": { "message_id": 3, "chat": { "id": -100 },
                                             "from": { "id": 999, "is_bot": true } } }
        });
        assert_eq!(
            parse(&button),
            Ok(Some(Update {
                update_id: 12,
                from: 7,
                chat_id: -100,
                text: Some("join 1".into())
            }))
        );
    }

    #[test]
    fn ignored_and_refused() {
        assert_eq!(parse(&json!({"update_id": 1, "poll": {}})), Ok(None));
        let from_bot = json!({"update_id": 2, "message": {"text": "x", "from": {"id": 1, "is_bot": true}, "chat": {"id": 1}}});
        assert_eq!(parse(&from_bot), Ok(None));
        assert!(parse(&json!({"message": {}})).is_err());
        assert!(parse(&json!({"update_id": "1"})).is_err());
    }
}
