//! HTTP plumbing: the request pipeline, the router (every route once), the
//! one error type, CORS, configuration, the per-request context and logging.

pub mod auth;
pub mod config;
pub mod context;
pub mod cors;
pub mod error;
pub mod incoming;
pub mod logging;
pub mod pipeline;
pub mod request_id;
pub mod router;
