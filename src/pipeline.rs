//! The path of every request:
//! request id -> config -> CORS -> body limits -> route -> handler ->
//! response headers (security, CORS, request id, Server-Timing) -> one log line.

use serde_json::Value;
use worker::{Date, Env, Method, Request, Response};

use crate::config::Config;
use crate::context::{json_response, Ctx};
use crate::cors::{self, Cors};
use crate::error::{AppError, AppResult};
use crate::router::{self, Resolved, Route};
use crate::{health, issues, request_id};

/// Security headers on every response. The API serves JSON only, so the CSP
/// forbids everything.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (
        "Strict-Transport-Security",
        "max-age=63072000; includeSubDomains",
    ),
    ("X-Frame-Options", "DENY"),
];

pub async fn handle(req: Request, env: Env) -> worker::Result<Response> {
    let started = Date::now().as_millis();
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let request_id = request_id::choose(header("X-Request-Id").as_deref());
    let origin = header("Origin");
    let method = req.method();
    let path = req.path();

    let config = Config::load(&env);
    let cors = match &config {
        Ok(c) => cors::check(origin.as_deref(), &c.allowed_origins),
        Err(_) => Cors::NotCors,
    };
    let (outcome, route, db_ms) = match config {
        Err(problem) => (
            Err(AppError::internal(format!("configuration: {problem}"))),
            "config",
            None,
        ),
        Ok(config) => {
            let ctx = Ctx::new(config, env, request_id.clone());
            let (outcome, route) = run(req, &ctx, &cors).await;
            (outcome, route, ctx.db_ms())
        }
    };
    let mut response = match outcome {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(request_id = %request_id, code = e.code, details = ?e.details, "request failed");
            }
            error_response(&e, &request_id)?
        }
    };
    if method == Method::Head {
        response = without_body(response);
    }
    let elapsed = Date::now().as_millis().saturating_sub(started);
    decorate(&mut response, &request_id, &cors, db_ms, elapsed);
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route,
        path = %path,
        status = response.status_code(),
        duration_ms = elapsed,
        db_ms = db_ms.unwrap_or(0.0),
        "request"
    );
    Ok(response)
}

/// Everything between the request id and the response headers. Returns the
/// route name for the log.
async fn run(mut req: Request, ctx: &Ctx, cors: &Cors) -> (AppResult<Response>, &'static str) {
    if req.method() == Method::Options {
        return (preflight(cors), "preflight");
    }
    if let Err(e) = read_body(&mut req, ctx.config.max_body_bytes).await {
        return (Err(e), "body");
    }
    let route = match router::resolve(req.method().as_ref(), &req.path()) {
        Resolved::Found(route) => route,
        Resolved::MethodNotAllowed(allow) => {
            return (Err(AppError::method_not_allowed(allow)), "405")
        }
        Resolved::NotFound => {
            return (
                Err(AppError::not_found(format!("no route for {}", req.path()))),
                "404",
            )
        }
    };
    match route {
        Route::Health => (health::handle(ctx).await, "health"),
        Route::ListIssues => {
            let query = req
                .url()
                .map_err(|e| AppError::bad_request("bad_url", e.to_string()))
                .and_then(|url| issues::ListQuery::parse(url.query_pairs()));
            let result = match query {
                Ok(q) => issues::list(ctx, &q).await,
                Err(e) => Err(e),
            };
            (result, "issues.list")
        }
        Route::GetIssue { id } => (issues::get(ctx, &id).await, "issues.get"),
    }
}

fn preflight(cors: &Cors) -> AppResult<Response> {
    match cors {
        Cors::Allowed(_) => {
            let mut r = Response::empty()?.with_status(204);
            for (k, v) in cors::preflight_headers() {
                r.headers_mut().set(k, v)?;
            }
            Ok(r)
        }
        Cors::Refused => Err(AppError::new(
            403,
            "cors_refused",
            "this origin may not call the API",
        )),
        Cors::NotCors => {
            let mut r = Response::empty()?.with_status(204);
            r.headers_mut().set("Allow", cors::ALLOW_METHODS)?;
            Ok(r)
        }
    }
}

/// Body limits, before any route sees the request: a body must be JSON
/// (415 otherwise), at most `max` bytes (413), and well-formed (400).
/// Returns the parsed body, if there was one.
async fn read_body(req: &mut Request, max: usize) -> AppResult<Option<Value>> {
    let headers = req.headers();
    let length: Option<usize> = headers
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|l| l.trim().parse().ok());
    let chunked = headers.get("Transfer-Encoding").ok().flatten().is_some();
    let content_type = headers.get("Content-Type").ok().flatten();
    let has_body = chunked || length.is_some_and(|l| l > 0);
    if !has_body {
        return Ok(None);
    }
    if length.is_some_and(|l| l > max) {
        return Err(too_large(max));
    }
    if !is_json(content_type.as_deref()) {
        return Err(AppError::new(
            415,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    let bytes = req
        .bytes()
        .await
        .map_err(|e| AppError::bad_request("bad_body", e.to_string()))?;
    if bytes.len() > max {
        return Err(too_large(max));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        AppError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })
}

fn too_large(max: usize) -> AppError {
    AppError::new(
        413,
        "payload_too_large",
        format!("the body may be at most {max} bytes"),
    )
}

/// `application/json`, with or without parameters such as `charset`.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn error_response(e: &AppError, request_id: &str) -> worker::Result<Response> {
    let mut response = json_response(e.status, &e.body(request_id))?;
    let headers = response.headers_mut();
    if let Some(secs) = e.retry_after {
        headers.set("Retry-After", &secs.to_string())?;
    }
    if let Some(allow) = &e.allow {
        headers.set("Allow", &allow.join(", "))?;
    }
    Ok(response)
}

fn without_body(response: Response) -> Response {
    let status = response.status_code();
    let headers = response.headers().clone();
    match Response::empty() {
        Ok(r) => r.with_status(status).with_headers(headers),
        Err(_) => response,
    }
}

fn decorate(
    response: &mut Response,
    request_id: &str,
    cors: &Cors,
    db_ms: Option<f64>,
    total_ms: u64,
) {
    let headers = response.headers_mut();
    for (k, v) in SECURITY_HEADERS {
        let _ = headers.set(k, v);
    }
    let _ = headers.set("X-Request-Id", request_id);
    if headers.get("Cache-Control").ok().flatten().is_none() {
        let _ = headers.set("Cache-Control", "no-store");
    }
    let _ = headers.append("Vary", "Origin");
    if let Cors::Allowed(origin) = cors {
        for (k, v) in cors::response_headers(origin) {
            let _ = headers.set(k, &v);
        }
    }
    let mut timing = format!("total;dur={total_ms}");
    if let Some(db) = db_ms {
        timing = format!("db;dur={db:.0}, {timing}");
    }
    let _ = headers.set("Server-Timing", &timing);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/jsonp")));
        assert!(!is_json(None));
    }
}
