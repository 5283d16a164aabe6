//! The Worker's side of every Durable Object: one request to the object of
//! a binding with a given name, timed into the request's Durable Object
//! time (`Server-Timing`). Each object's module says what its answers mean.

use worker::{Method, Request, RequestInit};

use crate::domain::time::now_ms;
use crate::http::context::Ctx;

/// What the object answered.
pub struct Reply {
    pub status: u16,
    pub text: String,
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
    let stub = ctx
        .env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(method);
    if let Some(body) = body {
        init.with_body(Some(body.into()));
    }
    // The host is never resolved: the stub routes the request.
    let url = format!(
        "https://{}{path}",
        binding.to_ascii_lowercase().replace('_', "-")
    );
    let request = Request::new_with_init(&url, &init)?;
    let started = now_ms();
    let result = stub.fetch_with_request(request).await;
    ctx.add_do_ms(now_ms().saturating_sub(started));
    let mut response = result?;
    let status = response.status_code();
    let text = response.text().await?;
    Ok(Reply { status, text })
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
    let stub = ctx
        .env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?;
    let sent = worker::Headers::new();
    for (k, v) in headers {
        sent.set(k, v)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(sent);
    let url = format!(
        "https://{}{path}",
        binding.to_ascii_lowercase().replace('_', "-")
    );
    let request = Request::new_with_init(&url, &init)?;
    let started = now_ms();
    let result = stub.fetch_with_request(request).await;
    ctx.add_do_ms(now_ms().saturating_sub(started));
    result
}
