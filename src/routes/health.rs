//! `GET /health`: version, and whether the primary, KV and a Durable Object
//! each answer (with their latency). 200 when all do, 503 naming the ones
//! that do not. Each check has its own deadline.
//!
//! The Durable Object check is a real rate-limiter take (cost 0, a peek
//! that loads and saves the bucket) on the bucket `reads:health`, so a
//! limiter that cannot load its own state shows here; it reports when that
//! object was loaded (`loaded_at`: a change is an eviction or a restart).
//! `rate_limiter` is what this isolate has seen of the limiter since it
//! started ([`crate::edge::limits::Stats`]).

use futures::future::{select, Either};
use serde_json::{json, Value};
use worker::{Date, Response};

use crate::http::config::VERSION;
use crate::http::context::Ctx;
use crate::http::error::AppResult;
use crate::runtime::Timeout;

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// More fields of the check's JSON (what it learned).
    pub detail: Option<Value>,
}

/// The JSON body and status for a set of checks.
pub fn summarise(checks: &[Check]) -> (u16, Value) {
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let mut parts = serde_json::Map::new();
    for c in checks {
        let mut part = json!({ "ok": c.ok, "latency_ms": c.latency_ms, "error": c.error });
        if let (Some(part), Some(Value::Object(detail))) = (part.as_object_mut(), &c.detail) {
            part.extend(detail.clone());
        }
        parts.insert(c.name.to_owned(), part);
    }
    let status = if failing.is_empty() { 200 } else { 503 };
    let body = json!({
        "status": if failing.is_empty() { "ok" } else { "unavailable" },
        "version": VERSION,
        "checks": parts,
        "failing": failing,
    });
    (status, body)
}

async fn timed<F>(name: &'static str, ctx: &Ctx, work: F) -> Check
where
    F: std::future::Future<Output = Result<Option<Value>, String>>,
{
    let started = Date::now().as_millis();
    let deadline = Timeout::after(ctx.config.db_timeout);
    let outcome = select(Box::pin(work), deadline).await;
    let latency_ms = Date::now().as_millis().saturating_sub(started);
    let (error, detail) = match outcome {
        Either::Left((Ok(detail), _)) => (None, detail),
        Either::Left((Err(e), _)) => (Some(e), None),
        Either::Right(_) => (
            Some(format!(
                "no answer within {} ms",
                ctx.config.db_timeout.as_millis()
            )),
            None,
        ),
    };
    Check {
        name,
        ok: error.is_none(),
        latency_ms,
        error,
        detail,
    }
}

async fn primary(ctx: &Ctx) -> Result<Option<Value>, String> {
    let rows = ctx
        .db()
        .query("SELECT 1 AS ok", vec![])
        .await
        .map_err(|e| e.message)?;
    match rows.first().and_then(|r| r.get("ok")) {
        Some(v) if v == 1 => Ok(None),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

async fn kv(ctx: &Ctx) -> Result<Option<Value>, String> {
    let store = ctx.env.kv("CACHE").map_err(|e| e.to_string())?;
    // A key per call, made here (a caller's X-Request-Id can repeat): KV
    // allows about one write per second per key.
    let key = format!("health:{}", uuid::Uuid::new_v4());
    store
        .put(&key, "ok")
        .map_err(|e| format!("{e:?}"))?
        .expiration_ttl(60)
        .execute()
        .await
        .map_err(|e| format!("{e:?}"))?;
    match store.get(&key).text().await.map_err(|e| format!("{e:?}"))? {
        Some(v) if v == "ok" => Ok(None),
        other => Err(format!("read back {other:?}")),
    }
}

async fn durable_object(ctx: &Ctx) -> Result<Option<Value>, String> {
    let policy = ctx.config.rate_limits.reads;
    let taken = crate::edge::limits::take(ctx, &policy, "health", 0, false)
        .await
        .map_err(|e| match e.details {
            Some(d) => format!("{}: {d}", e.message),
            None => e.message,
        })?;
    Ok(Some(json!({
        "loaded_at": crate::domain::time::iso(taken.loaded_at_ms),
    })))
}

pub async fn handle(ctx: &Ctx) -> AppResult<Response> {
    let (p, k, d) = futures::join!(
        timed("primary", ctx, primary(ctx)),
        timed("kv", ctx, kv(ctx)),
        timed("durable_object", ctx, durable_object(ctx)),
    );
    let (status, mut body) = summarise(&[p, k, d]);
    if let Some(b) = body.as_object_mut() {
        b.insert(
            "rate_limiter".to_owned(),
            serde_json::to_value(crate::edge::limits::stats()).unwrap_or_default(),
        );
    }
    Ok(crate::http::context::json_response(status, &body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, ok: bool) -> Check {
        Check {
            name,
            ok,
            latency_ms: 3,
            error: (!ok).then(|| "down".to_owned()),
            detail: ok.then(|| json!({ "loaded_at": "t" })),
        }
    }

    #[test]
    fn all_up_is_200_and_any_down_is_503_naming_it() {
        let (status, body) = summarise(&[check("primary", true), check("kv", true)]);
        assert_eq!(status, 200);
        assert_eq!(body["status"], "ok");
        let (status, body) = summarise(&[check("primary", false), check("kv", true)]);
        assert_eq!(status, 503);
        assert_eq!(body["failing"], json!(["primary"]));
        assert_eq!(body["checks"]["primary"]["error"], "down");
        assert_eq!(body["checks"]["kv"]["loaded_at"], "t");
    }
}
