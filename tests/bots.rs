//! Bots and phone linking against the real stack, with local fakes of the
//! WhatsApp Graph API and the Telegram Bot API that record what the Worker
//! sends them: Meta's verification handshake, signed and unsigned webhook
//! deliveries, redeliveries processed once, a join over WhatsApp moving the
//! count once, real payload shapes, replies retried and failures recorded,
//! Telegram's secret and dedupe, `POST /api/bot` (its token checked before
//! the body, its per-phone limit, `link_phone` refused with the way to
//! link), seed-era users found by `users.phone`, the chat commands `issue
//! N`, `actions N`, `post N TEXT` and `link`, and linking a phone by a
//! one-time code with the two users merged without double counting.

mod common;

use std::time::Duration;

use common::fake_api::{FakeApi, Received};
use common::{
    eventually, holds_for, int, run_cases, session_cookie, TestApp, ADMIN_TOKEN, RATE_LIMITS,
};
use hmac::{Hmac, Mac};
use qr_primary::client::{text, Value as Hv};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

const BOT_TOKEN: &str = "test-bot-token-0123456789";
const APP_SECRET: &str = "test-whatsapp-app-secret";
const VERIFY_TOKEN: &str = "test-verify-token";
const ACCESS_TOKEN: &str = "test-graph-access-token";
const TG_TOKEN: &str = "12345:test-telegram-token";
const TG_SECRET: &str = "test-telegram-secret";
const PHONE_NUMBER_ID: &str = "PN1";
const WAIT: Duration = Duration::from_secs(15);
/// How long a duplicate reply or a stray write would take to show: the
/// window in which the tests check that none does.
const QUIET: Duration = Duration::from_millis(1500);
/// The `bot` policy of this test app, per phone (or Telegram user) a
/// minute: above what any other case sends from one phone.
const BOT_LIMIT: usize = 20;

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A number no other case uses: digits only (a WhatsApp id).
fn fresh_wa_id() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 10_000_000;
    format!("44770{n:07}")
}

/// A word no other issue has, for searching.
fn fresh_word() -> String {
    let letters: String = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(6)
        .collect();
    format!("zq{letters}")
}

fn wa_payload(messages: Value, statuses: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID },
            "messages": messages,
            "statuses": statuses
        }}]}]
    })
}

fn wa_text(from: &str, id: &str, body: &str) -> Value {
    wa_payload(
        json!([{ "from": from, "id": id, "timestamp": "1700000000", "type": "text", "text": { "body": body } }]),
        json!([]),
    )
}

async fn deliver_raw(
    app: &TestApp,
    body: Vec<u8>,
    signature: Option<String>,
) -> (StatusCode, Value) {
    let mut rb = app
        .request(reqwest::Method::POST, "/webhooks/whatsapp")
        .header("Content-Type", "application/json");
    if let Some(s) = signature {
        rb = rb.header("X-Hub-Signature-256", s);
    }
    let r = rb.body(body).send().await.expect("send");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn deliver(app: &TestApp, payload: &Value) -> (StatusCode, Value) {
    let body = serde_json::to_vec(payload).expect("json");
    let signature = sign(&body);
    deliver_raw(app, body, Some(signature)).await
}

fn reply_text(r: &Received) -> String {
    r.body["text"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn is_reply_to(r: &Received, wa_id: &str) -> bool {
    r.body["to"].as_str() == Some(wa_id)
}

/// Sends `text` from `wa_id` and waits for reply number `nth` (1-based).
async fn chat(app: &TestApp, graph: &FakeApi, wa_id: &str, text: &str, nth: usize) -> String {
    let id = format!("wamid.{}", uuid::Uuid::new_v4().simple());
    let (status, body) = deliver(app, &wa_text(wa_id, &id, text)).await;
    assert_eq!(status, 200, "{body}");
    let replies = graph.wait_for(WAIT, nth, |r| is_reply_to(r, wa_id)).await;
    assert!(replies.len() >= nth, "no reply to {text:?} within {WAIT:?}");
    reply_text(&replies[nth - 1])
}

fn string(v: &Hv) -> String {
    match v {
        Hv::Text { value } => value.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

async fn count(app: &TestApp, sql: &str, args: Vec<Hv>) -> i64 {
    int(&app.sql(sql, args).await[0][0])
}

async fn bot(app: &TestApp, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut rb = app.request(reqwest::Method::POST, "/api/bot").json(&body);
    if let Some(t) = token {
        rb = rb.header("Authorization", format!("Bearer {t}"));
    }
    let r = rb.send().await.expect("send");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_and_phone_linking() {
    let graph = FakeApi::start().await;
    let telegram = FakeApi::start().await;
    let rate_limits = format!("{RATE_LIMITS},bot={BOT_LIMIT}/60");
    let app = TestApp::builder()
        .var("RATE_LIMITS", &rate_limits)
        // Room for a delivery of more messages than one invocation runs.
        .var("MAX_BODY_BYTES", "65536")
        .var("BOT_TOKEN", BOT_TOKEN)
        .var("WHATSAPP_APP_SECRET", APP_SECRET)
        .var("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
        .var("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN)
        .var("WHATSAPP_API_BASE", &graph.url)
        .var("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
        .var("TELEGRAM_BOT_TOKEN", TG_TOKEN)
        .var("TELEGRAM_SECRET_TOKEN", TG_SECRET)
        .var("TELEGRAM_API_BASE", &telegram.url)
        .start()
        .await;
    let (app, graph, telegram) = (&app, &graph, &telegram);
    run_cases(vec![
        (
            "whatsapp verification handshake",
            Box::pin(verification(app)),
        ),
        (
            "a signed message is answered once, however often it comes",
            Box::pin(answered_once(app, graph)),
        ),
        (
            "a delivery larger than one invocation runs is run whole over redeliveries",
            Box::pin(a_large_delivery(app, graph)),
        ),
        (
            "a bad or missing signature is 401 and nothing happens",
            Box::pin(bad_signatures(app, graph)),
        ),
        (
            "a join over whatsapp moves the count once; a button leaves",
            Box::pin(join_over_whatsapp(app, graph)),
        ),
        (
            "status callbacks and unsupported media",
            Box::pin(statuses_and_media(app, graph)),
        ),
        (
            "replies are retried, then recorded as failed",
            Box::pin(replies_retried(app, graph)),
        ),
        (
            "telegram: secret, dedupe, sendMessage",
            Box::pin(telegram_webhook(app, telegram)),
        ),
        ("POST /api/bot", Box::pin(bot_api(app))),
        (
            "a bearer token is checked before the body is parsed",
            Box::pin(token_before_body(app)),
        ),
        (
            "POST /api/bot is limited per phone",
            Box::pin(bot_limit(app)),
        ),
        (
            "a seed-era user with users.phone is found and used by the bot",
            Box::pin(seed_era_phone_user(app, graph)),
        ),
        (
            "link_phone and the link command say to link on the web",
            Box::pin(link_on_web(app, graph, telegram)),
        ),
        (
            "chat: issue N, actions N, post N TEXT",
            Box::pin(chat_issue_actions_post(app, graph)),
        ),
        (
            "linking a phone merges users without double counting",
            Box::pin(link_and_merge(app, graph)),
        ),
        (
            "one-time codes: wrong, five attempts, expiry",
            Box::pin(code_attempts(app, graph)),
        ),
        (
            "one-time codes are limited per phone",
            Box::pin(code_limit(app)),
        ),
        (
            "a code WhatsApp refuses is 502, and the session is kept",
            Box::pin(a_code_not_sent(app, graph)),
        ),
    ])
    .await;
}

async fn verification(app: &TestApp) {
    let get = |q: String| async move {
        let r = app
            .get(&format!("/webhooks/whatsapp?{q}"))
            .send()
            .await
            .expect("send");
        let status = r.status();
        (status, r.text().await.unwrap_or_default())
    };
    let (status, body) = get(format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1158201444"));
    let (status, body) =
        get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1".into()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        !body.contains('1') || body.contains("\"code\""),
        "the challenge is not echoed: {body}"
    );
    let (status, _) = get(format!("hub.verify_token={VERIFY_TOKEN}&hub.challenge=1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn answered_once(app: &TestApp, graph: &FakeApi) {
    let from = fresh_wa_id();
    let id = format!("wamid.{}", uuid::Uuid::new_v4().simple());
    let payload = wa_text(&from, &id, "help");
    let (status, body) = deliver(app, &payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["new"], 1);
    // Meta redelivers: the same message, twice more, one of them at once.
    let (a, b) = tokio::join!(deliver(app, &payload), deliver(app, &payload));
    for (status, body) in [a, b] {
        assert_eq!(status, 200);
        assert_eq!(body["new"], 0, "{body}");
    }
    let replies = graph.wait_for(WAIT, 1, |r| is_reply_to(r, &from)).await;
    assert_eq!(replies.len(), 1);
    assert!(
        reply_text(&replies[0]).contains("search WORDS"),
        "{:?}",
        replies[0].body
    );
    assert_eq!(replies[0].path, format!("/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(
        replies[0].authorization.as_deref(),
        Some(&*format!("Bearer {ACCESS_TOKEN}"))
    );
    assert_eq!(replies[0].body["messaging_product"], "whatsapp");
    holds_for("one reply, not two", QUIET, || async {
        graph
            .received()
            .iter()
            .filter(|r| is_reply_to(r, &from))
            .count()
            == 1
    })
    .await;
    eventually("the event is marked processed", WAIT, || async { if count(
            app,
            "SELECT count(*) FROM webhook_events WHERE provider = 'whatsapp' AND event_id = ? AND processed_at IS NOT NULL",
            vec![text(id.as_str())],
        )
        .await
            == 1 { Ok(()) } else { Err("not yet".to_owned()) } })
    .await;
}

/// More messages than one invocation runs (50): the first 50 run, the
/// rest are given back with a 503 and `Retry-After`, and Meta's
/// redelivery runs them; every sender is answered exactly once.
async fn a_large_delivery(app: &TestApp, graph: &FakeApi) {
    const N: usize = 70;
    let senders: Vec<String> = (0..N).map(|_| fresh_wa_id()).collect();
    let messages: Vec<Value> = senders
        .iter()
        .map(|from| {
            json!({ "from": from, "id": format!("wamid.{}", uuid::Uuid::new_v4().simple()),
                    "timestamp": "1700000000", "type": "text", "text": { "body": "help" } })
        })
        .collect();
    let ids: Vec<String> = messages
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    let payload = wa_payload(json!(messages), json!([]));
    let body = serde_json::to_vec(&payload).expect("json");
    let r = app
        .request(reqwest::Method::POST, "/webhooks/whatsapp")
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", sign(&body))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let first: Value = r.json().await.expect("json");
    assert_eq!(
        (&first["received"], &first["new"], &first["deferred"]),
        (&json!(N), &json!(50), &json!(N - 50)),
        "{first}"
    );
    // Meta delivers it again: the rest run now, then nothing is new.
    let (status, again) = deliver(app, &payload).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (&again["new"], &again["deferred"]),
        (&json!(N - 50), &json!(0))
    );
    let (status, last) = deliver(app, &payload).await;
    assert_eq!((status.as_u16(), &last["new"]), (200, &json!(0)), "{last}");
    let is_ours = |r: &Received| senders.iter().any(|s| is_reply_to(r, s));
    let replies = graph.wait_for(WAIT, N, is_ours).await;
    assert_eq!(replies.len(), N, "every sender answered");
    holds_for("every sender answered once each", QUIET, || async {
        graph.received().iter().filter(|r| is_ours(r)).count() == N
    })
    .await;
    eventually("every message is marked processed", WAIT, || async {
        let mut done = 0;
        for id in &ids {
            done += count(
                app,
                "SELECT count(*) FROM webhook_events WHERE provider = 'whatsapp' AND event_id = ? AND processed_at IS NOT NULL",
                vec![text(id.as_str())],
            )
            .await;
        }
        if done == N as i64 {
            Ok(())
        } else {
            Err(format!("{done} of {N}"))
        }
    })
    .await;
}

async fn bad_signatures(app: &TestApp, graph: &FakeApi) {
    let from = fresh_wa_id();
    let id = format!("wamid.{}", uuid::Uuid::new_v4().simple());
    let body = serde_json::to_vec(&wa_text(&from, &id, "help")).expect("json");
    let other = serde_json::to_vec(&wa_text(&from, &id, "join 1")).expect("json");
    let cases = [
        None,
        Some("sha256=".to_owned()),
        Some(sign(&other)),
        Some(sign(&body).replace("sha256=", "sha1=")),
        Some("garbage".to_owned()),
    ];
    for signature in cases {
        let (status, reply) = deliver_raw(app, body.clone(), signature.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}: {reply}");
        assert_eq!(reply["error"]["code"], "bad_signature");
    }
    // Not even parsed: an unsigned body that is not JSON is 401, not 400.
    let (status, _) = deliver_raw(app, b"{not json".to_vec(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    holds_for(
        "a refused delivery is neither recorded nor answered",
        QUIET,
        || async {
            count(
                app,
                "SELECT count(*) FROM webhook_events WHERE event_id = ?",
                vec![text(id.as_str())],
            )
            .await
                == 0
                && graph.received().iter().all(|r| !is_reply_to(r, &from))
        },
    )
    .await;
    // Signed but malformed: 400.
    let junk = b"{not json".to_vec();
    let signature = sign(&junk);
    let (status, reply) = deliver_raw(app, junk, Some(signature)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
}

async fn join_over_whatsapp(app: &TestApp, graph: &FakeApi) {
    let word = fresh_word();
    let issue = app.fresh_issue(&format!("Bikeway {word}")).await;
    let from = fresh_wa_id();
    let listed = chat(app, graph, &from, &format!("search {word}"), 1).await;
    assert!(
        listed.contains(&format!("1. Bikeway {word} (0 people)")),
        "{listed}"
    );

    let id = format!("wamid.{}", uuid::Uuid::new_v4().simple());
    let join = wa_text(&from, &id, "join 1");
    let (a, b, c) = tokio::join!(
        deliver(app, &join),
        deliver(app, &join),
        deliver(app, &join)
    );
    let new: i64 = [a, b, c]
        .iter()
        .map(|(_, body)| body["new"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(new, 1, "exactly one delivery claims the message");
    let replies = graph.wait_for(WAIT, 2, |r| is_reply_to(r, &from)).await;
    assert_eq!(replies.len(), 2);
    assert_eq!(
        reply_text(&replies[1]),
        format!("You joined \"Bikeway {word}\". 1 person now.")
    );
    let members = "SELECT count(*) FROM user_issues WHERE issue_id = ?";
    assert_eq!(count(app, members, vec![text(issue.as_str())]).await, 1);
    let detail = app.get_json(&format!("/api/issues/{issue}")).await;
    assert_eq!(detail["rioter_count"], 1, "{detail}");
    // The member is the phone's user.
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM user_issues ui JOIN user_identities ident ON ident.user_id = ui.user_id \
             WHERE ui.issue_id = ? AND ident.provider = 'phone' AND ident.subject = ?",
            vec![text(issue.as_str()), text(format!("+{from}"))],
        )
        .await,
        1
    );

    // An interactive button reply carries its command in its id.
    let button = wa_payload(
        json!([{ "from": from, "id": format!("wamid.{}", uuid::Uuid::new_v4().simple()), "timestamp": "1",
                 "type": "interactive",
                 "interactive": { "type": "button_reply", "button_reply": { "id": "leave 1", "title": "Leave" } } }]),
        json!([]),
    );
    assert_eq!(deliver(app, &button).await.0, 200);
    let replies = graph.wait_for(WAIT, 3, |r| is_reply_to(r, &from)).await;
    assert_eq!(
        reply_text(&replies[2]),
        format!("You left \"Bikeway {word}\". 0 people now.")
    );
    assert_eq!(count(app, members, vec![text(issue.as_str())]).await, 0);
    assert!(chat(app, graph, &from, "my issues", 4)
        .await
        .contains("haven't joined"));
    assert!(chat(app, graph, &from, "join 9", 5)
        .await
        .contains("Which one?"));
    assert!(chat(app, graph, &from, "🙂", 6)
        .await
        .contains("didn't understand"));
}

async fn statuses_and_media(app: &TestApp, graph: &FakeApi) {
    let from = fresh_wa_id();
    let status_only = wa_payload(
        json!(null),
        json!([{ "id": "wamid.sent", "status": "delivered", "timestamp": "1", "recipient_id": from },
               { "id": "wamid.sent2", "status": "failed", "timestamp": "1", "recipient_id": from,
                 "errors": [{ "code": 131047, "title": "Re-engagement message" }] }]),
    );
    let (status, body) = deliver(app, &status_only).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["received"].as_i64(), body["statuses"].as_i64()),
        (Some(0), Some(2))
    );
    let image = wa_payload(
        json!([{ "from": from, "id": format!("wamid.{}", uuid::Uuid::new_v4().simple()), "timestamp": "1",
                 "type": "image", "image": { "id": "1", "mime_type": "image/jpeg", "sha256": "x" } }]),
        json!([]),
    );
    assert_eq!(deliver(app, &image).await.0, 200);
    let replies = graph.wait_for(WAIT, 1, |r| is_reply_to(r, &from)).await;
    assert_eq!(
        replies.len(),
        1,
        "the status callbacks got no reply, the image one"
    );
    assert!(reply_text(&replies[0]).contains("only read text"));
}

async fn replies_retried(app: &TestApp, graph: &FakeApi) {
    // Two failures, then the reply goes through: three requests, one reply.
    let from = fresh_wa_id();
    graph.fail_next(2);
    chat(app, graph, &from, "help", 3).await;
    let failures = "SELECT count(*) FROM outbound_messages WHERE recipient = ?";
    assert_eq!(count(app, failures, vec![text(from.as_str())]).await, 0);

    // Never accepted: four attempts, then a failure record with the reason.
    let from = fresh_wa_id();
    graph.fail_all(true);
    let id = format!("wamid.{}", uuid::Uuid::new_v4().simple());
    assert_eq!(deliver(app, &wa_text(&from, &id, "help")).await.0, 200);
    let attempts = graph
        .wait_for(Duration::from_secs(25), 4, |r| is_reply_to(r, &from))
        .await;
    eventually("the failure is recorded", WAIT, || async {
        if count(app, failures, vec![text(from.as_str())]).await == 1 {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    graph.fail_all(false);
    assert_eq!(attempts.len(), 4);
    let row = app
        .sql(
            "SELECT status, attempts, last_error, event_id FROM outbound_messages WHERE recipient = ?",
            vec![text(from.as_str())],
        )
        .await;
    assert_eq!(string(&row[0][0]), "failed");
    assert_eq!(int(&row[0][1]), 4);
    let reason = string(&row[0][2]);
    assert!(reason.contains("500"), "{reason}");
    assert_eq!(string(&row[0][3]), id);
    // The inbound message is done with, not left to be redone.
    eventually("the event is marked processed", WAIT, || async {
        if count(
            app,
            "SELECT count(*) FROM webhook_events WHERE event_id = ? AND processed_at IS NOT NULL",
            vec![text(id.as_str())],
        )
        .await
            == 1
        {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
}

async fn telegram_webhook(app: &TestApp, telegram: &FakeApi) {
    let user = (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as i64 + 1;
    let update_id = user * 10;
    let update = json!({
        "update_id": update_id,
        "message": { "message_id": 1, "date": 1700000000, "text": "/start",
                     "from": { "id": user, "is_bot": false, "first_name": "T" },
                     "chat": { "id": user, "type": "private" } }
    });
    let send = |secret: Option<&'static str>| {
        let update = update.clone();
        async move {
            let mut rb = app
                .request(reqwest::Method::POST, "/webhooks/telegram")
                .json(&update);
            if let Some(s) = secret {
                rb = rb.header("X-Telegram-Bot-Api-Secret-Token", s);
            }
            let r = rb.send().await.expect("send");
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(send(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = send(Some(TG_SECRET)).await;
    assert_eq!(
        (status, body["new"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );
    let (status, body) = send(Some(TG_SECRET)).await;
    assert_eq!(
        (status, body["new"].as_bool()),
        (StatusCode::OK, Some(false)),
        "{body}"
    );
    let to_user = |r: &Received| r.body["chat_id"].as_i64() == Some(user);
    let replies = telegram.wait_for(WAIT, 1, to_user).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].path, format!("/bot{TG_TOKEN}/sendMessage"));
    assert!(replies[0].body["text"]
        .as_str()
        .unwrap_or_default()
        .contains("search WORDS"));
    holds_for("one Telegram reply, not two", QUIET, || async {
        telegram.received().iter().filter(|r| to_user(r)).count() == 1
    })
    .await;
}

async fn bot_api(app: &TestApp) {
    let phone = format!("+{}", fresh_wa_id());
    let word = fresh_word();
    let issue = app.fresh_issue(&format!("Streetlights {word}")).await;
    let search = json!({ "action": "search_issues", "params": { "phone": phone, "query": word } });
    assert_eq!(
        bot(app, None, search.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        bot(app, Some("wrong"), search.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, found) = bot(app, Some(BOT_TOKEN), search).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["items"][0]["id"], issue.as_str());

    let (status, e) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "nuke", "params": {} }),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unknown_action"))
    );
    let (status, e) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "join_issue", "params": { "phone": "07700" , "issue_id": issue } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["details"]["field"], "params.phone");

    // Reads create no user.
    let identities =
        "SELECT count(*) FROM user_identities WHERE provider = 'phone' AND subject = ?";
    assert_eq!(count(app, identities, vec![text(phone.as_str())]).await, 0);
    let join = json!({ "action": "join_issue", "params": { "phone": phone, "issue_id": issue } });
    let (status, joined) = bot(app, Some(BOT_TOKEN), join.clone()).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(
        (joined["changed"].as_bool(), joined["rioter_count"].as_i64()),
        (Some(true), Some(1))
    );
    let (_, again) = bot(app, Some(BOT_TOKEN), join).await;
    assert_eq!(
        (again["changed"].as_bool(), again["rioter_count"].as_i64()),
        (Some(false), Some(1))
    );
    assert_eq!(count(app, identities, vec![text(phone.as_str())]).await, 1);

    let (_, mine) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "my_issues", "params": { "phone": phone } }),
    )
    .await;
    assert_eq!(mine["items"][0]["id"], issue.as_str(), "{mine}");
    let (status, detail) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "get_issue", "params": { "phone": phone, "issue_id": issue } }),
    )
    .await;
    assert_eq!(
        (status, detail["id"].as_str()),
        (StatusCode::OK, Some(issue.as_str()))
    );
    let (status, actions) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "get_actions", "params": { "phone": phone, "issue_id": issue } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(actions["items"].is_array(), "{actions}");
    let (status, post) = bot(app, Some(BOT_TOKEN), json!({ "action": "post_feed", "params": { "phone": phone, "issue_id": issue, "content": "Two lamps out on Mill Lane" } })).await;
    assert_eq!(status, StatusCode::CREATED, "{post}");
    assert_eq!(
        count(app, "SELECT count(*) FROM feed WHERE issue_id = ? AND content = 'Two lamps out on Mill Lane'", vec![text(issue.as_str())]).await,
        1
    );
    let (_, left) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "leave_issue", "params": { "phone": phone, "issue_id": issue } }),
    )
    .await;
    assert_eq!(
        (left["changed"].as_bool(), left["rioter_count"].as_i64()),
        (Some(true), Some(0))
    );
}

/// A raw `POST` with the given headers and body bytes.
async fn post_raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: &'static [u8],
) -> (StatusCode, Value) {
    let mut rb = app.request(reqwest::Method::POST, path).body(body);
    for (name, value) in headers {
        rb = rb.header(*name, value);
    }
    let r = rb.send().await.expect("send");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn token_before_body(app: &TestApp) {
    let json_type = ("Content-Type", "application/json".to_owned());
    let text_type = ("Content-Type", "text/plain".to_owned());
    let bearer = |t: &str| ("Authorization", format!("Bearer {t}"));
    for path in ["/api/bot", "/api/admin/cache/invalidate"] {
        // No token, or a wrong one: 401 whatever the body is (was 400, 415).
        for headers in [
            vec![json_type.clone()],
            vec![text_type.clone()],
            vec![json_type.clone(), bearer("wrong")],
        ] {
            let (status, body) = post_raw(app, path, &headers, b"{not json").await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} {headers:?}: {body}"
            );
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
    }
    // With the token, the body is checked as before.
    let (status, body) = post_raw(
        app,
        "/api/bot",
        &[json_type.clone(), bearer(BOT_TOKEN)],
        b"{not json",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json")),
        "{body}"
    );
    let (status, body) = post_raw(
        app,
        "/api/admin/cache/invalidate",
        &[text_type, bearer(ADMIN_TOKEN)],
        b"{}",
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
}

async fn bot_limit(app: &TestApp) {
    let phone = format!("+{}", fresh_wa_id());
    let mine = json!({ "action": "my_issues", "params": { "phone": phone } });
    let send = |body: Value| async move {
        let r = app
            .request(reqwest::Method::POST, "/api/bot")
            .header("Authorization", format!("Bearer {BOT_TOKEN}"))
            .json(&body)
            .send()
            .await
            .expect("send");
        let policy = r
            .headers()
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let retry_after = r.headers().get("retry-after").is_some();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, policy, retry_after, body)
    };
    for n in 1..=BOT_LIMIT {
        let (status, policy, _, body) = send(mine.clone()).await;
        assert_eq!(status, StatusCode::OK, "request {n}: {body}");
        assert_eq!(policy, format!("\"bot\";q={BOT_LIMIT};w=60"));
    }
    let (status, policy, retry_after, body) = send(mine.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["details"]["policy"], "bot");
    assert!(retry_after && policy.starts_with("\"bot\""), "{policy}");
    // A write from that phone is refused too, and nothing is written.
    let issue = app.fresh_issue("Limited").await;
    let (status, ..) =
        send(json!({ "action": "join_issue", "params": { "phone": phone, "issue_id": issue } }))
            .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM user_issues WHERE issue_id = ?",
            vec![text(issue.as_str())]
        )
        .await,
        0
    );
    // Another phone is not limited.
    let other = format!("+{}", fresh_wa_id());
    let (status, _, _, body) =
        send(json!({ "action": "my_issues", "params": { "phone": other } })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn seed_era_phone_user(app: &TestApp, graph: &FakeApi) {
    // A user from before identities: the phone only in users.phone.
    let wa_id = fresh_wa_id();
    let phone = format!("+{wa_id}");
    let user = uuid::Uuid::new_v4().to_string();
    app.sql(
        "INSERT INTO users (id, phone) VALUES (?, ?)",
        vec![text(user.as_str()), text(phone.as_str())],
    )
    .await;
    let old = app.fresh_issue("Seed-era membership").await;
    app.sql(
        "INSERT INTO user_issues (id, user_id, issue_id) VALUES (?, ?, ?)",
        vec![
            text(uuid::Uuid::new_v4().to_string()),
            text(user.as_str()),
            text(old.as_str()),
        ],
    )
    .await;
    let my_issues = json!({ "action": "my_issues", "params": { "phone": phone } });
    let (status, mine) = bot(app, Some(BOT_TOKEN), my_issues.clone()).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["items"][0]["id"], old.as_str(), "{mine}");

    // The first write records the identity, for that user.
    let new = app.fresh_issue("Seed-era join").await;
    let (status, joined) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "join_issue", "params": { "phone": phone, "issue_id": new } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["changed"], true);
    let rows = app
        .sql(
            "SELECT user_id FROM user_identities WHERE provider = 'phone' AND subject = ?",
            vec![text(phone.as_str())],
        )
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(string(&rows[0][0]), user);
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM users WHERE phone = ?",
            vec![text(phone.as_str())]
        )
        .await,
        1,
        "no second user for the phone"
    );
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM user_issues WHERE user_id = ? AND issue_id = ?",
            vec![text(user.as_str()), text(new.as_str())]
        )
        .await,
        1
    );
    let (_, mine) = bot(app, Some(BOT_TOKEN), my_issues).await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(2), "{mine}");

    // Over WhatsApp, the same user.
    let reply = chat(app, graph, &wa_id, "my issues", 1).await;
    assert!(
        reply.contains("Seed-era membership") && reply.contains("Seed-era join"),
        "{reply}"
    );
}

async fn link_on_web(app: &TestApp, graph: &FakeApi, telegram: &FakeApi) {
    let wa_id = fresh_wa_id();
    let phone = format!("+{wa_id}");
    let (status, e) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "link_phone", "params": { "phone": phone, "code": "123456" } }),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("link_on_web")),
        "{e}"
    );
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("POST /api/me/phone") && message.contains("/api/me/phone/verify"),
        "{message}"
    );
    assert_eq!(
        e["error"]["details"]["steps"].as_array().map(Vec::len),
        Some(2)
    );
    // Nothing is written for it.
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM user_identities WHERE provider = 'phone' AND subject = ?",
            vec![text(phone.as_str())]
        )
        .await,
        0
    );

    let reply = chat(app, graph, &wa_id, "link", 1).await;
    assert!(
        reply.contains("website") && reply.contains("6-digit code"),
        "{reply}"
    );
    assert!(chat(app, graph, &wa_id, "help", 2)
        .await
        .contains("link - "));

    // The same on Telegram.
    let user = (uuid::Uuid::new_v4().as_u128() % 1_000_000_000) as i64 + 1;
    let update = json!({
        "update_id": user * 10 + 1,
        "message": { "message_id": 1, "date": 1700000000, "text": "/link",
                     "from": { "id": user, "is_bot": false, "first_name": "L" },
                     "chat": { "id": user, "type": "private" } }
    });
    let r = app
        .request(reqwest::Method::POST, "/webhooks/telegram")
        .header("X-Telegram-Bot-Api-Secret-Token", TG_SECRET)
        .json(&update)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let replies = telegram
        .wait_for(WAIT, 1, |r| r.body["chat_id"].as_i64() == Some(user))
        .await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].body["text"].as_str(), Some(reply.as_str()));
}

async fn chat_issue_actions_post(app: &TestApp, graph: &FakeApi) {
    let word = fresh_word();
    let issue = app.fresh_issue(&format!("Crossings {word}")).await;
    let organisation = app
        .fresh_organisation(&format!("Roads Office {word}"))
        .await;
    app.sql(
        "UPDATE issues SET description = 'No safe crossing near the school.' WHERE id = ?",
        vec![text(issue.as_str())],
    )
    .await;
    app.link_organisation(&issue, &organisation).await;
    app.sql(
        "INSERT INTO actions (id, issue_id, title, type, external_url) VALUES (?, ?, 'Write to the council', 'action', 'https://example.org/write')",
        vec![text(uuid::Uuid::new_v4().to_string()), text(issue.as_str())],
    )
    .await;
    let from = fresh_wa_id();
    // Before any list, a number means nothing.
    assert!(chat(app, graph, &from, "issue 1", 1)
        .await
        .contains("I don't know which issue"));
    let listed = chat(app, graph, &from, &format!("search {word}"), 2).await;
    assert!(listed.contains(&format!("1. Crossings {word}")), "{listed}");

    let detail = chat(app, graph, &from, "issue 1", 3).await;
    assert!(
        detail.starts_with(&format!("Crossings {word} (0 people)")),
        "{detail}"
    );
    assert!(
        detail.contains("No safe crossing near the school."),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("Responsible: Roads Office {word}")),
        "{detail}"
    );
    assert!(detail.contains("1 actions"), "{detail}");
    // Just the number is the same.
    assert_eq!(chat(app, graph, &from, "1", 4).await, detail);

    let actions = chat(app, graph, &from, "actions 1", 5).await;
    assert_eq!(
        actions,
        format!(
            "What you can do about \"Crossings {word}\":\n1. Write to the council https://example.org/write"
        )
    );

    let posted = chat(
        app,
        graph,
        &from,
        "post 1 Lights at the crossing, please",
        6,
    )
    .await;
    assert_eq!(posted, format!("Posted to \"Crossings {word}\"."));
    // The post is the phone's user's, in the issue's feed.
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM feed f JOIN user_identities ident ON ident.user_id = f.user_id \
             WHERE f.issue_id = ? AND f.content = 'Lights at the crossing, please' \
             AND ident.provider = 'phone' AND ident.subject = ?",
            vec![text(issue.as_str()), text(format!("+{from}"))],
        )
        .await,
        1
    );
    let feed = app.get_json(&format!("/api/issues/{issue}/feed")).await;
    assert_eq!(
        feed["items"][0]["content"], "Lights at the crossing, please",
        "{feed}"
    );
    // A post too long for the feed is refused with the reason, not posted.
    let long = format!("post 1 {}", "x".repeat(2_001));
    let refused = chat(app, graph, &from, &long, 7).await;
    assert!(refused.starts_with("Sorry: "), "{refused}");
}

async fn web_join(app: &TestApp, issue: &str, cookie: Option<&str>) -> (Value, Option<String>) {
    let r = app
        .call(
            reqwest::Method::POST,
            &format!("/api/issues/{issue}/join"),
            cookie,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    (r.body, r.cookie)
}

async fn post_json(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    body: Value,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let r = app
        .call(reqwest::Method::POST, path, cookie, Some(body))
        .await;
    (r.status, r.body, r.headers)
}

/// Asks for a code for `phone` and returns the one the fake Graph API got.
async fn request_code(
    app: &TestApp,
    graph: &FakeApi,
    phone: &str,
    cookie: &str,
    nth: usize,
) -> String {
    let (status, body, _) = post_json(
        app,
        "/api/me/phone",
        Some(cookie),
        json!({ "phone": phone }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let digits = phone.trim_start_matches('+').to_owned();
    let sent = graph
        .wait_for(WAIT, nth, |r| {
            r.body["to"].as_str() == Some(digits.as_str())
        })
        .await;
    assert!(sent.len() >= nth, "no code sent to {phone}");
    let template = &sent[nth - 1].body["template"];
    let code = template["components"][0]["parameters"][0]["text"]
        .as_str()
        .expect("code")
        .to_owned();
    assert_eq!(code.len(), 6);
    code
}

async fn link_and_merge(app: &TestApp, graph: &FakeApi) {
    let (x, y, z) = (
        app.fresh_issue("Merge X").await,
        app.fresh_issue("Merge Y").await,
        app.fresh_issue("Merge Z").await,
    );
    let phone = format!("+{}", fresh_wa_id());
    for issue in [&x, &z] {
        let (status, body) = bot(
            app,
            Some(BOT_TOKEN),
            json!({ "action": "join_issue", "params": { "phone": phone, "issue_id": issue } }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, cookie) = web_join(app, &x, None).await;
    let cookie = cookie.expect("a session");
    web_join(app, &y, Some(&cookie)).await;
    let members = "SELECT count(*) FROM user_issues WHERE issue_id = ?";
    assert_eq!(count(app, members, vec![text(x.as_str())]).await, 2);

    let code = request_code(app, graph, &phone, &cookie, 1).await;
    // Only the hash is stored.
    assert_eq!(
        count(
            app,
            "SELECT count(*) FROM otp_codes WHERE phone = ? AND code_hash = ?",
            vec![text(phone.as_str()), text(code.as_str())]
        )
        .await,
        0
    );
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, body, _) = post_json(
        app,
        "/api/me/phone/verify",
        Some(&cookie),
        json!({ "phone": phone, "code": wrong }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("wrong_code"))
    );
    assert_eq!(body["error"]["details"]["attempts_left"], 4);
    // Someone else's session cannot use the code.
    let (_, other) = web_join(app, &y, None).await;
    let (status, body, _) = post_json(
        app,
        "/api/me/phone/verify",
        other.as_deref(),
        json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("no_code"))
    );

    let (status, linked, _) = post_json(
        app,
        "/api/me/phone/verify",
        Some(&cookie),
        json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    assert_eq!(linked["merged"]["memberships_in_both"], 1);
    assert_eq!(linked["merged"]["memberships_moved"], 1);
    assert_eq!(
        count(app, members, vec![text(x.as_str())]).await,
        1,
        "counted once"
    );
    assert_eq!(
        count(
            app,
            "SELECT rioter_count FROM issues WHERE id = ?",
            vec![text(x.as_str())]
        )
        .await,
        1
    );
    // The counter object recounted: another join by the same person changes nothing.
    let (again, _) = web_join(app, &x, Some(&cookie)).await;
    assert_eq!(
        (again["changed"].as_bool(), again["rioter_count"].as_i64()),
        (Some(false), Some(1)),
        "{again}"
    );

    let me = app
        .request(reqwest::Method::GET, "/api/me")
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("me");
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["user"]["phone"], phone.as_str(), "{me}");
    let mut ids: Vec<&str> = me["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut want = vec![x.as_str(), y.as_str(), z.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    // The phone now leads to the web user.
    let (_, mine) = bot(
        app,
        Some(BOT_TOKEN),
        json!({ "action": "my_issues", "params": { "phone": phone } }),
    )
    .await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(3), "{mine}");
    // A code works once.
    let (status, body, _) = post_json(
        app,
        "/api/me/phone/verify",
        Some(&cookie),
        json!({ "phone": phone, "code": code }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("no_code"))
    );
}

async fn code_attempts(app: &TestApp, graph: &FakeApi) {
    let phone = format!("+{}", fresh_wa_id());
    let (_, cookie) = web_join(app, &app.fresh_issue("Attempts").await, None).await;
    let cookie = cookie.expect("session");
    let code = request_code(app, graph, &phone, &cookie, 1).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let verify = |code: String| {
        let cookie = cookie.clone();
        let phone = phone.clone();
        async move {
            post_json(
                app,
                "/api/me/phone/verify",
                Some(&cookie),
                json!({ "phone": phone, "code": code }),
            )
            .await
        }
    };
    for left in (0..5).rev() {
        let (status, body, _) = verify(wrong.to_owned()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["details"]["attempts_left"], left);
    }
    let (status, body, _) = verify(code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_attempts")),
        "the right code after five wrong ones"
    );

    // A new code voids the old one; once past its ten minutes it is refused.
    let code = request_code(app, graph, &phone, &cookie, 2).await;
    app.sql(
        "UPDATE otp_codes SET expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 seconds') WHERE phone = ? AND consumed_at IS NULL",
        vec![text(phone.as_str())],
    )
    .await;
    let (status, body, _) = verify(code).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("code_expired")),
        "{body}"
    );
    let (status, body, _) = verify("12ab56".to_owned()).await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("code"))
    );
    let (status, _, _) = post_json(
        app,
        "/api/me/phone/verify",
        None,
        json!({ "phone": phone, "code": "123456" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// WhatsApp refuses the code: 502 `code_not_sent`, the code is voided, and
/// a new visitor still gets their session with the error, so asking again
/// is the same person (no second user row).
async fn a_code_not_sent(app: &TestApp, graph: &FakeApi) {
    let phone = format!("+{}", fresh_wa_id());
    let ask = |cookie: Option<String>| {
        let phone = phone.clone();
        async move {
            post_json(
                app,
                "/api/me/phone",
                cookie.as_deref(),
                json!({ "phone": phone }),
            )
            .await
        }
    };
    let otp_count = |sql: &'static str| {
        let phone = phone.clone();
        async move { int(&app.sql(sql, vec![text(phone.as_str())]).await[0][0]) }
    };
    graph.fail_all(true);
    let (status, body, headers) = ask(None).await;
    graph.fail_all(false);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "code_not_sent");
    let cookie = session_cookie(&headers).expect("the new session, with the error");
    assert_eq!(
        otp_count("SELECT count(*) FROM otp_codes WHERE phone = ? AND consumed_at IS NULL").await,
        0,
        "the unsent code is voided"
    );
    let (status, body, headers) = ask(Some(cookie)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(session_cookie(&headers), None, "the same session");
    assert_eq!(
        otp_count("SELECT count(DISTINCT user_id) FROM otp_codes WHERE phone = ?").await,
        1,
        "one person asked twice"
    );
}

async fn code_limit(app: &TestApp) {
    let phone = format!("+{}", fresh_wa_id());
    let (_, cookie) = web_join(app, &app.fresh_issue("Limit").await, None).await;
    let cookie = cookie.expect("session");
    for n in 1..=5 {
        let (status, body, headers) = post_json(
            app,
            "/api/me/phone",
            Some(&cookie),
            json!({ "phone": phone }),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "request {n}: {body}");
        assert!(headers.get("ratelimit-policy").is_some());
    }
    let (status, body, headers) = post_json(
        app,
        "/api/me/phone",
        Some(&cookie),
        json!({ "phone": phone }),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.get("retry-after").is_some());
    assert!(
        headers
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.contains("otp")),
        "{headers:?}"
    );
    let (status, body, _) = post_json(
        app,
        "/api/me/phone",
        Some(&cookie),
        json!({ "phone": "07700 900123" }),
    )
    .await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("phone"))
    );
}
