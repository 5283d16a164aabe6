//! Quiet Riots at the edge: the Worker's entry points. The layers, from the
//! request down:
//!
//! - `http`: the pipeline every request takes and the router (every route
//!   once);
//! - `routes`: a handler module per resource, bots and webhooks;
//! - `jobs`: the scheduled jobs;
//! - `edge`: the read cache, rate limits, identity, live counts, the outbox;
//! - `objects`: the Durable Objects and their client;
//! - `store`: the primary's client and the SQL of the reads;
//! - `domain`: plain types and rules;
//! - `runtime`: the Workers runtime's `fetch` and timers, called directly.
//!
//! `http` also holds what every layer uses: the error type, the
//! configuration and the request's context. No modules import each other
//! in a circle, `store`, `domain` and `runtime` import nothing above them
//! but the error type, and only the pipeline, the objects (the Outbox
//! replays a kept write) and the benchmarks call into `routes`
//! (`tests/layers.rs` checks).

#[cfg(feature = "bench")]
mod bench;
mod domain;
mod edge;
mod http;
mod jobs;
mod objects;
mod routes;
mod runtime;
mod store;

use worker::{event, web_sys, Context, Env, Response, ScheduleContext, ScheduledEvent};

// What the tests and benchmarks read: the route table, the cron schedule
// and the search SQL.
pub use domain::search;
pub use http::router::ROUTES;
pub use jobs::SCHEDULE;
pub use objects::{InvalidationLog, IssueCounter, Outbox, RateLimiter};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
    http::logging::init();
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<Response> {
    http::pipeline::handle(req, env, ctx).await
}

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    jobs::run::scheduled(&event.cron(), env).await;
}
