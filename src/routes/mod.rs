//! The handlers, one module per resource. Each takes the request's context
//! and its parsed input and answers a response or an `AppError`.

pub mod admin;
pub mod bot;
pub mod health;
pub mod issue_writes;
pub mod live;
pub mod me;
pub mod membership;
pub mod phone_link;
