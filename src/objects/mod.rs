//! The Durable Object classes (SQLite-backed, see wrangler.toml).
//!
//! `RateLimiter` (one object per policy and subject), `IssueCounter` (one
//! per issue; it also holds the issue's live sockets, [`live`]), `Outbox`
//! (one) and `InvalidationLog` (one). Each saves its state in a versioned
//! shape or a table layout that later code still reads ([`shape`]). The
//! Worker calls them all through one [`client`]. The Worker's `/health` proves the Durable Object
//! round trip with a real rate-limiter take.

use serde::de::DeserializeOwned;
use worker::{Request, Response, Result};

pub mod client;
pub mod invalidation_log;
pub mod issue_counter;
pub mod live;
pub mod outbox;
pub mod rate_limiter;
pub mod shape;

pub use invalidation_log::InvalidationLog;
pub use issue_counter::IssueCounter;
pub use outbox::Outbox;
pub use rate_limiter::RateLimiter;

/// The answer to a request no handler of the object takes.
pub(crate) fn not_found() -> Result<Response> {
    Response::error("not found", 404)
}

/// A request's JSON body, parsed in Rust from its text. (`Request::json`
/// parses it in JavaScript first, where an integer above 2^53 silently
/// loses digits; nothing the objects are sent may go through that.)
pub(crate) async fn body<T: DeserializeOwned>(req: &mut Request) -> std::result::Result<T, String> {
    let text = req.text().await.map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}
