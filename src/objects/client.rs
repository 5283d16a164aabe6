//! The Worker's side of every Durable Object: one request to the object of
//! a binding with a given name, timed into the request's Durable Object
//! time (`Server-Timing`). Each object's module says what its answers mean.

use worker::{Method, Request, RequestInit, Stub};

use crate::domain::time::now_ms;
use crate::http::context::Ctx;
use crate::runtime;

/// What the object answered.
pub struct Reply {
    pub status: u16,
    pub text: String,
}

/// The bindings whose objects talk to the primary: a join goes browser ->
/// nearest edge -> the IssueCounter -> the primary (one region), and
/// an object is created near whoever first asks for it, possibly on another
/// continent from the primary. With `PRIMARY_LOCATION` set, these are
/// created near the primary instead, so the hop that happens once per group
/// of changes (object -> primary) is short and the one per request (edge ->
/// object) is paid once. The rate limiter stays where its clients are.
const NEAR_PRIMARY: [&str; 2] = ["ISSUE_COUNTER", "OUTBOX"];

/// The stub of the object named `name` in `binding`. A location hint only
/// places an object when it is created; objects that exist stay where they
/// are.
pub fn stub(ctx: &Ctx, binding: &str, name: &str) -> worker::Result<Stub> {
    let namespace = ctx.env.durable_object(binding)?;
    let id = namespace.id_from_name(name)?;
    match &ctx.config.primary_location {
        Some(hint) if NEAR_PRIMARY.contains(&binding) => id.get_stub_with_location_hint(hint),
        _ => id.get_stub(),
    }
}

/// Sends `body` to `path` of the object named `name` in `binding`. A
/// failure to reach the object or read its answer is the runtime's error,
/// for the caller to map (reads fail open, writes closed).
pub async fn call(
    ctx: &Ctx,
    binding: &str,
    name: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> worker::Result<Reply> {
    let stub = stub(ctx, binding, name)?;
    let request = runtime::request(
        &object_url(binding, path),
        method.as_ref(),
        &[],
        body.as_deref(),
        None,
    )?;
    let started = now_ms();
    let answer = runtime::fetch_object(stub, &request).await;
    ctx.add_do_ms(now_ms().saturating_sub(started));
    let answer = answer?;
    Ok(Reply {
        status: answer.status,
        text: answer.text,
    })
}

/// Forwards a WebSocket handshake to `path` of the object named `name` in
/// `binding`, with `headers` (`Upgrade: websocket` among them), and returns
/// the object's answer as it is: a 101 carries the socket's client end.
pub async fn upgrade(
    ctx: &Ctx,
    binding: &str,
    name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> worker::Result<worker::Response> {
    let stub = stub(ctx, binding, name)?;
    let sent = worker::Headers::new();
    for (k, v) in headers {
        sent.set(k, v)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(sent);
    let request = Request::new_with_init(&object_url(binding, path), &init)?;
    let started = now_ms();
    let result = stub.fetch_with_request(request).await;
    ctx.add_do_ms(now_ms().saturating_sub(started));
    result
}

/// The URL of `path` at an object of `binding`. The host is never
/// resolved: the stub routes the request.
fn object_url(binding: &str, path: &str) -> String {
    format!(
        "https://{}{path}",
        binding.to_ascii_lowercase().replace('_', "-")
    )
}
