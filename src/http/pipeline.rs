//! The path of every request:
//! request id -> config -> CORS -> route -> bearer secret (the routes behind
//! one) -> body limits -> handler ->
//! response headers (security, CORS, request id, Server-Timing) -> one log line.

use serde_json::Value;
use worker::{web_sys, Date, Env, Response};

#[cfg(feature = "bench")]
use crate::bench;
use crate::domain::counter;
use crate::domain::ids::Id;
use crate::domain::paging::Page;
use crate::edge::cache::{self, Outcome, Served};
use crate::edge::identity;
use crate::edge::limits;
use crate::edge::live_counts::{self, LiveCounts};
use crate::edge::outbox;
use crate::edge::reads::Read;
use crate::http::auth;
use crate::http::config::Config;
use crate::http::context::{json_response, Ctx};
use crate::http::cors::{self, Cors};
use crate::http::error::{AppError, AppResult, Code};
use crate::http::incoming::{BodyError, Incoming};
use crate::http::request_id;
use crate::http::router::{self, Resolved, Route};
use crate::jobs;
use crate::routes::admin;
use crate::routes::bot;
use crate::routes::health;
use crate::routes::issue_writes;
use crate::routes::live;
use crate::routes::me;
use crate::routes::membership;
use crate::routes::phone_link;
use crate::store::issues::ListQuery;
use crate::store::membership::Op;

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

pub async fn handle(
    req: web_sys::Request,
    env: Env,
    worker_ctx: worker::Context,
) -> worker::Result<Response> {
    let started = Date::now().as_millis();
    let req = Incoming::new(req);
    let request_id = request_id::choose(req.header("X-Request-Id").as_deref());
    let origin = req.header("Origin");
    let method = req.method().to_owned();
    let path = req.path().to_owned();
    let own_origin = req.own_origin();
    let config = Config::load(&env);
    let cors = match &config {
        Ok(c) => cors::check(origin.as_deref(), &c.allowed_origins, &own_origin),
        Err(_) => Cors::NoOrigin,
    };
    let (outcome, route, timings, kept_cookies) = match config {
        Err(problem) => (
            Err(AppError::internal(format!("configuration: {problem}"))),
            "config",
            (None, None, None, None, Vec::new()),
            Vec::new(),
        ),
        Ok(config) => {
            let ctx = Ctx::new(config, env, request_id.clone(), worker_ctx);
            let (outcome, route) = run(req, &ctx, &cors).await;
            let seen = (
                ctx.kv_ms(),
                ctx.db_ms(),
                ctx.do_ms(),
                ctx.rate_limit(),
                ctx.phases(),
            );
            (outcome, route, seen, ctx.kept_cookies())
        }
    };
    let (kv_ms, db_ms, do_ms, rate_limit, phases) = timings;
    let mut response = match outcome {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(request_id = %request_id, code = %e.code, details = ?e.details, "request failed");
            }
            let mut response = error_response(&e, &request_id)?;
            for cookie in &kept_cookies {
                response.headers_mut().append("Set-Cookie", cookie)?;
            }
            response
        }
    };
    if let Some(verdict) = rate_limit {
        for (name, value) in verdict.headers() {
            let _ = response.headers_mut().set(name, &value);
        }
    }
    if method == "HEAD" {
        response = without_body(response);
    }
    let elapsed = Date::now().as_millis().saturating_sub(started);
    decorate(
        &mut response,
        &request_id,
        &cors,
        Timings {
            kv_ms,
            db_ms,
            do_ms,
            phases,
            total_ms: elapsed,
        },
    );
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route,
        path = %path,
        status = response.status_code(),
        duration_ms = elapsed,
        kv_ms = kv_ms.unwrap_or(0),
        db_ms = db_ms.unwrap_or(0),
        "request"
    );
    Ok(response)
}

/// Everything between the request id and the response headers. Returns the
/// route name for the log.
async fn run(req: Incoming, ctx: &Ctx, cors: &Cors) -> (AppResult<Response>, &'static str) {
    // A CORS preflight is answered whatever the path; a plain OPTIONS is
    // routed like any method, and answered with the path's methods below.
    if req.method() == "OPTIONS" {
        match cors {
            Cors::Allowed(_) => return (preflight(), "preflight"),
            Cors::Refused => {
                let refused =
                    AppError::new(403, Code::CorsRefused, "this origin may not call the API");
                return (Err(refused), "preflight");
            }
            Cors::NoOrigin | Cors::SameOrigin => {}
        }
    }
    // A write a browser sent without a preflight (a bodiless or form POST)
    // from a page not allowed to call the API: refused before it runs.
    if !cors::may_run(req.method(), cors) {
        let refused = AppError::new(403, Code::CorsRefused, "this origin may not call the API");
        return (Err(refused), "cors");
    }
    let full_path = req.path();
    let no_route = || {
        (
            Err(AppError::not_found(format!("no route for {full_path}"))),
            "404",
        )
    };
    #[cfg(not(feature = "bench"))]
    let path = full_path;
    #[cfg(feature = "bench")]
    let path = match bench::split(full_path) {
        bench::Split::Plain(path) => path,
        bench::Split::Switch(mode, path) if bench::allowed(&ctx.config.environment) => {
            ctx.set_bench(mode);
            path
        }
        bench::Split::Switch(..) | bench::Split::Unknown => return no_route(),
    };
    // The method as sent (see [`Incoming`]): an unknown one must not be
    // served as a read.
    let method = req.method();
    let (route, name) = match router::resolve(method, path) {
        Resolved::Found(route, name) => (route, name),
        Resolved::MethodNotAllowed(allow) if method == "OPTIONS" => {
            return (options(allow), "options")
        }
        Resolved::MethodNotAllowed(allow) => {
            return (Err(AppError::method_not_allowed(allow)), "405")
        }
        Resolved::NotFound => return no_route(),
    };
    // A route behind a bearer secret checks it before its body is read: a
    // caller without the token learns nothing from how the body parses.
    if let Some((secret, name)) = bearer_secret(&route, &ctx.config) {
        let authorization = req.header("Authorization");
        if let Err(e) = auth::bearer(secret, authorization.as_deref(), name) {
            return (Err(e), "unauthorized");
        }
    }
    // Webhooks are signed over their exact bytes: read raw, parse later.
    let signed = matches!(route, Route::WhatsAppWebhook | Route::TelegramWebhook);
    let (raw, body) = if signed {
        match read_bytes(&req, ctx.config.max_body_bytes).await {
            Ok(raw) => (raw.unwrap_or_default(), None),
            Err(e) => return (Err(e), "body"),
        }
    } else {
        match read_body(&req, ctx.config.max_body_bytes).await {
            Ok(body) => (Vec::new(), body),
            Err(e) => return (Err(e), "body"),
        }
    };
    // A live socket's guards need only the request: before its rate limit.
    if let Route::Live { ref id } = route {
        if let Err(e) = live::guard(ctx, &req, id) {
            return (Err(e), name);
        }
    }
    let header = |name: &str| req.header(name);
    #[cfg(feature = "bench")]
    let limited = ctx.bench() != bench::Mode::NoLimit;
    #[cfg(not(feature = "bench"))]
    let limited = true;
    if limited {
        if let Err(e) = limit(ctx, &route, &req).await {
            return (Err(e), "rate_limited");
        }
    }
    let result = match route {
        Route::Health => health::handle(ctx).await,
        #[cfg(feature = "bench")]
        Route::BenchConstant => bench::constant::handle(ctx),
        Route::Join { ref id } | Route::Leave { ref id } => {
            let op = if matches!(route, Route::Leave { .. }) {
                Op::Leave
            } else {
                Op::Join
            };
            match Id::parse(id, "id") {
                Ok(issue) => {
                    membership::handle(ctx, op, &issue, body.as_ref(), header("Cookie").as_deref())
                        .await
                }
                Err(e) => Err(e),
            }
        }
        Route::Live { ref id } => match Id::parse(id, "id") {
            Ok(issue) => {
                let ip = limits::client_ip(ctx, header);
                live::open(ctx, &issue, &ip).await
            }
            Err(e) => Err(e),
        },
        Route::Me => me::get(ctx, header("Cookie").as_deref()).await,
        Route::LinkPhone => {
            phone_link::request(ctx, body.as_ref(), header("Cookie").as_deref()).await
        }
        Route::VerifyPhone => {
            phone_link::verify(ctx, body.as_ref(), header("Cookie").as_deref()).await
        }
        Route::OutboxEntry { ref id } => match Id::parse(id, "id") {
            Ok(id) => outbox::status(ctx, &id).await,
            Err(e) => Err(e),
        },
        Route::Bot => bot::api::handle(ctx, body.as_ref()).await,
        Route::WhatsAppVerify => req
            .query_pairs()
            .and_then(|pairs| bot::whatsapp::verify(ctx, &pairs)),
        Route::WhatsAppWebhook => {
            bot::whatsapp::receive(ctx, header("X-Hub-Signature-256").as_deref(), &raw).await
        }
        Route::TelegramWebhook => {
            bot::telegram::receive(
                ctx,
                header("X-Telegram-Bot-Api-Secret-Token").as_deref(),
                &raw,
            )
            .await
        }
        Route::Logout => me::logout(),
        Route::CreateIssue
        | Route::AddPost { .. }
        | Route::AddSynonym { .. }
        | Route::AddAction { .. } => {
            issue_writes::handle(
                ctx,
                &route,
                body.as_ref(),
                header("Idempotency-Key").as_deref(),
                header("Cookie").as_deref(),
            )
            .await
        }
        Route::InvalidateCache => admin::invalidate(ctx, body.as_ref()).await,
        Route::RunJob { ref name } => jobs::run::run_now(ctx, name, body.as_ref()).await,
        Route::ListJobs => match req.query_pairs() {
            Ok(pairs) => jobs::run::list(ctx, &pairs).await,
            Err(e) => Err(e),
        },
        read_route => match to_read(&req, read_route) {
            Ok(read) => match cache::serve(ctx, &read).await {
                Ok(served) => cached_response(
                    with_live_counts(served, &read),
                    header("If-None-Match").as_deref(),
                ),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
    };
    (result, name)
}

/// The secret a route is behind (`Authorization: Bearer <secret>`) and its
/// name, checked by [`run`] before the body is read: `BOT_TOKEN` for the bot
/// contract, `CRON_SECRET` for the operator routes. An unset secret turns
/// its routes off (403).
fn bearer_secret<'c>(route: &Route, config: &'c Config) -> Option<(Option<&'c str>, &'static str)> {
    match route {
        Route::Bot => Some((config.bot_token.as_deref(), "BOT_TOKEN")),
        Route::InvalidateCache | Route::RunJob { .. } | Route::ListJobs => {
            Some((config.admin_token.as_deref(), "CRON_SECRET"))
        }
        _ => None,
    }
}

/// The rate limits a request pays before its handler runs (see
/// [`limits`]): reads per IP through the isolate's gate (`/health` too: each
/// call queries the primary, writes KV and takes from a limiter), writes
/// per IP, creating an issue also per user. The benchmark baseline and the
/// admin routes (behind their own token) are not limited.
async fn limit(ctx: &Ctx, route: &Route, req: &Incoming) -> AppResult<()> {
    let header = |name: &str| req.header(name);
    let ip = limits::client_ip(ctx, header);
    let policies = &ctx.config.rate_limits;
    match route {
        // Authenticated by their token, signature or secret; the bot policy
        // per phone applies inside.
        #[cfg(feature = "bench")]
        Route::BenchConstant => Ok(()),
        Route::InvalidateCache
        | Route::RunJob { .. }
        | Route::ListJobs
        | Route::Bot
        | Route::WhatsAppVerify
        | Route::WhatsAppWebhook
        | Route::TelegramWebhook => Ok(()),
        Route::Live { .. } => limits::connect(ctx, &ip).await,
        _ if matches!(req.method(), "GET" | "HEAD") => limits::read(ctx, &ip).await,
        Route::CreateIssue => {
            limits::write(ctx, &policies.writes, &ip).await?;
            let user =
                identity::session(ctx, header("Cookie").as_deref())?.map_or(ip, |s| s.user_id);
            limits::write(ctx, &policies.create, &user).await
        }
        _ => limits::write(ctx, &policies.writes, &ip).await,
    }
}

/// The cacheable read a read route asks for; bad ids and parameters are 400s.
fn to_read(req: &Incoming, route: Route) -> AppResult<Read> {
    let pairs = req.query_pairs()?;
    let issue = |id: &str| Id::parse(id, "id");
    Ok(match route {
        Route::ListIssues => Read::Issues(ListQuery::parse(pairs)?),
        Route::GetIssue { id } => Read::Issue(issue(&id)?),
        Route::IssueFeed { id } => Read::Feed(issue(&id)?, Page::parse(&pairs)?),
        Route::IssueActions { id } => Read::Actions(issue(&id)?, Page::parse(&pairs)?),
        Route::IssueCountries { id } => Read::Countries(issue(&id)?),
        Route::ListOrganisations => Read::Organisations(Page::parse(&pairs)?),
        Route::GetOrganisation { id } => Read::Organisation(issue(&id)?),
        Route::Health
        | Route::InvalidateCache
        | Route::RunJob { .. }
        | Route::ListJobs
        | Route::Join { .. }
        | Route::Leave { .. }
        | Route::Live { .. }
        | Route::Me
        | Route::Logout
        | Route::CreateIssue
        | Route::AddPost { .. }
        | Route::AddSynonym { .. }
        | Route::AddAction { .. }
        | Route::Bot
        | Route::WhatsAppVerify
        | Route::WhatsAppWebhook
        | Route::TelegramWebhook
        | Route::LinkPhone
        | Route::VerifyPhone
        | Route::OutboxEntry { .. } => return Err(AppError::internal("not a read route")),
        #[cfg(feature = "bench")]
        Route::BenchConstant => return Err(AppError::internal("not a read route")),
    })
}

/// Puts counts this isolate learned from its own joins and leaves into an
/// issue detail or list (the writer sees its change at once). A body loaded
/// from the primary within two flush intervals of a live count may predate
/// the flush that carries it, so the live count wins in that window too.
fn with_live_counts(served: Served, read: &Read) -> Served {
    if !matches!(read, Read::Issue(_) | Read::Issues(_)) || live_counts::Learned::is_empty() {
        return served;
    }
    let loaded = served
        .entry
        .stored_at
        .saturating_sub(2 * counter::FLUSH_EVERY_MS);
    // A detail whose issue has no newer count here is sent as it is,
    // without parsing its body.
    if let Read::Issue(id) = read {
        let newer = live_counts::Learned
            .get(id.as_str())
            .is_some_and(|c| c.as_of_ms > loaded);
        if !newer {
            return served;
        }
    }
    let Ok(mut body) = serde_json::from_str::<Value>(&served.entry.body) else {
        return served;
    };
    if live_counts::overlay(&mut body, loaded, &live_counts::Learned) == 0 {
        return served;
    }
    let stored_at = served.entry.stored_at;
    Served {
        entry: cache::Entry::new(body.to_string(), stored_at),
        outcome: served.outcome,
        from: served.from,
    }
}

/// How browsers (and any cache between) keep a read: they may store it but
/// must ask again before every use, with its ETag, so a page's next read
/// after its own write shows that write, and an unchanged body costs a
/// 304. The Worker's own cache keeps its freshness (`CACHE_FRESH_SECS`).
const READ_CACHE_CONTROL: &str = "no-cache";

/// What every other response says: it depends on who asks (a session, a
/// write's outcome, an error), so nothing keeps it.
const PRIVATE_CACHE_CONTROL: &str = "private, no-store";

/// A cached read as HTTP: 304 when the client has this version, else the
/// body, with ETag, Cache-Control and X-Cache.
fn cached_response(served: Served, if_none_match: Option<&str>) -> AppResult<Response> {
    let Served {
        entry,
        outcome,
        from,
    } = served;
    let not_modified = if_none_match.is_some_and(|h| cache::etag_matches(h, &entry.etag));
    let mut response = if not_modified {
        Response::empty()?.with_status(304)
    } else {
        let mut r = Response::ok(entry.body)?;
        r.headers_mut().set("Content-Type", "application/json")?;
        r
    };
    let headers = response.headers_mut();
    headers.set("ETag", &entry.etag)?;
    headers.set("Cache-Control", READ_CACHE_CONTROL)?;
    headers.set("X-Cache", outcome.header())?;
    // Read by `decorate`, which puts the timings after it.
    headers.set("Server-Timing", &format!("cache;desc={}", from.name()))?;
    if outcome == Outcome::StaleOnError {
        headers.set("Warning", "110 - \"Response is Stale\"")?;
    }
    Ok(response)
}

/// The answer to a CORS preflight from an allowed origin.
fn preflight() -> AppResult<Response> {
    let mut r = Response::empty()?.with_status(204);
    for (k, v) in cors::preflight_headers() {
        r.headers_mut().set(k, v)?;
    }
    Ok(r)
}

/// A plain `OPTIONS`: the methods the path serves, in `Allow`.
fn options(mut allow: Vec<&'static str>) -> AppResult<Response> {
    allow.push("OPTIONS");
    let mut r = Response::empty()?.with_status(204);
    r.headers_mut().set("Allow", &allow.join(", "))?;
    Ok(r)
}

/// The body's bytes, if it has one, within `max` (413 past it: a declared
/// `Content-Length` over `max` is refused before anything is read).
async fn read_bytes(req: &Incoming, max: usize) -> AppResult<Option<Vec<u8>>> {
    let length: Option<usize> = req
        .header("Content-Length")
        .and_then(|l| l.trim().parse().ok());
    if length.is_some_and(|l| l > max) {
        return Err(too_large(max));
    }
    req.body_within(max).await.map_err(|e| match e {
        BodyError::TooLarge => too_large(max),
        BodyError::Unreadable(why) => AppError::bad_request(Code::BadBody, why),
    })
}

/// Body limits, before any route sees the request: a body must be JSON
/// (415 otherwise), at most `max` bytes (413), and well-formed (400).
/// Returns the parsed body, if there was one.
async fn read_body(req: &Incoming, max: usize) -> AppResult<Option<Value>> {
    let content_type = req.header("Content-Type");
    let Some(bytes) = read_bytes(req, max).await? else {
        return Ok(None);
    };
    if !is_json(content_type.as_deref()) {
        return Err(AppError::new(
            415,
            Code::UnsupportedMediaType,
            "send the body as application/json",
        ));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        AppError::bad_request(
            Code::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn too_large(max: usize) -> AppError {
    AppError::new(
        413,
        Code::PayloadTooLarge,
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

/// Where a request's time went, for `Server-Timing`.
struct Timings {
    kv_ms: Option<u64>,
    db_ms: Option<u64>,
    do_ms: Option<u64>,
    /// The request's own metrics ([`Ctx::add_phase`]).
    phases: Vec<String>,
    total_ms: u64,
}

fn decorate(response: &mut Response, request_id: &str, cors: &Cors, t: Timings) {
    let headers = response.headers_mut();
    for (k, v) in SECURITY_HEADERS {
        let _ = headers.set(k, v);
    }
    let _ = headers.set("X-Request-Id", request_id);
    if headers.get("Cache-Control").ok().flatten().is_none() {
        let _ = headers.set("Cache-Control", PRIVATE_CACHE_CONTROL);
    }
    let _ = headers.append("Vary", "Origin");
    if let Cors::Allowed(origin) = cors {
        for (k, v) in cors::response_headers(origin) {
            let _ = headers.set(k, &v);
        }
    }
    let mut timing = Vec::new();
    for (name, ms) in [("kv", t.kv_ms), ("do", t.do_ms), ("db", t.db_ms)] {
        if let Some(ms) = ms {
            timing.push(format!("{name};dur={ms}"));
        }
    }
    timing.extend(t.phases);
    timing.push(format!("total;dur={}", t.total_ms));
    // Where a cached read came from (`cached_response`) goes first.
    if let Some(cache) = headers.get("Server-Timing").ok().flatten() {
        timing.insert(0, cache);
    }
    let timing = timing.join(", ");
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
