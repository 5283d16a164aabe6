//! Quiet Riots at the edge: the Worker's entry points. Everything else lives
//! in modules named after what they are; `router` lists every route.

pub mod admin;
#[cfg(feature = "bench")]
pub mod bench;
pub mod bot;
pub mod cache;
pub mod config;
pub mod context;
pub mod cors;
pub mod counter;
pub mod counts;
pub mod cursor;
pub mod db;
pub mod error;
pub mod health;
pub mod identity;
pub mod ids;
pub mod issue_writes;
pub mod issues;
pub mod jobs;
pub mod limits;
pub mod logging;
pub mod me;
pub mod membership;
pub mod objects;
pub mod organisations;
pub mod outbox;
pub mod paging;
pub mod phone;
pub mod phone_link;
pub mod pipeline;
pub mod rate_limit;
pub mod reads;
pub mod request_id;
pub mod router;
pub mod search;
pub mod session;
#[cfg(test)]
pub mod test_db;
pub mod value;
pub mod writes;

use worker::{event, Context, Env, Request, Response, ScheduleContext, ScheduledEvent};

pub use objects::{IssueCounter, Outbox, RateLimiter};

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
    logging::init();
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    pipeline::handle(req, env, ctx).await
}

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    jobs::run::scheduled(&event.cron(), env).await;
}
