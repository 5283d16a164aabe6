//! Rate limits on the request path: which policy a request pays, from whom,
//! and what happens when the limiter cannot answer.
//!
//! - Reads (`GET /api/...`) pay `reads` per client IP through the isolate's
//!   [`LocalGate`]: a block of tokens is reserved from the RateLimiter
//!   object at once and spent locally, so a cached read rarely pays a
//!   Durable Object round trip, and the limit stays global (see
//!   [`crate::domain::rate_limit`] for the error bound). A limiter failure lets the
//!   read through (fail open, logged).
//! - Writes (`POST`/`DELETE /api/...`, but not the admin routes) pay
//!   `writes` per IP, one token each, asked of the object every time
//!   (exact) except while a refusal it gave is still due (remembered in
//!   the isolate until its `Retry-After`); creating an issue also pays
//!   `create` per user (the session's, else the IP). A limiter failure
//!   refuses the write (503 `limiter_unavailable`, fail closed) for at most
//!   `LIMITER_FAIL_CLOSED_SECS` (30 s) from the bucket's first failure in
//!   a row; after that, while the limiter still fails, the isolate
//!   limits the bucket itself with the same policy (see
//!   [`rate_limit::Outages`]), so writes resume at a per-isolate limit
//!   rather than stay refused for ever.
//!
//! - A new live socket (`GET /api/issues/:id/live`) pays `live` per IP,
//!   one token from the object each time (exact); it fails open.
//!
//! Every call to the limiter is counted in the isolate's [`stats`]
//! (failures, refusals and local admissions while it was down, bucket
//! states it had to start afresh), which `GET /health` reports.
//!
//! Every limited response carries `RateLimit-Policy` and `RateLimit`; a
//! refusal is 429 `rate_limited` with `Retry-After`.
//!
//! The client IP comes from the header named by `CLIENT_IP_HEADER`
//! (`CF-Connecting-IP`, which Cloudflare sets and clients cannot forge).

use std::cell::RefCell;

use serde::Serialize;
use serde_json::json;
use worker::Date;

use crate::domain::rate_limit::{self, Local, LocalGate, Outages, Policy, Verdict, WhenDown};
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult, Code};
use crate::objects::rate_limiter;

thread_local! {
    static GATE: RefCell<LocalGate> = RefCell::new(LocalGate::new());
    static OUTAGES: RefCell<Outages> = RefCell::new(Outages::new());
    static STATS: RefCell<Stats> = RefCell::new(Stats::default());
}

/// The limiter as this isolate has seen it since it started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Calls to the limiter.
    pub calls: u64,
    /// Calls that failed (no answer, an error).
    pub failures: u64,
    /// Writes refused with 503 because the limiter failed.
    pub writes_refused_while_down: u64,
    /// Writes admitted by the isolate's own bucket while the limiter failed.
    pub writes_limited_locally: u64,
    /// Buckets whose saved state the limiter could not read and started
    /// afresh.
    pub buckets_recovered: u64,
    /// Buckets of this isolate whose limiter is failing now.
    pub buckets_failing: usize,
    /// The last failure: unix ms and what it was.
    pub last_failure_ms: Option<u64>,
    pub last_failure: Option<String>,
}

/// The limiter's record in this isolate.
pub fn stats() -> Stats {
    let mut s = STATS.with(|s| s.borrow().clone());
    s.buckets_failing = OUTAGES.with(|o| o.borrow().len());
    s
}

fn count(f: impl FnOnce(&mut Stats)) {
    STATS.with(|s| f(&mut s.borrow_mut()));
}

/// Takes tokens from the limiter of `policy` and `subject`, counting the
/// call in [`stats`]. Every caller of the limiter goes through here.
pub async fn take(
    ctx: &Ctx,
    policy: &Policy,
    subject: &str,
    cost: u32,
    up_to: bool,
) -> AppResult<rate_limiter::Taken> {
    let result = rate_limiter::take(ctx, policy, subject, cost, up_to).await;
    count(|s| {
        s.calls += 1;
        match &result {
            Ok(t) => s.buckets_recovered += u64::from(t.recovered),
            Err(e) => {
                s.failures += 1;
                s.last_failure_ms = Some(Date::now().as_millis());
                s.last_failure = Some(match &e.details {
                    Some(d) => format!("{}: {d}", e.message),
                    None => e.message.clone(),
                });
            }
        }
    });
    if result.is_ok() && OUTAGES.with(|o| !o.borrow().is_empty()) {
        let key = rate_limit::object_name(policy, subject);
        OUTAGES.with(|o| o.borrow_mut().answered(&key));
    }
    result
}

/// The 429 for `policy`, with its headers remembered for the response.
pub fn refused(ctx: &Ctx, policy: &Policy, retry_after_ms: u64, reset_ms: u64) -> AppError {
    ctx.set_rate_limit(Verdict {
        policy: *policy,
        remaining: 0,
        reset_ms,
    });
    let secs = rate_limit::retry_after_secs_of(retry_after_ms);
    let mut e = AppError::new(
        429,
        Code::RateLimited,
        format!("too many requests; retry in {secs} s"),
    )
    .with_details(json!({ "policy": policy.name, "retry_after_secs": secs }));
    e.retry_after = Some(secs);
    e
}

/// The limiter let the request through: its verdict kept for the headers.
fn admitted(ctx: &Ctx, policy: &Policy, t: &rate_limiter::Taken) -> AppResult<()> {
    ctx.set_rate_limit(Verdict {
        policy: *policy,
        remaining: t.remaining,
        reset_ms: t.reset_ms,
    });
    Ok(())
}

/// The caller's IP, as the configured header gives it.
pub fn client_ip(ctx: &Ctx, header: impl Fn(&str) -> Option<String>) -> String {
    header(&ctx.config.client_ip_header)
        .map(|ip| ip.trim().to_owned())
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A read: through the isolate's gate; fails open.
pub async fn read(ctx: &Ctx, subject: &str) -> AppResult<()> {
    let policy = ctx.config.rate_limits.reads;
    let key = rate_limit::object_name(&policy, subject);
    let now = Date::now().as_millis();
    match GATE.with(|g| g.borrow_mut().take(&key, now)) {
        Local::Allowed { remaining_hint } => {
            ctx.set_rate_limit(Verdict {
                policy,
                remaining: remaining_hint,
                reset_ms: 0,
            });
            Ok(())
        }
        Local::Denied { retry_after_ms } => Err(refused(ctx, &policy, retry_after_ms, 0)),
        // Another request of this isolate is asking for a block: this one
        // asks for its own token only.
        Local::AskOne => match take(ctx, &policy, subject, 1, false).await {
            Ok(t) if t.granted > 0 => admitted(ctx, &policy, &t),
            Ok(t) => Err(refused(ctx, &policy, t.retry_after_ms, t.reset_ms)),
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, details = ?e.details, "rate limiter failed; read let through");
                Ok(())
            }
        },
        Local::AskGlobal => {
            let block = rate_limit::block_size(&policy);
            match take(ctx, &policy, subject, block, true).await {
                Ok(t) if t.granted > 0 => {
                    let expires = now + rate_limit::grant_ttl_ms(&policy);
                    GATE.with(|g| g.borrow_mut().grant(&key, t.granted - 1, expires));
                    admitted(ctx, &policy, &t)
                }
                Ok(t) => {
                    GATE.with(|g| g.borrow_mut().deny(&key, now + t.retry_after_ms));
                    Err(refused(ctx, &policy, t.retry_after_ms, t.reset_ms))
                }
                Err(e) => {
                    GATE.with(|g| g.borrow_mut().release(&key));
                    tracing::warn!(request_id = %ctx.request_id, details = ?e.details, "rate limiter failed; read let through");
                    Ok(())
                }
            }
        }
    }
}

/// A new live socket: one token of `live` from the object, exactly (a
/// socket is opened once, then costs nothing per update); a refusal is
/// remembered in the isolate until its `Retry-After`, as for writes. Fails
/// open, like a read: a socket only shows what reads show.
pub async fn connect(ctx: &Ctx, subject: &str) -> AppResult<()> {
    let policy = ctx.config.rate_limits.live;
    let key = rate_limit::object_name(&policy, subject);
    let now = Date::now().as_millis();
    if let Some(retry_after_ms) = GATE.with(|g| g.borrow_mut().denied(&key, now)) {
        return Err(refused(ctx, &policy, retry_after_ms, retry_after_ms));
    }
    match take(ctx, &policy, subject, 1, false).await {
        Ok(t) if t.granted > 0 => admitted(ctx, &policy, &t),
        Ok(t) => {
            GATE.with(|g| g.borrow_mut().deny(&key, now + t.retry_after_ms));
            Err(refused(ctx, &policy, t.retry_after_ms, t.reset_ms))
        }
        Err(e) => {
            tracing::warn!(request_id = %ctx.request_id, details = ?e.details, "rate limiter failed; live socket let through");
            Ok(())
        }
    }
}

/// A write (or creation): one token from the object; fails closed. A
/// refusal is remembered in the isolate until its `Retry-After`, so a
/// client flooding writes costs no object round trip per refused request
/// (refusing early is always within the limit).
pub async fn write(ctx: &Ctx, policy: &Policy, subject: &str) -> AppResult<()> {
    let key = rate_limit::object_name(policy, subject);
    let now = Date::now().as_millis();
    if let Some(retry_after_ms) = GATE.with(|g| g.borrow_mut().denied(&key, now)) {
        return Err(refused(ctx, policy, retry_after_ms, retry_after_ms));
    }
    match take(ctx, policy, subject, 1, false).await {
        Ok(t) if t.granted > 0 => admitted(ctx, policy, &t),
        Ok(t) => {
            GATE.with(|g| g.borrow_mut().deny(&key, now + t.retry_after_ms));
            Err(refused(ctx, policy, t.retry_after_ms, t.reset_ms))
        }
        Err(e) => match OUTAGES.with(|o| {
            let window = ctx.config.limiter_fail_closed.as_millis() as u64;
            o.borrow_mut().failed(&key, policy, now, window)
        }) {
            WhenDown::Refuse { retry_after_ms } => {
                count(|s| s.writes_refused_while_down += 1);
                tracing::error!(request_id = %ctx.request_id, key = %key, details = ?e.details, "rate limiter failed; write refused");
                let mut e = AppError::new(
                    503,
                    Code::LimiterUnavailable,
                    "writes are paused for a moment; retry shortly",
                );
                e.retry_after = Some(rate_limit::retry_after_secs_of(retry_after_ms).min(5));
                Err(e)
            }
            WhenDown::Local(d) if d.allowed => {
                count(|s| s.writes_limited_locally += 1);
                tracing::error!(request_id = %ctx.request_id, key = %key, details = ?e.details, "rate limiter failing past its fail-closed window; write admitted by this isolate's own limit");
                ctx.set_rate_limit(Verdict {
                    policy: *policy,
                    remaining: d.remaining,
                    reset_ms: d.reset_ms,
                });
                Ok(())
            }
            WhenDown::Local(d) => Err(refused(ctx, policy, d.retry_after_ms, d.reset_ms)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_headers() {
        let v = Verdict {
            policy: Policy {
                name: "writes",
                limit: 30,
                window_ms: 60_000,
            },
            remaining: 29,
            reset_ms: 1_500,
        };
        let [(p, pv), (l, lv)] = v.headers();
        assert_eq!(
            (p, pv.as_str()),
            ("RateLimit-Policy", "\"writes\";q=30;w=60")
        );
        assert_eq!((l, lv.as_str()), ("RateLimit", "\"writes\";r=29;t=2"));
    }
}
