//! The WhatsApp Cloud API webhook and the Graph API messages it sends.
//!
//! - `GET /webhooks/whatsapp`: Meta's subscription handshake; echoes
//!   `hub.challenge` when `hub.verify_token` is `WHATSAPP_VERIFY_TOKEN`.
//! - `POST /webhooks/whatsapp`: the `X-Hub-Signature-256` HMAC of the raw
//!   body (key `WHATSAPP_APP_SECRET`) is checked in constant time before
//!   anything is parsed. Each message id is then claimed in
//!   `webhook_events` (one round trip for the whole delivery): Meta
//!   redelivers for days, and a repeat finds its claim and does nothing. The
//!   answer is `200` at once; the commands run and the replies go out after
//!   the response (`wait_until`). If the claim cannot be written (primary
//!   down) the answer is `503`, so Meta delivers again later and nothing is
//!   lost (see [`super::inbox`]).
//! - A delivery may hold more new messages than one invocation should run
//!   ([`MAX_MESSAGES`]: each costs round trips and a reply, within the
//!   runtime's subrequest and after-response limits). The first
//!   `MAX_MESSAGES` new ones, in delivery order, are run; the claims of the
//!   rest are given back and the answer is `503` with `Retry-After`
//!   (`deferred` says how many), so Meta delivers it again and the next
//!   invocation runs the next ones. Nothing is dropped, and a sender's
//!   messages still run in order.
//!
//! Handled: text messages, button and interactive (button or list) replies
//! (their id or title is read as a command), status callbacks (logged; a
//! failed delivery at error level), and anything else (media, location,
//! ...) answered with a hint that only text is understood.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use worker::Response;

use super::inbox::{claim, limited, mark_processed, release};
use super::outbound::{self, Outgoing};
use super::{chat, ChatUser};
use crate::domain::phone::PhoneE164;
use crate::http::auth::constant_time_eq;
use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult, Code};

/// Most new messages run by one invocation (Meta usually sends a handful);
/// the rest wait for the redelivery a `503` asks for.
pub const MAX_MESSAGES: usize = 50;

pub const UNSUPPORTED_REPLY: &str =
    "I can only read text messages for now. Send \"help\" to see what I can do.";

/// Does `header` (`sha256=<hex>`) sign `body` with `secret`?
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    constant_time_eq(&expected, &given)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// What one inbound message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A text, or the id/title of a button or list reply.
    Text(String),
    /// Media, location, reactions...: named by its type.
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `wamid....`: the dedupe key.
    pub id: String,
    /// The sender's WhatsApp id: their number without the `+`.
    pub from: String,
    /// The business number that received it; the reply goes out from it.
    pub phone_number_id: String,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub message_id: String,
    pub status: String,
    pub recipient: String,
    /// Meta's error titles, for a failed delivery.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub messages: Vec<Message>,
    pub statuses: Vec<Status>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, key| v.get(key))?.as_str()
}

fn content_of(message: &Value) -> Content {
    let kind = message.get("type").and_then(Value::as_str).unwrap_or("");
    let text = match kind {
        "text" => str_at(message, &["text", "body"]),
        // Quick-reply buttons of a template.
        "button" => {
            str_at(message, &["button", "payload"]).or(str_at(message, &["button", "text"]))
        }
        "interactive" => {
            let i = message.get("interactive").unwrap_or(&Value::Null);
            match i.get("type").and_then(Value::as_str) {
                Some("button_reply") => {
                    str_at(i, &["button_reply", "id"]).or(str_at(i, &["button_reply", "title"]))
                }
                Some("list_reply") => {
                    str_at(i, &["list_reply", "id"]).or(str_at(i, &["list_reply", "title"]))
                }
                _ => None,
            }
        }
        _ => None,
    };
    match text {
        Some(t) => Content::Text(t.to_owned()),
        None if kind.is_empty() => Content::Unsupported("unknown".to_owned()),
        None => Content::Unsupported(kind.chars().take(40).collect()),
    }
}

/// The messages and statuses of a webhook payload; anything else in it
/// (other fields, other objects) is ignored. Not a payload at all is `None`.
pub fn parse(payload: &Value) -> Option<Delivery> {
    let entries = payload.get("entry")?.as_array()?;
    let mut delivery = Delivery::default();
    for change in entries
        .iter()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten()
    {
        let value = change.get("value").unwrap_or(&Value::Null);
        let phone_number_id = str_at(value, &["metadata", "phone_number_id"]).unwrap_or("");
        for m in value
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(id), Some(from)) = (str_at(m, &["id"]), str_at(m, &["from"])) else {
                continue;
            };
            delivery.messages.push(Message {
                id: id.to_owned(),
                from: from.to_owned(),
                phone_number_id: phone_number_id.to_owned(),
                content: content_of(m),
            });
        }
        for s in value
            .get("statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            delivery.statuses.push(Status {
                message_id: str_at(s, &["id"]).unwrap_or("").to_owned(),
                status: str_at(s, &["status"]).unwrap_or("").to_owned(),
                recipient: str_at(s, &["recipient_id"]).unwrap_or("").to_owned(),
                errors: s
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|errs| {
                        errs.iter()
                            .filter_map(|e| {
                                e.get("title")
                                    .or(e.get("message"))
                                    .and_then(Value::as_str)
                                    .map(str::to_owned)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    Some(delivery)
}

/// `GET /webhooks/whatsapp`: Meta's verification request.
pub fn verify(ctx: &Ctx, query: &[(String, String)]) -> AppResult<Response> {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(expected) = ctx.config.whatsapp.verify_token.as_deref() else {
        return Err(crate::http::auth::disabled("WHATSAPP_VERIFY_TOKEN"));
    };
    if get("hub.mode") != Some("subscribe") {
        return Err(AppError::validation("hub.mode", "must be subscribe"));
    }
    let token = get("hub.verify_token").unwrap_or("");
    if !constant_time_eq(token.as_bytes(), expected.as_bytes()) {
        return Err(AppError::new(
            403,
            Code::Forbidden,
            "hub.verify_token does not match",
        ));
    }
    let challenge = get("hub.challenge").unwrap_or("");
    if challenge.is_empty() || challenge.len() > 200 {
        return Err(AppError::validation(
            "hub.challenge",
            "is required (at most 200 characters)",
        ));
    }
    let mut response = Response::ok(challenge)?;
    response
        .headers_mut()
        .set("Content-Type", "text/plain; charset=utf-8")?;
    Ok(response)
}

/// `POST /webhooks/whatsapp`.
pub async fn receive(ctx: &Ctx, signature: Option<&str>, raw: &[u8]) -> AppResult<Response> {
    let Some(secret) = ctx.config.whatsapp.app_secret.as_deref() else {
        return Err(crate::http::auth::disabled("WHATSAPP_APP_SECRET"));
    };
    if !signature_ok(secret.as_bytes(), raw, signature) {
        return Err(AppError::new(
            401,
            Code::BadSignature,
            "X-Hub-Signature-256 is missing or does not sign this body",
        ));
    }
    let payload: Value = serde_json::from_slice(raw).map_err(|e| {
        AppError::bad_request(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let delivery = parse(&payload).ok_or_else(|| {
        AppError::validation("entry", "is required: not a WhatsApp webhook payload")
    })?;
    for s in &delivery.statuses {
        if s.status == "failed" {
            tracing::error!(request_id = %ctx.request_id, message = %s.message_id, recipient = %s.recipient, errors = ?s.errors, "WhatsApp could not deliver a reply");
        } else {
            tracing::info!(request_id = %ctx.request_id, message = %s.message_id, status = %s.status, "WhatsApp status");
        }
    }
    let ids: Vec<String> = delivery.messages.iter().map(|m| m.id.clone()).collect();
    let new = claim(ctx, "whatsapp", &ids).await?;
    let (work, deferred) = split_new(delivery.messages, &new);
    if !deferred.is_empty() {
        let ids: Vec<String> = deferred.iter().map(|m| m.id.clone()).collect();
        if let Err(e) = release(ctx, "whatsapp", &ids).await {
            // Still claimed: a redelivery takes them over after
            // RECLAIM_AFTER_SECS instead of at once.
            tracing::warn!(request_id = %ctx.request_id, code = %e.code, "could not give back deferred claims");
        }
        tracing::warn!(request_id = %ctx.request_id, running = work.len(), deferred = ids.len(), "WhatsApp delivery larger than one invocation runs; the rest is asked for again");
    }
    let body = json!({
        "received": ids.len(),
        "new": work.len(),
        "deferred": deferred.len(),
        "statuses": delivery.statuses.len(),
    });
    if !work.is_empty() {
        let background = ctx.detached();
        ctx.wait_until(async move {
            // Senders side by side, each sender's messages in order (a
            // command may refer to the list the one before it showed). One
            // after another, a delivery's later messages could run past the
            // time the runtime gives work after the response while an
            // earlier reply waits out its retries.
            let senders = by_sender(work).into_iter().map(|messages| {
                let ctx = &background;
                async move {
                    for message in messages {
                        process(ctx, message).await;
                    }
                }
            });
            futures::future::join_all(senders).await;
        });
    }
    if deferred.is_empty() {
        return Ok(json_response(200, &body)?);
    }
    let mut response = json_response(503, &body)?;
    response
        .headers_mut()
        .set("Retry-After", &DEFERRED_RETRY_SECS.to_string())?;
    Ok(response)
}

/// What a `503` for deferred messages asks Meta to wait.
const DEFERRED_RETRY_SECS: u32 = 5;

/// The new messages (claimed by this invocation), split into those it runs
/// (the first [`MAX_MESSAGES`], in delivery order) and those it defers.
fn split_new(messages: Vec<Message>, new: &[String]) -> (Vec<Message>, Vec<Message>) {
    let mut fresh: Vec<Message> = messages
        .into_iter()
        .filter(|m| new.contains(&m.id))
        .collect();
    let deferred = fresh.split_off(fresh.len().min(MAX_MESSAGES));
    (fresh, deferred)
}

/// Messages grouped by sender, each group in delivery order, groups in the
/// order their first message came.
fn by_sender(messages: Vec<Message>) -> Vec<Vec<Message>> {
    let mut groups: Vec<Vec<Message>> = Vec::new();
    for m in messages {
        match groups.iter_mut().find(|g| g[0].from == m.from) {
            Some(group) => group.push(m),
            None => groups.push(vec![m]),
        }
    }
    groups
}

/// Runs one claimed message and sends its reply.
async fn process(ctx: &Ctx, message: Message) {
    let reply = match PhoneE164::parse(&format!("+{}", message.from), "from") {
        Err(_) => {
            tracing::warn!(request_id = %ctx.request_id, from = %message.from, "WhatsApp sender is not a phone number");
            None
        }
        Ok(phone) => {
            let who = ChatUser::phone(&phone);
            if limited(ctx, &who).await {
                None
            } else {
                Some(match &message.content {
                    Content::Text(text) => chat::answer(ctx, &who, text).await,
                    Content::Unsupported(_) => UNSUPPORTED_REPLY.to_owned(),
                })
            }
        }
    };
    if let Some(reply) = reply {
        let out = text_message(ctx, &message.phone_number_id, &message.from, &reply)
            .with_event(&message.id);
        outbound::send(ctx, &out).await;
    }
    mark_processed(ctx, "whatsapp", &message.id).await;
}

impl Outgoing {
    pub fn with_event(mut self, event_id: &str) -> Outgoing {
        self.event_id = Some(event_id.to_owned());
        self
    }
}

fn graph(ctx: &Ctx, phone_number_id: &str, recipient: &str, body: Value) -> Outgoing {
    let wa = &ctx.config.whatsapp;
    Outgoing {
        provider: "whatsapp",
        recipient: recipient.to_owned(),
        url: format!("{}/{}/messages", wa.api_base, phone_number_id),
        authorization: wa.access_token.as_ref().map(|t| format!("Bearer {t}")),
        body,
        event_id: None,
    }
}

/// A text message to `to` (a WhatsApp id: digits, no `+`).
pub fn text_message(ctx: &Ctx, phone_number_id: &str, to: &str, text: &str) -> Outgoing {
    graph(
        ctx,
        phone_number_id,
        to,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": { "preview_url": false, "body": text },
        }),
    )
}

/// A one-time code, as the authentication template `WHATSAPP_OTP_TEMPLATE`
/// (body parameter and copy-code button): business-initiated messages must
/// be approved templates.
pub fn code_message(ctx: &Ctx, phone_number_id: &str, to: &str, code: &str) -> Outgoing {
    graph(
        ctx,
        phone_number_id,
        to,
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "template",
            "template": {
                "name": ctx.config.whatsapp.otp_template,
                "language": { "code": "en" },
                "components": [
                    { "type": "body", "parameters": [{ "type": "text", "text": code }] },
                    { "type": "button", "sub_type": "url", "index": "0",
                      "parameters": [{ "type": "text", "text": code }] }
                ]
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, from: &str) -> Message {
        Message {
            id: id.to_owned(),
            from: from.to_owned(),
            phone_number_id: "PN1".to_owned(),
            content: content_of(&json!({"type": "text", "text": {"body": "help"}})),
        }
    }

    #[test]
    fn a_large_delivery_runs_the_first_new_messages_and_defers_the_rest() {
        let n = MAX_MESSAGES + 30;
        let messages: Vec<Message> = (0..n)
            .map(|i| message(&format!("m{i}"), &format!("44{}", i % 7)))
            .collect();
        // The first ten were claimed by an earlier invocation.
        let new: Vec<String> = (10..n).map(|i| format!("m{i}")).collect();
        let (run, deferred) = split_new(messages, &new);
        assert_eq!(run.len(), MAX_MESSAGES);
        assert_eq!(run[0].id, "m10");
        assert_eq!(
            run[MAX_MESSAGES - 1].id,
            format!("m{}", 10 + MAX_MESSAGES - 1)
        );
        assert_eq!(deferred.len(), 20);
        assert_eq!(deferred[0].id, format!("m{}", 10 + MAX_MESSAGES));
        // A payload is read whole: no message is left out by the parser.
        let many: Vec<Value> = (0..n)
            .map(|i| json!({"from": "447700900000", "id": format!("w{i}"), "type": "text", "text": {"body": "hi"}}))
            .collect();
        let payload = json!({"entry": [{"changes": [{"value": {"messages": many}}]}]});
        assert_eq!(parse(&payload).expect("delivery").messages.len(), n);
    }

    #[test]
    fn deferred_claims_are_given_back_unless_processed() {
        let q = crate::routes::bot::inbox::release_query(
            "whatsapp",
            &["a".to_owned(), "b\"c".to_owned()],
        );
        assert!(q.sql.contains("processed_at IS NULL"));
        assert!(q.sql.contains("json_each(?2)"));
        assert_eq!(q.args.len(), 2);
    }

    #[test]
    fn messages_are_grouped_by_sender_in_order() {
        let m = |id: &str, from: &str| Message {
            id: id.into(),
            from: from.into(),
            phone_number_id: "p".into(),
            content: Content::Text(id.into()),
        };
        let groups = by_sender(vec![m("1", "a"), m("2", "b"), m("3", "a"), m("4", "c")]);
        let ids: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|m| m.id.as_str()).collect())
            .collect();
        assert_eq!(ids, [vec!["1", "3"], vec!["2"], vec!["4"]]);
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("key");
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    #[test]
    fn signatures() {
        let body = br#"{"entry":[]}"#;
        let good = sign(b"secret", body);
        assert!(signature_ok(b"secret", body, Some(&good)));
        assert!(signature_ok(
            b"secret",
            body,
            Some(&good.to_uppercase().replace("SHA256=", "sha256="))
        ));
        assert!(!signature_ok(b"other", body, Some(&good)));
        assert!(!signature_ok(b"secret", b"{\"entry\":[ ]}", Some(&good)));
        assert!(!signature_ok(b"secret", body, None));
        assert!(!signature_ok(b"secret", body, Some("sha256=")));
        assert!(!signature_ok(b"secret", body, Some(&good[7..])));
        assert!(!signature_ok(b"secret", body, Some("sha256=zz")));
        assert!(!signature_ok(b"secret", body, Some(&format!("{good}00"))));
        assert!(!signature_ok(
            b"secret",
            body,
            Some("sha256=é".repeat(40).as_str())
        ));
    }

    fn payload(messages: Value, statuses: Value) -> Value {
        json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": "WABA",
                "changes": [{
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": { "display_phone_number": "15550001111", "phone_number_id": "PN1" },
                        "contacts": [{ "profile": { "name": "Kerry" }, "wa_id": "447700900123" }],
                        "messages": messages,
                        "statuses": statuses
                    }
                }]
            }]
        })
    }

    #[test]
    fn real_payload_shapes() {
        let p = payload(
            json!([
                { "from": "447700900123", "id": "wamid.1", "timestamp": "1", "type": "text", "text": { "body": "search bus" } },
                { "from": "447700900123", "id": "wamid.2", "timestamp": "1", "type": "interactive",
                  "interactive": { "type": "button_reply", "button_reply": { "id": "join 1", "title": "Join" } } },
                { "from": "447700900123", "id": "wamid.3", "timestamp": "1", "type": "interactive",
                  "interactive": { "type": "list_reply", "list_reply": { "id": "issue 2", "title": "Potholes" } } },
                { "from": "447700900123", "id": "wamid.4", "timestamp": "1", "type": "button",
                  "button": { "text": "Help", "payload": "help" } },
                { "from": "447700900123", "id": "wamid.5", "timestamp": "1", "type": "image",
                  "image": { "id": "media", "mime_type": "image/jpeg" } },
                { "from": "447700900123", "type": "text", "text": { "body": "no id" } }
            ]),
            json!([{ "id": "wamid.out", "status": "failed", "timestamp": "1", "recipient_id": "447700900123",
                     "errors": [{ "code": 131047, "title": "Re-engagement message" }] }]),
        );
        let d = parse(&p).expect("payload");
        let contents: Vec<&Content> = d.messages.iter().map(|m| &m.content).collect();
        assert_eq!(
            contents,
            [
                &Content::Text("search bus".into()),
                &Content::Text("join 1".into()),
                &Content::Text("issue 2".into()),
                &Content::Text("help".into()),
                &Content::Unsupported("image".into()),
            ]
        );
        assert_eq!(d.messages[0].phone_number_id, "PN1");
        assert_eq!(d.messages[0].from, "447700900123");
        assert_eq!(d.statuses.len(), 1);
        assert_eq!(d.statuses[0].errors, ["Re-engagement message"]);
    }

    #[test]
    fn not_a_payload() {
        assert_eq!(parse(&json!({})), None);
        assert_eq!(parse(&json!({"entry": 3})), None);
        assert_eq!(parse(&json!({"entry": []})), Some(Delivery::default()));
        assert_eq!(
            parse(&json!({"entry": [{"changes": [{"value": {"messages": "x"}}]}]})),
            Some(Delivery::default())
        );
    }
}
