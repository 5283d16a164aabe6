//! `GET /__bench/constant`.

use worker::Response;

use crate::http::context::{json_response, Ctx};
use crate::http::error::{AppError, AppResult};

/// The baseline the cached reads are measured against: everything a
/// request pays except data (`GET /__bench/constant`).
pub fn handle(ctx: &Ctx) -> AppResult<Response> {
    if !super::allowed(&ctx.config.environment) {
        return Err(AppError::not_found("no route for /__bench/constant"));
    }
    Ok(json_response(200, &serde_json::json!({ "ok": true }))?)
}
