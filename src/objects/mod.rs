//! The Durable Object classes (SQLite-backed, see wrangler.toml).
//!
//! `RateLimiter` (one object per policy and subject), `IssueCounter` (one
//! per issue) and `Outbox` (one). Each saves its state in a versioned shape
//! that later code still reads ([`shape`]), and each answers `GET /health`
//! with a storage write and read.

use serde::de::DeserializeOwned;
use worker::{Request, Response, Result, State};

pub mod issue_counter;
pub mod outbox;
pub mod rate_limiter;
pub mod shape;

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

/// A request's JSON body, parsed in Rust from its text. (`Request::json`
/// parses it in JavaScript first, where an integer above 2^53 silently
/// loses digits; nothing the objects are sent may go through that.)
pub(crate) async fn body<T: DeserializeOwned>(req: &mut Request) -> std::result::Result<T, String> {
    let text = req.text().await.map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}
