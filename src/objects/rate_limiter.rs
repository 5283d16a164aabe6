//! The RateLimiter Durable Object: one per (policy, subject), named by
//! [`crate::domain::rate_limit::object_name`]. Its state is one GCRA bucket, kept in
//! the object's SQLite storage (synchronous, so two requests cannot
//! interleave between reading and writing it).
//!
//! `POST /take` with [`Take`] answers [`Taken`]: `cost` tokens or none
//! (exact, for writes), or with `up_to` as many as are left up to `cost` (a
//! block reserved by an isolate for reads).
//!
//! ## Saved state
//!
//! One row of table `limiter`: a [`LimiterState`] as versioned JSON text
//! (see [`super::shape`]), the TAT in nanoseconds as a decimal string.
//! - Version 1 (before versions) was table `bucket` with an INTEGER
//!   `tat_ns`. Read back through JavaScript, a nanosecond time above 2^53
//!   arrived as an inexact float and failed to load, so an object that had
//!   been evicted refused every request. It is read as text in SQL
//!   (`CAST(tat_ns AS TEXT)`, never a JS number), saved as version 2 and
//!   dropped.
//! - Version 2: `{"v": 2, "tat_ns": "<ns>", "recovered": n}`.
//!
//! A state that cannot be read is logged at error level with the bucket's
//! key, counted in `recovered`, and the bucket starts afresh half used
//! ([`rate_limit::half_used`]): the client is let through at once, with
//! half its burst, and never locked out by a state no code can read.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use worker::{durable_object, Date, Env, Method, Request, Response, Result, State};

use super::client;
use super::shape::{self, Shape, Unreadable};
use crate::domain::rate_limit::{self, Gcra, Policies, Policy};
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Take {
    /// A policy name (`reads`, `writes`, ...), looked up in the configured
    /// policies, so the Worker and the object agree on the numbers.
    pub policy: String,
    pub cost: u32,
    #[serde(default)]
    pub up_to: bool,
    /// The bucket's object name, for the object's logs (an object does not
    /// know the name it was reached by).
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    /// Tokens granted (0: refused).
    pub granted: u32,
    pub remaining: u32,
    pub reset_ms: u64,
    pub retry_after_ms: u64,
    /// The bucket's saved state was unreadable and started afresh on this
    /// request.
    #[serde(default)]
    pub recovered: bool,
    /// Unix ms at which this instance of the object was loaded (a change
    /// shows an eviction or a restart).
    #[serde(default)]
    pub loaded_at_ms: u64,
}

/// What the object saves (see the module doc for the versions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimiterState {
    /// The GCRA's theoretical arrival time, unix ns (0: never used).
    #[serde(with = "shape::u64_text")]
    pub tat_ns: u64,
    /// How many times this bucket's saved state was unreadable.
    #[serde(default)]
    pub recovered: u32,
}

impl Shape for LimiterState {
    const VERSION: u32 = 2;
}

/// The bucket as loaded: its state, or why it could not be read.
#[derive(Debug, Clone)]
enum Loaded {
    State(LimiterState),
    Unreadable(Unreadable),
}

/// The bucket a take starts from: the saved one, or, when that was
/// unreadable, one started afresh half used (and `true`).
fn starting_state(loaded: &Loaded, policy: &Policy, now_ms: u64) -> (LimiterState, bool) {
    match loaded {
        Loaded::State(state) => (*state, false),
        Loaded::Unreadable(_) => (
            LimiterState {
                tat_ns: rate_limit::half_used(policy, now_ms),
                recovered: 1,
            },
            true,
        ),
    }
}

#[durable_object]
pub struct RateLimiter {
    state: State,
    env: Env,
    bucket: RefCell<Option<Loaded>>,
    loaded_at_ms: u64,
}

fn policies(env: &Env) -> std::result::Result<Policies, String> {
    Policies::from_overrides(
        env.var("RATE_LIMITS")
            .ok()
            .map(|v| v.to_string())
            .as_deref(),
    )
}

#[derive(Deserialize)]
struct Text {
    text: Option<String>,
}

impl RateLimiter {
    fn load(&self) -> Result<Loaded> {
        if let Some(loaded) = self.bucket.borrow().clone() {
            return Ok(loaded);
        }
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS limiter (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL)",
            None,
        )?;
        let rows: Vec<Text> = sql
            .exec("SELECT state AS text FROM limiter WHERE id = 1", None)?
            .to_array()?;
        let loaded = match rows.into_iter().next().and_then(|r| r.text) {
            Some(text) => shape::decode::<LimiterState>(&text),
            None => match self.load_version_1()? {
                Some(text) => {
                    let loaded = shape::decode::<LimiterState>(&text);
                    if let Ok(state) = loaded {
                        self.save(state)?;
                    }
                    sql.exec("DROP TABLE bucket", None)?;
                    loaded
                }
                None => Ok(LimiterState::default()),
            },
        };
        let loaded = loaded.map_or_else(Loaded::Unreadable, Loaded::State);
        *self.bucket.borrow_mut() = Some(loaded.clone());
        Ok(loaded)
    }

    /// The version 1 state (table `bucket`) as version 1 JSON text, if the
    /// table exists; its TAT read as text by SQLite, never as a JS number.
    fn load_version_1(&self) -> Result<Option<String>> {
        let sql = self.state.storage().sql();
        let tables: Vec<Text> = sql
            .exec(
                "SELECT name AS text FROM sqlite_master WHERE type = 'table' AND name = 'bucket'",
                None,
            )?
            .to_array()?;
        if tables.is_empty() {
            return Ok(None);
        }
        let rows: Vec<Text> = sql
            .exec(
                "SELECT CAST(tat_ns AS TEXT) AS text FROM bucket WHERE id = 1",
                None,
            )?
            .to_array()?;
        Ok(Some(match rows.into_iter().next() {
            Some(Text { text }) => {
                serde_json::json!({ "v": 1, "tat_ns": text.unwrap_or_default() }).to_string()
            }
            None => r#"{"v": 1, "tat_ns": "0"}"#.to_owned(),
        }))
    }

    fn save(&self, state: LimiterState) -> Result<()> {
        let text = shape::encode(&state).map_err(worker::Error::RustError)?;
        self.state.storage().sql().exec(
            "INSERT INTO limiter (id, state) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            vec![text.into()],
        )?;
        *self.bucket.borrow_mut() = Some(Loaded::State(state));
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
        let loaded = self.load()?;
        let (mut state, recovered) = starting_state(&loaded, &policy, now);
        if let Loaded::Unreadable(why) = &loaded {
            tracing::error!(key = %take.key, error = %why, "rate limiter: saved bucket unreadable; starting it afresh, half used");
        }
        let mut bucket = Gcra {
            tat_ns: state.tat_ns,
        };
        let cost = if take.up_to {
            let left = rate_limit::check(&policy, bucket.tat_ns, now, 0).remaining;
            take.cost.min(left).max(1)
        } else {
            take.cost
        };
        let decision = bucket.admit(&policy, now, cost);
        // A recovered bucket is saved even when refused: its fresh state
        // replaces the unreadable one.
        if decision.allowed || recovered {
            state.tat_ns = bucket.tat_ns;
            self.save(state)?;
        }
        Ok(Taken {
            granted: if decision.allowed { cost } else { 0 },
            remaining: decision.remaining,
            reset_ms: decision.reset_ms,
            retry_after_ms: decision.retry_after_ms,
            recovered,
            loaded_at_ms: self.loaded_at_ms,
        })
    }
}

impl DurableObject for RateLimiter {
    fn new(state: State, env: Env) -> Self {
        RateLimiter {
            state,
            env,
            bucket: RefCell::new(None),
            loaded_at_ms: Date::now().as_millis(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.method() == Method::Post && req.path() == "/take" {
            let take: Take = match super::body(&mut req).await {
                Ok(t) => t,
                Err(e) => return Response::error(format!("bad take: {e}"), 400),
            };
            return Response::from_json(&self.take(&take)?);
        }
        super::not_found()
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
    let key = rate_limit::object_name(policy, subject);
    let body = serde_json::to_string(&Take {
        policy: policy.name.to_owned(),
        cost,
        up_to,
        key: key.clone(),
    })
    .map_err(AppError::internal)?;
    let reply = client::call(ctx, "RATE_LIMITER", &key, Method::Post, "/take", Some(body))
        .await
        .map_err(fail)?;
    if reply.status != 200 {
        return Err(AppError::internal(format!(
            "rate limiter answered {}",
            reply.status
        )));
    }
    serde_json::from_str(&reply.text)
        .map_err(|e| AppError::internal(format!("rate limiter: unreadable answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::shape::fixture;
    use super::*;

    fn loaded(name: &str) -> Loaded {
        shape::decode::<LimiterState>(&fixture(name)).map_or_else(Loaded::Unreadable, Loaded::State)
    }

    const POLICY: Policy = Policy {
        name: "writes",
        limit: 30,
        window_ms: 60_000,
    };
    /// The fixtures' TAT, in ms.
    const TAT_MS: u64 = 1_796_122_417_300;

    #[test]
    fn every_saved_shape_loads_exactly() {
        // (file, how far from the saved TAT it may load, in ns: a TAT that
        // SQLite had stored as a REAL kept only a double's precision)
        for (name, off_by) in [
            ("rate_limiter.v1.json", 0),
            ("rate_limiter.v1-stored-as-real.json", 1_000),
            ("rate_limiter.v2.json", 0),
        ] {
            let (state, recovered) = starting_state(&loaded(name), &POLICY, TAT_MS - 10_000);
            assert!(!recovered, "{name}");
            assert!(
                state.tat_ns.abs_diff(TAT_MS * 1_000_000) <= off_by,
                "{name}: {}",
                state.tat_ns
            );
            // The allowance goes on from the saved state: 10 s owed at one
            // token per 2 s is 5 tokens spent of 30.
            let left = rate_limit::check(&POLICY, state.tat_ns, TAT_MS - 10_000, 0).remaining;
            assert_eq!(left, 25, "{name}");
        }
    }

    #[test]
    fn the_current_shape_round_trips_and_holds_no_js_unsafe_number() {
        let state = LimiterState {
            tat_ns: u64::MAX - 1,
            recovered: 2,
        };
        let text = shape::encode(&state).expect("encode");
        assert!(
            text.contains("\"tat_ns\":\"18446744073709551614\""),
            "{text}"
        );
        assert_eq!(shape::decode::<LimiterState>(&text).expect("decode"), state);
        assert_eq!(
            shape::decode::<LimiterState>(&fixture("rate_limiter.v2.json")).expect("v2"),
            LimiterState {
                tat_ns: TAT_MS * 1_000_000,
                recovered: 0
            }
        );
    }

    #[test]
    fn an_unreadable_state_starts_half_used_and_is_counted() {
        let now = TAT_MS;
        let (state, recovered) =
            starting_state(&loaded("rate_limiter.unreadable.json"), &POLICY, now);
        assert!(recovered);
        assert_eq!(state.recovered, 1);
        let left = rate_limit::check(&POLICY, state.tat_ns, now, 0).remaining;
        assert_eq!(
            left, 15,
            "half of 30 left: let through, not a whole new allowance"
        );
    }
}
