//! Quiet Riots at the edge: the Worker's entry points. Everything else lives
//! in modules named after what they are; `router` lists every route.

pub mod config;
pub mod context;
pub mod cors;
pub mod db;
pub mod error;
pub mod health;
pub mod issues;
pub mod logging;
pub mod objects;
pub mod pipeline;
pub mod request_id;
pub mod router;

use worker::{event, Context, Env, Request, Response};

pub use objects::{IssueCounter, RateLimiter};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
    logging::init();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    pipeline::handle(req, env).await
}
