//! The Durable Object classes (SQLite-backed, see wrangler.toml).
//!
//! `RateLimiter` (one object per policy and subject) and `IssueCounter` (one
//! per issue) get their behaviour with the write path (rate limits, live
//! counts). Today both answer `GET /health`, a storage write and read that
//! `/health` of the Worker uses to prove the Durable Object round trip.

use worker::{Request, Response, Result, State};

pub mod issue_counter;
pub mod outbox;
pub mod rate_limiter;

pub use issue_counter::IssueCounter;
pub use outbox::Outbox;
pub use rate_limiter::RateLimiter;

/// Writes and reads back a value in the object's storage.
pub(crate) async fn health(state: &State, req: &Request) -> Result<Response> {
    if req.path() != "/health" {
        return Response::error("not found", 404);
    }
    let now = worker::Date::now().as_millis();
    let storage = state.storage();
    storage.put("health:last", now).await?;
    let read: u64 = storage.get("health:last").await?;
    if read == now {
        Response::from_json(&serde_json::json!({ "ok": true }))
    } else {
        Response::error("storage read back a different value", 500)
    }
}
