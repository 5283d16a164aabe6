//! `GET /api/issues/:id/live`: a WebSocket that pushes the issue's count,
//! per-organisation counts, new posts and how many watch. The socket is
//! held by the issue's IssueCounter object ([`crate::objects::live`]); the
//! protocol is `docs/live.md`.
//!
//! Before the upgrade, in order: the `Origin` must be an allowed origin or
//! the Worker's own (a request without one, a bot or a server, may open)
//! else 403 `origin_refused`; the id must be a UUID (400); the request
//! must ask for a WebSocket, else 426 `upgrade_required`; the `live` rate
//! limit per client IP (429); the issue must exist (404). The caps on open
//! sockets are the object's: it can count them exactly.

use serde_json::Value;
use worker::Response;

use crate::domain::ids::Id;
use crate::domain::live::{self, Seed};
use crate::domain::paging::Page;
use crate::edge::cache;
use crate::edge::reads::Read;
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult, Code};
use crate::http::incoming::Incoming;
use crate::objects::issue_counter;

/// The checks that need nothing but the request (before the rate limit):
/// the `Origin`, the issue's id in the path, then the upgrade.
pub fn guard(ctx: &Ctx, req: &Incoming, id: &str) -> AppResult<()> {
    let header = |name: &str| req.header(name);
    let own = req.own_origin();
    let origin = header("Origin");
    if !live::origin_allowed(origin.as_deref(), &ctx.config.allowed_origins, &own) {
        return Err(AppError::new(
            403,
            Code::OriginRefused,
            "pages of this origin may not open a live socket",
        )
        .with_details(serde_json::json!({ "origin": origin })));
    }
    Id::parse(id, "id")?;
    if !live::is_upgrade(header("Upgrade").as_deref()) {
        let mut e = AppError::new(
            426,
            Code::UpgradeRequired,
            "this route is a WebSocket: send Upgrade: websocket",
        );
        e.details = Some(serde_json::json!({ "upgrade": "websocket" }));
        return Err(e);
    }
    Ok(())
}

/// Opens the socket for `client` (its IP): the issue as the read cache has
/// it (404 for an unknown issue; usually no round trip to the primary), and
/// its newest posts, go to the object as the socket's seed.
pub async fn open(ctx: &Ctx, issue: &Id, client: &str) -> AppResult<Response> {
    let detail = body(
        &cache::serve(ctx, &Read::Issue(issue.clone()))
            .await?
            .entry
            .body,
    )?;
    // The feed only adds post ids to the snapshot: without it the socket
    // still opens.
    let feed = match cache::serve(ctx, &Read::Feed(issue.clone(), Page::parse(&[])?)).await {
        Ok(served) => body(&served.entry.body).ok(),
        Err(e) => {
            tracing::warn!(request_id = %ctx.request_id, code = %e.code, "live: no feed for the snapshot");
            None
        }
    };
    let seed = Seed::from_reads(issue.as_str(), client, &detail, feed.as_ref());
    issue_counter::open_live(ctx, &seed).await
}

fn body(text: &str) -> AppResult<Value> {
    serde_json::from_str(text).map_err(|e| AppError::internal(format!("a cached body: {e}")))
}
