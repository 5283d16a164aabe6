//! The RateLimiter Durable Object: one per (policy, subject), named by
//! [`crate::rate_limit::object_name`]. Its state is one GCRA bucket, kept in
//! the object's SQLite storage (synchronous, so two requests cannot
//! interleave between reading and writing it).
//!
//! `POST /take` with [`Take`] answers [`Taken`]: `cost` tokens or none
//! (exact, for writes), or with `up_to` as many as are left up to `cost` (a
//! block reserved by an isolate for reads).

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use worker::{durable_object, Date, Env, Method, Request, RequestInit, Response, Result, State};

use crate::context::Ctx;
use crate::error::{AppError, AppResult};
use crate::rate_limit::{self, Gcra, Policies, Policy};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Take {
    /// A policy name (`reads`, `writes`, ...), looked up in the configured
    /// policies, so the Worker and the object agree on the numbers.
    pub policy: String,
    pub cost: u32,
    #[serde(default)]
    pub up_to: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    /// Tokens granted (0: refused).
    pub granted: u32,
    pub remaining: u32,
    pub reset_ms: u64,
    pub retry_after_ms: u64,
}

#[durable_object]
pub struct RateLimiter {
    state: State,
    env: Env,
    bucket: RefCell<Option<Gcra>>,
}

fn policies(env: &Env) -> std::result::Result<Policies, String> {
    Policies::from_overrides(
        env.var("RATE_LIMITS")
            .ok()
            .map(|v| v.to_string())
            .as_deref(),
    )
}

impl RateLimiter {
    fn load(&self) -> Result<Gcra> {
        if let Some(b) = *self.bucket.borrow() {
            return Ok(b);
        }
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS bucket (id INTEGER PRIMARY KEY CHECK (id = 1), tat_ns INTEGER NOT NULL)",
            None,
        )?;
        #[derive(Deserialize)]
        struct Row {
            tat_ns: i64,
        }
        let rows: Vec<Row> = sql
            .exec("SELECT tat_ns FROM bucket WHERE id = 1", None)?
            .to_array()?;
        let bucket = Gcra {
            tat_ns: rows.first().map_or(0, |r| r.tat_ns.max(0) as u64),
        };
        *self.bucket.borrow_mut() = Some(bucket);
        Ok(bucket)
    }

    fn save(&self, bucket: Gcra) -> Result<()> {
        self.state.storage().sql().exec(
            "INSERT INTO bucket (id, tat_ns) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET tat_ns = excluded.tat_ns",
            vec![(bucket.tat_ns.min(i64::MAX as u64) as i64).into()],
        )?;
        *self.bucket.borrow_mut() = Some(bucket);
        Ok(())
    }

    fn take(&self, take: &Take) -> Result<Taken> {
        let policies = policies(&self.env).map_err(worker::Error::RustError)?;
        let policy = policies
            .all()
            .into_iter()
            .find(|p| p.name == take.policy)
            .copied()
            .ok_or_else(|| worker::Error::RustError(format!("no policy {}", take.policy)))?;
        let now = Date::now().as_millis();
        let mut bucket = self.load()?;
        let cost = if take.up_to {
            let left = rate_limit::check(&policy, bucket.tat_ns, now, 0).remaining;
            take.cost.min(left).max(1)
        } else {
            take.cost
        };
        let decision = bucket.admit(&policy, now, cost);
        if decision.allowed {
            self.save(bucket)?;
        }
        Ok(Taken {
            granted: if decision.allowed { cost } else { 0 },
            remaining: decision.remaining,
            reset_ms: decision.reset_ms,
            retry_after_ms: decision.retry_after_ms,
        })
    }
}

impl DurableObject for RateLimiter {
    fn new(state: State, env: Env) -> Self {
        RateLimiter {
            state,
            env,
            bucket: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.method() == Method::Post && req.path() == "/take" {
            let take: Take = match req.json().await {
                Ok(t) => t,
                Err(e) => return Response::error(format!("bad take: {e}"), 400),
            };
            return Response::from_json(&self.take(&take)?);
        }
        super::health(&self.state, &req).await
    }
}

/// The Worker's side: takes tokens from the bucket of `policy` and
/// `subject`. Any failure to reach or hear from the object is an error the
/// caller decides about (reads fail open, writes closed).
pub async fn take(
    ctx: &Ctx,
    policy: &Policy,
    subject: &str,
    cost: u32,
    up_to: bool,
) -> AppResult<Taken> {
    let fail = |e: worker::Error| AppError::internal(format!("rate limiter: {e}"));
    let namespace = ctx.env.durable_object("RATE_LIMITER").map_err(fail)?;
    let stub = namespace
        .id_from_name(&rate_limit::object_name(policy, subject))
        .and_then(|id| id.get_stub())
        .map_err(fail)?;
    let body = serde_json::to_string(&Take {
        policy: policy.name.to_owned(),
        cost,
        up_to,
    })
    .map_err(AppError::internal)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init("https://rate-limiter/take", &init).map_err(fail)?;
    let started = Date::now().as_millis();
    let result = stub.fetch_with_request(request).await;
    ctx.add_do_ms(Date::now().as_millis().saturating_sub(started));
    let mut response = result.map_err(fail)?;
    if response.status_code() != 200 {
        return Err(AppError::internal(format!(
            "rate limiter answered {}",
            response.status_code()
        )));
    }
    response.json().await.map_err(fail)
}
